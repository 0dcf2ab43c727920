"""Partitions are seeded, reproducible and put every row in exactly one site."""

from __future__ import annotations

import numpy as np
import pytest

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data import load_site
from fedsafe.common.data.images import digits_arrays
from fedsafe.common.data.partition import partition_dirichlet, partition_iid


def _labels() -> np.ndarray:
    return digits_arrays()[1]


@pytest.mark.parametrize("seed", [0, 1, 7, 42])
@pytest.mark.parametrize("num_sites", [2, 5])
def test_iid_covers_every_row_once_and_repeats_for_a_seed(seed: int, num_sites: int) -> None:
    # Arrange
    n = len(_labels())

    # Act
    first = partition_iid(n, num_sites, seed=seed)
    again = partition_iid(n, num_sites, seed=seed)

    # Assert
    assert np.array_equal(np.sort(np.concatenate(first)), np.arange(n))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("seed", [0, 1, 7, 42])
@pytest.mark.parametrize("alpha", [0.1, 0.5, 10.0])
def test_dirichlet_covers_every_row_once_and_repeats_for_a_seed(seed: int, alpha: float) -> None:
    # Arrange
    y = _labels()

    # Act
    first = partition_dirichlet(y, 5, alpha=alpha, seed=seed)
    again = partition_dirichlet(y, 5, alpha=alpha, seed=seed)

    # Assert
    assert np.array_equal(np.sort(np.concatenate(first)), np.arange(len(y)))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert min(len(p) for p in first) >= 10


def test_dirichlet_differs_between_seeds_and_skews_labels() -> None:
    # Arrange
    y = _labels()

    # Act
    a = partition_dirichlet(y, 5, alpha=0.1, seed=0)
    b = partition_dirichlet(y, 5, alpha=0.1, seed=1)

    # Assert
    assert any(not np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    shares = [np.bincount(y[p], minlength=10) / len(p) for p in a]
    assert max(s.max() for s in shares) > 0.3  # strong skew at alpha 0.1 (uniform is 0.1)


def test_load_site_is_reproducible_for_a_seed() -> None:
    # Arrange
    cfg = DatasetConfig(name="digits", partition="dirichlet", num_sites=3, seed=11)

    # Act
    first = load_site(cfg, 1)
    load_site.cache_clear()
    again = load_site(cfg, 1)

    # Assert
    assert first is not again
    assert np.array_equal(first.x_train, again.x_train)
    assert np.array_equal(first.y_test, again.y_test)
