"""The one-run audit's bound and canaries, checked against independent recomputations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedsafe.common.privacy.audit_bound import (
    audit_guesses,
    epsilon_lower_bound,
    guess_counts,
    p_value,
)
from fedsafe.common.privacy.canaries import canary_scores, draw_canaries


def test_all_guesses_right_without_delta_has_the_closed_form_bound() -> None:
    # P[Bin(r, q) >= r] = q^r = 1 - confidence  =>  epsilon = log(q / (1 - q)).
    q = 0.05 ** (1 / 100)
    expected = math.log(q / (1 - q))
    assert expected == pytest.approx(3.4930, abs=1e-4)
    got = epsilon_lower_bound(100, 100, 100, delta=0.0, confidence=0.95)
    assert got == pytest.approx(expected, abs=1e-5)


def test_p_value_with_delta_matches_a_direct_sum() -> None:
    m, r, v, eps, delta = 1000, 200, 150, 0.8, 1e-4
    q = math.exp(eps) / (1 + math.exp(eps))
    tail = sum(math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(v, r + 1))
    alpha = max(
        sum(math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(v - i, v)) / i
        for i in range(1, v + 1)
    )
    assert p_value(m, r, v, epsilon=eps, delta=delta) == pytest.approx(
        tail + 2 * m * delta * alpha, rel=1e-9
    )


def test_the_bound_is_the_largest_epsilon_rejected() -> None:
    m, r, v, delta = 512, 256, 220, 1e-5
    bound = epsilon_lower_bound(m, r, v, delta=delta, confidence=0.95)
    assert bound > 0.5
    assert p_value(m, r, v, epsilon=bound, delta=delta) <= 0.05
    assert p_value(m, r, v, epsilon=bound + 1e-4, delta=delta) > 0.05


def test_guessing_at_chance_gives_no_bound() -> None:
    assert epsilon_lower_bound(512, 256, 128, delta=1e-5, confidence=0.95) == 0.0
    # a large delta term alone never proves anything
    assert epsilon_lower_bound(512, 100, 100, delta=0.1, confidence=0.95) == 0.0


def test_more_correct_guesses_never_lower_the_bound() -> None:
    bounds = [epsilon_lower_bound(256, 100, v, delta=1e-5, confidence=0.95) for v in range(50, 101)]
    assert bounds == sorted(bounds) and bounds[-1] > 3


def test_guess_counts_are_fixed_by_m_alone() -> None:
    assert guess_counts(512) == (10, 26, 51, 102, 256, 512)
    assert guess_counts(20) == (2, 4, 10, 20)


def test_perfect_scores_give_the_bound_of_the_bonferroni_split() -> None:
    included = np.array([True, False] * 128)
    scores = included.astype(float) + np.linspace(0, 0.1, 256)
    best = audit_guesses(scores, included, delta=0.0, confidence=0.95)
    assert best.correct == best.guesses == 256
    split = 1 - 0.05 / len(guess_counts(256))
    assert best.epsilon_lower_bound == pytest.approx(
        epsilon_lower_bound(256, 256, 256, delta=0.0, confidence=split), abs=1e-9
    )


def test_scores_unrelated_to_membership_rarely_give_a_bound() -> None:
    rng = np.random.default_rng(7)
    found = [
        audit_guesses(rng.normal(size=256), rng.random(256) < 0.5, delta=1e-5).epsilon_lower_bound
        for _ in range(40)
    ]
    assert sum(b > 0 for b in found) <= 6  # at 95% confidence: about 2 of 40 expected


def test_scores_that_are_not_finite_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        audit_guesses(np.array([0.0, np.nan]), np.array([True, False]), delta=0.0)
    with pytest.raises(ValueError, match="1-d"):
        audit_guesses(np.zeros(3), np.zeros(4, dtype=bool), delta=0.0)


def test_canaries_come_from_the_os_not_a_seed() -> None:
    rows = np.random.default_rng(0).normal(2.0, 3.0, size=(200, 31)).astype(np.float32)
    a = draw_canaries(4096, like=rows, n_classes=2, scale=1.0)
    b = draw_canaries(4096, like=rows, n_classes=2, scale=1.0)
    assert not np.array_equal(a.x, b.x) and not np.array_equal(a.included, b.included)
    assert a.x.shape == (4096, 31) and a.x.dtype == np.float32
    assert abs(float(a.x.std()) - float(rows.std())) < 0.1
    assert 0.46 < a.included.mean() < 0.54 and set(np.unique(a.y)) == {0, 1}
    x_in, y_in = a.training_rows()
    assert len(x_in) == len(y_in) == int(a.included.sum())
    # the coins are fair: a binomial test at 1e-6 would fail one draw in a million
    assert stats.binomtest(int(a.included.sum()), 4096).pvalue > 1e-6


def test_canary_score_is_the_labels_margin() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    assert canary_scores(logits, np.array([0, 2])).tolist() == [1.5, -2.0]
