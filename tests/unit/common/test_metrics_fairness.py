"""Fairness gap across sites: best, worst and the gap, ignoring NaN."""

from __future__ import annotations

import math

import pytest

from fedsafe.common.metrics import fairness_gap


def test_gap_is_best_minus_worst_and_nan_sites_are_ignored() -> None:
    # Arrange
    per_site = {
        "bank_west": 0.81,
        "bank_south": 0.70,
        "bank_midwest": math.nan,
        "bank_northeast": 0.75,
    }

    # Act
    gap = fairness_gap(per_site)

    # Assert
    assert gap["best_site"] == "bank_west" and gap["worst_site"] == "bank_south"
    assert gap["gap"] == pytest.approx(0.11)
    assert gap["n_sites"] == 3 and gap["ignored"] == ["bank_midwest"]


def test_no_finite_value_gives_nan_gap_not_an_error() -> None:
    # Arrange / Act
    gap = fairness_gap({"a": math.nan})

    # Assert
    assert gap["best_site"] is None and math.isnan(gap["gap"]) and gap["ignored"] == ["a"]
