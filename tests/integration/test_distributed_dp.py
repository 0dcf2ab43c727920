"""Distributed DP under secure aggregation in a real simulation: the coordinator adopts the mean
of the sites' clipped updates plus noise of exactly the accounted size, never sees an update,
and the client-level epsilon equals an independent accountant's for the releases made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from safetensors.numpy import load_file
from sim_apps import run_apps

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.layout import simulated_site_dir
from fedsafe.common.ledger import Ledger
from fedsafe.common.privacy.distributed_dp import MECHANISM

pytestmark = pytest.mark.slow

SITES = ("cleveland", "hungary", "switzerland", "va_long_beach")
NOISE, CLIP, ROUNDS = 1.0, 0.5, 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path, dict[str, Any]]:
    from fedsafe.client.app import build_client_app
    from fedsafe.server.app import build_server_app

    runs = tmp_path_factory.mktemp("runs")
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "ddp",
            "runs_dir": str(runs),
            "training": {"rounds": ROUNDS},
            "strategy": {"min_sites": 3},
            "federation": {"fresh_budget": True},
            "security": {"secure_aggregation": True},
            "privacy": {
                "client_level": {
                    "mode": "distributed",
                    "target_epsilon": None,
                    "noise_multiplier": NOISE,
                    "clipping_norm": CLIP,
                }
            },
        },
    )
    run_dir = runs / "ddp-run"
    run_apps(
        build_server_app(cfg, run_dir),
        build_client_app(cfg, keep_update_arrays=True),
        sites=len(SITES),
    )
    return cfg, run_dir, json.loads((run_dir / "summary.json").read_text())


def _aggregated(run_dir: Path) -> list[dict[str, Any]]:
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        return [e.payload for e in ledger.entries() if e.kind == "round_aggregated"]


def test_client_level_epsilon_equals_opacus_for_the_releases_made(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    _, run_dir, summary = run
    reference = RDPAccountant()
    reference.history = [(NOISE, 1.0, ROUNDS)]
    c = summary["client_level"]
    assert c["mode"] == "distributed" and c["releases"] == ROUNDS
    assert c["epsilon"] == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-9)
    assert [a["client_level"]["releases"] for a in _aggregated(run_dir)] == [1, 2]


def test_the_adopted_model_is_the_clipped_mean_plus_noise_of_the_accounted_size(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    """Fails if the sites add no noise, or the server decodes the sum wrongly."""
    cfg, run_dir, summary = run
    deltas, received = [], None
    for site in SITES:
        stem = simulated_site_dir(cfg, site, run_dir.name) / "secagg" / f"{run_dir.name}-round-2"
        with np.load(f"{stem}.npz") as trained, np.load(f"{stem}-received.npz") as before:
            received = {k: before[k].astype(np.float64) for k in before.files}
            flat = np.concatenate([(trained[k] - before[k]).ravel() for k in before.files])
        deltas.append(flat * min(1.0, CLIP / np.linalg.norm(flat)))
    assert received is not None
    model = load_file(str(run_dir / summary["model"]["path"]))
    adopted = np.concatenate([model[k].astype(np.float64).ravel() for k in received])
    start = np.concatenate([v.ravel() for v in received.values()])
    residual = adopted - start - np.mean(deltas, axis=0)
    (second,) = [a for a in _aggregated(run_dir) if a["round"] == 2]
    expected = second["client_level"]["noise_std"]
    assert np.std(residual) == pytest.approx(expected, rel=0.1)
    assert abs(np.mean(residual)) < 5 * expected / np.sqrt(residual.size)
    assert expected * len(SITES) >= NOISE * CLIP * np.sqrt(len(SITES) / 3) * 0.999


def test_each_site_attests_the_noise_share_it_added(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    _, run_dir, _ = run
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        signed = [e.payload["signed"] for e in ledger.entries() if e.kind == "attestation"]
    assert len(signed) == len(SITES) * ROUNDS
    for statement in signed:
        level = statement["client_level"]
        assert level["mechanism"] == MECHANISM and level["noise_multiplier"] == NOISE
        assert level["share_variance"] > 1e6 and statement["num_examples"] == 1
