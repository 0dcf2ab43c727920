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


def test_the_gap_has_a_binomial_interval_and_the_mean_is_flambys_metric() -> None:
    per_site = {"a": 0.8, "b": 0.6, "c": 0.7}
    gap = fairness_gap(per_site, {"a": 100, "b": 25, "c": 50})
    half = 1.96 * math.sqrt(0.8 * 0.2 / 100 + 0.6 * 0.4 / 25)
    assert gap["gap_ci95"] == pytest.approx([0.2 - half, 0.2 + half])
    assert gap["mean"] == pytest.approx(0.7)
    # fewer patients at the worst site: a wider interval for the same gap
    assert fairness_gap(per_site, {"a": 100, "b": 10, "c": 50})["gap_ci95"][0] < 0.2 - half


def test_no_counts_no_interval() -> None:
    assert fairness_gap({"a": 0.8, "b": 0.6})["gap_ci95"] is None
