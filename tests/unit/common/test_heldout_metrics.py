"""The numpy held-out metrics give scikit-learn's values (the reference) on random and tied data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from fedsafe.common.heldout_metrics import auroc_binary, auroc_one_vs_rest, balanced_accuracy


@pytest.mark.parametrize("seed", range(25))
def test_binary_auroc_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    score = rng.normal(size=n) + 0.7 * y
    if seed % 3 == 0:  # heavy ties: scores on a coarse grid
        score = np.round(score, 1)
    if seed % 5 == 0:  # every score equal: AUROC one half
        score = np.zeros(n)
    assert auroc_binary(y == 1, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


@pytest.mark.parametrize("seed", range(15))
def test_one_vs_rest_and_balanced_accuracy_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, k = int(rng.integers(10, 300)), int(rng.integers(3, 10))
    y = rng.integers(0, k - (seed % 2), n)  # odd seeds: the last class absent (label skew)
    prob = rng.dirichlet(np.ones(k), size=n)
    pred = rng.integers(0, k, n)  # may predict a class the split lacks
    reference = np.mean([roc_auc_score(y == c, prob[:, c]) for c in np.unique(y)])
    assert auroc_one_vs_rest(y, prob) == pytest.approx(reference, abs=1e-12)
    with warnings.catch_warnings():  # it warns of predicted classes the split lacks
        warnings.simplefilter("ignore")
        expected = balanced_accuracy_score(y, pred)
    assert balanced_accuracy(y, pred) == pytest.approx(expected, abs=1e-12)


def test_a_score_that_is_not_finite_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        auroc_binary(np.array([True, False]), np.array([math.nan, 0.0]))


def test_one_class_has_no_auroc() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auroc_binary(np.array([True, True]), np.array([0.1, 0.2]))
