"""A real SecAgg+ simulation of four hospitals with DP-SGD through the one coordinator loop:
secure sum == FedAvg (with a dropout), and the ledger holds what a sealed run's holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.torch import load_file
from sim_apps import run_apps

from fedsafe.common.attestation import ATTESTATION, arrays_digest, open_statement
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.crypto.pki import load_signing_public_key
from fedsafe.common.layout import simulated_site_dir
from fedsafe.common.ledger import Ledger
from fedsafe.common.secagg import SecAggSizing, aggregate_error_bound

pytestmark = pytest.mark.slow

SITES = ("cleveland", "hungary", "switzerland", "va_long_beach")
ROUNDS = 2
# Switzerland's cap lets it train round 1 and makes it refuse round 2 *after* the SecAgg+
# key exchange: a real dropout in the masked stage, which the server must unmask around.
CAP = 7.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path, dict[str, Any]]:
    from fedsafe.client.app import build_client_app
    from fedsafe.server.app import build_server_app

    runs = tmp_path_factory.mktemp("runs")
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "sa",
            "runs_dir": str(runs),
            "training": {"rounds": ROUNDS},
            "privacy": {"target_epsilon": 8.0},
            "federation": {"caps": {"switzerland": CAP}},
            "strategy": {"min_sites": 3},
            "security": {"secure_aggregation": True},
        },
    )
    run_dir = runs / "sa-run"
    run_apps(
        build_server_app(cfg, run_dir),
        build_client_app(cfg, keep_update_arrays=True),
        sites=len(SITES),
    )
    return cfg, run_dir, json.loads((run_dir / "summary.json").read_text())


def _kept(cfg: ExperimentConfig, run_dir: Path, site: str, server_round: int) -> Path:
    return (
        simulated_site_dir(cfg, site, run_dir.name)
        / "secagg"
        / f"{run_dir.name}-round-{server_round}"
    )


def _fedavg(
    cfg: ExperimentConfig, run_dir: Path, server_round: int
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Plain FedAvg over the unmasked updates the sites kept: what the secure sum must hit."""
    total: dict[str, np.ndarray] = {}
    counts = []
    for site in SITES:
        stem = _kept(cfg, run_dir, site, server_round)
        if not stem.with_suffix(".json").exists():
            continue
        n = json.loads(stem.with_suffix(".json").read_text())["num_examples"]
        counts.append(n)
        with np.load(f"{stem}.npz") as update:
            for k in update.files:
                total[k] = total.get(k, 0.0) + n * update[k].astype(np.float64)
    return {k: v / sum(counts) for k, v in total.items()}, counts


def _entries(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        return [e.payload for e in ledger.entries() if e.kind == kind]


def _sizing(run_dir: Path, server_round: int) -> SecAggSizing:
    (entry,) = [p for p in _entries(run_dir, "round_aggregated") if p["round"] == server_round]
    s = entry["protocol"]
    assert s["secure_aggregation"] == "secagg+"
    return SecAggSizing(**{k: s[k] for k in SecAggSizing.__slots__})


def test_every_site_trains_round_one_and_the_capped_one_drops_out_of_round_two(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    _, run_dir, summary = run
    assert summary["rounds_completed"] == ROUNDS and summary["secure_aggregation"] is True
    assert _sizing(run_dir, 1).threshold == 3 and _sizing(run_dir, 2).threshold == 3
    for site in SITES:
        expected = [1] if site == "switzerland" else [1, 2]
        assert summary["sites"][site]["rounds_trained"] == expected, site
    refusal = summary["sites"]["switzerland"]["refusals"][0]
    assert refusal["round"] == 2 and "cap" in refusal["reason"]
    assert summary["sites"]["switzerland"]["epsilon"] <= CAP


def test_round_one_secure_aggregate_equals_fedavg_of_all_sites(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    cfg, run_dir, summary = run
    expected, counts = _fedavg(cfg, run_dir, 1)
    assert len(counts) == 4
    bound = aggregate_error_bound(_sizing(run_dir, 1), counts)
    with np.load(f"{_kept(cfg, run_dir, 'cleveland', 2)}-received.npz") as received:
        worst = max(float(np.abs(received[k] - expected[k]).max()) for k in expected)
    assert worst <= bound
    assert bound < 1e-6  # the quantisation step is far below anything DP noise leaves


def test_round_two_secure_aggregate_equals_fedavg_of_the_survivors_despite_the_dropout(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    cfg, run_dir, summary = run
    expected, counts = _fedavg(cfg, run_dir, 2)
    assert len(counts) == 3
    bound = aggregate_error_bound(_sizing(run_dir, 2), counts)
    model = load_file(run_dir / summary["model"]["path"])
    for k, want in expected.items():
        got = model[k].numpy().astype(np.float64)
        assert np.all(np.abs(got - want) <= bound + np.abs(want) * 2.0**-23), (
            k
        )  # the model file is float32


def test_sites_keep_a_signed_statement_of_the_unmasked_update(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    cfg, run_dir, summary = run
    folder = simulated_site_dir(cfg, "hungary", run_dir.name)
    record = json.loads(_kept(cfg, run_dir, "hungary", 2).with_suffix(".json").read_text())
    statement = {
        **record["attestation"],
        "signature": bytes.fromhex(record["attestation"]["signature"]),
    }
    payload = open_statement(
        ATTESTATION, statement, load_signing_public_key(folder / "keys" / "signing.pub")
    )
    with np.load(f"{_kept(cfg, run_dir, 'hungary', 2)}.npz") as update:
        assert payload["update_digest"] == arrays_digest({k: update[k] for k in update.files})
    assert payload["epsilon"] == pytest.approx(summary["sites"]["hungary"]["epsilon"])


def test_run_folder_has_the_plain_mode_shape(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    _, run_dir, summary = run
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {line["phase"] for line in lines} == {"train", "evaluate", "refused", "global"}
    assert [line["round"] for line in lines if line["phase"] == "global"] == [1, 2]
    assert all(line["epsilon"] > 0 for line in lines if line["phase"] == "train")
    assert summary["global"]["accuracy"] is not None and summary["seconds_per_round"] > 0
