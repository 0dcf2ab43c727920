"""A hostile site under secure aggregation, in a real simulation: what it sends beside or
instead of its honest masked vector is refused at the boundary, named, and unmasked around.

Switzerland runs the real site app and then tampers with its SecAgg+ reply: in round 1 it
flips one bit of its masked vector after signing (the commitment no longer matches); in round
2 it sends a vector of the wrong shape and signs a statement over exactly those bytes (its
signature is valid, the vector is not). Each time the other three sites' sum is adopted. In
round 3 it raises the weight factor inside its masked vector and signs that: no single vector
shows it, but the unmasked weight total differs from the signed weights and the round's sum is
not adopted.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from safetensors.torch import load_file
from sim_apps import run_apps

from fedsafe.client.site import site_runtime
from fedsafe.common import keys
from fedsafe.common.attestation import sign_statement
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.layout import simulated_site_dir
from fedsafe.common.ledger import Ledger
from fedsafe.common.secagg import SecAggSizing, aggregate_error_bound, masked_digest

pytestmark = pytest.mark.slow

SITES = ("cleveland", "hungary", "switzerland", "va_long_beach")
HOSTILE = "switzerland"


def _tamper(cfg: ExperimentConfig, reply: Message, context: Context) -> Message:
    configs = reply.content.config_records[RECORD_KEY_CONFIGS]
    vector = list(configs[Key.MASKED_PARAMETERS])  # type: ignore[arg-type]
    statement = json.loads(str(reply.content.config_records[keys.ATTESTATION]["payload"]))
    if statement["round"] == 3:  # a weight it did not sign: +1 weight unit in the factor
        state = SecAggPlusState(**dict(context.state.config_records[RECORD_KEY_STATE]))
        factor = bytes_to_ndarray(vector[0])  # type: ignore[arg-type]
        vector[0] = ndarray_to_bytes((factor + state.target_range) % state.mod_range)
        statement["update_digest"] = masked_digest(vector)  # type: ignore[arg-type]
        key = site_runtime(cfg, context, statement["run_id"]).signing_key
        reply.content.config_records[keys.ATTESTATION] = ConfigRecord(
            sign_statement(statement, key)
        )
    elif statement["round"] == 1:  # one flipped bit (of a value, still in range) after signing
        blob = bytearray(vector[-1])  # type: ignore[arg-type]
        data_start = len(blob) - np.load(io.BytesIO(bytes(blob)), allow_pickle=False).nbytes
        blob[data_start] ^= 1
        vector[-1] = bytes(blob)
    else:  # a vector of the wrong shape, under a valid signature over exactly these bytes
        vector = vector[:-1] + [ndarray_to_bytes(np.zeros(3, dtype=np.int64))]
        statement["update_digest"] = masked_digest(vector)  # type: ignore[arg-type]
        key = site_runtime(cfg, context, statement["run_id"]).signing_key
        reply.content.config_records[keys.ATTESTATION] = ConfigRecord(
            sign_statement(statement, key)
        )
    configs[Key.MASKED_PARAMETERS] = vector
    return reply


def _hostile_app(cfg: ExperimentConfig) -> ClientApp:
    from fedsafe.client.app import build_client_app

    honest = build_client_app(cfg, keep_update_arrays=True)
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        stage = configs.get(Key.STAGE) if configs is not None else None  # Flower's mod pops it
        reply = honest(msg, context)
        if stage == Stage.COLLECT_MASKED_VECTORS and not reply.has_error():
            run_id = json.loads(str(reply.content.config_records[keys.ATTESTATION]["payload"]))
            hostile = site_runtime(cfg, context, run_id["run_id"]).name == HOSTILE
        else:
            hostile = False
        if hostile and stage == Stage.COLLECT_MASKED_VECTORS and not reply.has_error():
            return _tamper(cfg, reply, context)
        return reply

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return honest(msg, context)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return honest(msg, context)

    return app


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path, dict[str, Any]]:
    from fedsafe.server.app import build_server_app

    runs = tmp_path_factory.mktemp("runs")
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "hostile",
            "runs_dir": str(runs),
            "training": {"rounds": 3},
            "strategy": {"min_sites": 3},
            "federation": {"fresh_budget": True},
            "security": {"secure_aggregation": True},
        },
    )
    run_dir = runs / "hostile-run"
    run_apps(build_server_app(cfg, run_dir), _hostile_app(cfg), sites=len(SITES))
    return cfg, run_dir, json.loads((run_dir / "summary.json").read_text())


def _entries(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        return [e.payload for e in ledger.entries() if e.kind == kind]


@pytest.mark.parametrize(
    ("server_round", "reason"),
    [
        (1, "attested update_digest"),
        (2, "is int64 (3,), expected integers (2,)"),
    ],
    ids=["flipped-bit", "wrong-shape"],
)
def test_the_tampered_vector_is_refused_naming_the_site_and_the_round_goes_on(
    run: tuple[ExperimentConfig, Path, dict[str, Any]], server_round: int, reason: str
) -> None:
    _, run_dir, summary = run
    errors = [e for e in _entries(run_dir, "error") if e.get("round") == server_round]
    assert any(
        e["component"] == "secure_aggregation"
        and e["message"].startswith("site switzerland: secure aggregation collect_masked_vectors")
        and reason in e["message"]
        for e in errors
    ), errors
    (aggregated,) = [p for p in _entries(run_dir, "round_aggregated") if p["round"] == server_round]
    assert aggregated["sites"] == ["cleveland", "hungary", "va_long_beach"]
    assert "switzerland" not in {a["site"] for a in summary["attestations"]}


def test_a_weight_it_did_not_sign_keeps_the_rounds_sum_out_of_the_model(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    """Round 3: a valid signature over a masked vector whose weight factor was raised."""
    _, run_dir, summary = run
    errors = [e["message"] for e in _entries(run_dir, "error") if e.get("round") == 3]
    assert any("a site masked with a weight it did not sign" in m for m in errors), errors
    assert [p["round"] for p in _entries(run_dir, "round_aggregated")] == [1, 2]
    assert summary["stopped_early"]["round"] == 3


def test_the_adopted_model_is_fedavg_of_the_honest_sites(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    cfg, run_dir, summary = run
    honest = ("cleveland", "hungary", "va_long_beach")
    total: dict[str, np.ndarray] = {}
    counts = []
    for site in honest:
        stem = simulated_site_dir(cfg, site, run_dir.name) / "secagg" / f"{run_dir.name}-round-2"
        n = json.loads(stem.with_suffix(".json").read_text())["num_examples"]
        counts.append(n)
        with np.load(f"{stem}.npz") as update:
            for k in update.files:
                total[k] = total.get(k, 0.0) + n * update[k].astype(np.float64)
    (aggregated,) = [p for p in _entries(run_dir, "round_aggregated") if p["round"] == 2]
    sizing = SecAggSizing(**{k: aggregated["protocol"][k] for k in SecAggSizing.__slots__})
    bound = aggregate_error_bound(sizing, counts)
    model = load_file(run_dir / summary["model"]["path"])
    for k, value in total.items():
        want = value / sum(counts)
        got = model[k].numpy().astype(np.float64)
        assert np.all(np.abs(got - want) <= bound + np.abs(want) * 2.0**-23), k
