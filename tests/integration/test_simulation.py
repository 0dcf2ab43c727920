"""A real Flower simulation of the four hospitals: cumulative epsilon, falling loss, honest summary."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from common.config import ExperimentConfig, from_dict
from common.privacy import epsilon_for
from simulations.engine import format_table, simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path, dict[str, Any]]:
    runs = tmp_path_factory.mktemp("runs")
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "it",
            "runs_dir": str(runs),
            "training": {"rounds": 3},
            "privacy": {"target_epsilon": 8.0},
        },
    )
    run_dir = runs / "it-run"
    return cfg, run_dir, simulate(cfg, run_dir)


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_every_site_trains_every_round(run: tuple[ExperimentConfig, Path, dict[str, Any]]) -> None:
    _, _, summary = run
    assert set(summary["sites"]) == {"cleveland", "hungary", "va_long_beach", "switzerland"}
    for site in summary["sites"].values():
        assert site["rounds_trained"] == [1, 2, 3] and site["refusals"] == []


def test_epsilon_is_cumulative_and_equals_the_accountant_on_real_steps(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    cfg, run_dir, summary = run
    per_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in _lines(run_dir):
        if line["phase"] == "train":
            per_site[line["site"]].append(line)
    for site, rounds in per_site.items():
        eps = [r["epsilon"] for r in rounds]
        assert all(a < b for a, b in zip(eps, eps[1:])), site
        history = [(r["noise-multiplier"], r["sample-rate"], int(r["steps"])) for r in rounds]
        assert eps[-1] == pytest.approx(epsilon_for(history, delta=cfg.privacy.delta))
        assert eps[-1] <= cfg.privacy.target_epsilon
        assert summary["sites"][site]["epsilon"] == pytest.approx(eps[-1])
        assert summary["sites"][site]["steps"] == sum(int(r["steps"]) for r in rounds)


def test_held_out_loss_falls(run: tuple[ExperimentConfig, Path, dict[str, Any]]) -> None:
    _, run_dir, _ = run
    losses = [line["loss"] for line in _lines(run_dir) if line["phase"] == "global"]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_summary_model_hash_is_the_saved_file(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    _, run_dir, summary = run
    model = run_dir / summary["model"]["path"]
    assert hashlib.sha256(model.read_bytes()).hexdigest() == summary["model"]["sha256"]
    assert (run_dir / "config.json").exists()
    assert summary["fairness"]["gap"] >= 0


def test_table_lists_each_hospital_with_its_epsilon(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    _, _, summary = run
    table = format_table(summary)
    for name, site in summary["sites"].items():
        assert name in table and f"{site['epsilon']:.3f}" in table


def test_sealed_updates_reach_the_same_model_as_plain_fedavg(
    run: tuple[ExperimentConfig, Path, dict[str, Any]], tmp_path: Path
) -> None:
    import torch

    from common.config import to_dict

    cfg, run_dir, _ = run
    assert cfg.security.sealed_updates
    data = to_dict(cfg) | {"runs_dir": str(tmp_path), "security": {"sealed_updates": False}}
    plain_cfg = from_dict(ExperimentConfig, data)
    plain = simulate(plain_cfg, tmp_path / "plain")
    sealed_model = load_file(run_dir / "model.safetensors")  # no code runs on load
    plain_model = load_file(tmp_path / "plain" / plain["model"]["path"])
    for name, value in sealed_model.items():
        assert torch.allclose(value, plain_model[name], atol=1e-6), name
