"""A real simulation of the four hospitals with 8-bit updates: every site trains, it finishes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.simulations.engine import simulate

pytestmark = pytest.mark.slow


def test_a_short_run_with_8_bit_updates_trains_and_finishes(tmp_path: Path) -> None:
    # Arrange
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "compact",
            "runs_dir": str(tmp_path),
            "training": {"rounds": 2, "update_bits": 8},
            "privacy": {"target_epsilon": 8.0},
            "federation": {"fresh_budget": True},
        },
    )

    # Act
    summary = simulate(cfg, tmp_path / "compact-run")

    # Assert: the coordinator opened, checked and dequantised every site's codes each round
    assert summary["config"]["training"]["update_bits"] == 8
    assert len(summary["sites"]) == 4
    for name, site in summary["sites"].items():
        assert site["rounds_trained"] == [1, 2] and site["refusals"] == [], name
        assert site["private"] and site["randomness"] == "os-csprng"
    accuracy = summary["global"]["accuracy"]
    assert math.isfinite(accuracy) and accuracy > 0.5
