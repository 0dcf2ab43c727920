"""A real Flower simulation of four hospitals: cumulative epsilon, falling loss, honest summary."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.privacy import epsilon_for
from fedsafe.simulations.engine import format_table, simulate

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
        # What each site signed: its OS randomness and its release policy (simulation: exact).
        assert site["private"] and site["randomness"] == "os-csprng"
        assert site["release_policy"] == "exact"


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
        assert all(a < b for a, b in itertools.pairwise(eps)), site
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same data, same (test-only, seeded) noise: sealing changes nothing but the transport."""
    import torch

    from fedsafe.common.privacy.randomness import TEST_SEED_ENV

    monkeypatch.setenv(TEST_SEED_ENV, "11")  # the sites' own switch; Ray's actors inherit it
    models = {}
    for sealed in (True, False):
        runs = tmp_path / f"sealed-{sealed}"
        cfg = from_dict(
            ExperimentConfig,
            {
                "name": "it",
                "runs_dir": str(runs),
                "training": {"rounds": 2},
                "privacy": {"target_epsilon": 8.0},
                "security": {"sealed_updates": sealed},
            },
        )
        summary = simulate(cfg, runs / "it-run")
        models[sealed] = load_file(runs / "it-run" / summary["model"]["path"])  # no code runs
        # The sites said, in their signed attestations, that this noise was not private.
        assert {s["randomness"] for s in summary["sites"].values()} == {"seeded-test-only"}
        assert not any(s["private"] for s in summary["sites"].values())
    for name, value in models[True].items():
        assert torch.allclose(value, models[False][name], atol=1e-6), name
