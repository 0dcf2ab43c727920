"""Two real 2-round simulations: four regional banks (Lending Club), digits imaging (a CNN)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fedsafe.simulations.engine import simulate
from fedsafe.simulations.run import config_from_hydra

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *overrides: str) -> dict:  # type: ignore[type-arg]
    with initialize_config_module(config_module="fedsafe.conf", version_base="1.3"):
        cfg = config_from_hydra(
            compose(
                config_name="config",
                overrides=[
                    *overrides,
                    f"runs_dir={tmp_path}",
                    "training.rounds=2",
                    "federation.fresh_budget=true",
                ],
            )
        )
    return simulate(cfg, tmp_path / "run")


def test_four_regional_banks_train_with_dp_and_report_imbalance_metrics(tmp_path: Path) -> None:
    summary = _run(tmp_path, "federation=banks")
    assert set(summary["sites"]) == {"bank_northeast", "bank_midwest", "bank_south", "bank_west"}
    for site in summary["sites"].values():
        assert site["rounds_trained"] == [1, 2] and 0 < site["epsilon"] <= 3.0
        assert 0 <= site["balanced_accuracy"] <= 1 and 0 <= site["auroc"] <= 1
    assert summary["fairness"]["gap"] >= 0
    assert summary["purpose"] == "credit-risk-modelling"


def test_an_imaging_study_trains_the_cnn_on_label_skewed_sites(tmp_path: Path) -> None:
    summary = _run(tmp_path, "federation=imaging_digits")
    assert summary["config"]["model"]["name"] == "cnn"
    assert len(summary["sites"]) == 4
    assert all(s["rounds_trained"] == [1, 2] for s in summary["sites"].values())
    assert summary["global"]["accuracy"] > 0.1  # better than chance over 10 classes
