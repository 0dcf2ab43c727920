"""Secure aggregation keeps the compliance layer: signed roll call, consent per round, attested
masked inputs in a ledger that verifies with independently held keys, a withdrawal excludes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsafe.client.update_cache import load_update
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.layout import simulated_site_dir
from fedsafe.common.ledger import Ledger, verify_ledger
from fedsafe.common.secagg import MASKING_NAME
from fedsafe.simulations.engine import simulate

pytestmark = pytest.mark.slow

SITES = ("site-01", "site-02", "site-03", "site-04", "site-05")
ROUNDS = 3
LEAVER = "site-02"


def _consent(site: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "site": site,
        "purposes": ["cardiology-research"],
        "legal_basis": "GDPR Art. 6(1)(e) + 9(2)(j)",
        "jurisdiction": "EU",
    }
    if site == LEAVER:
        entry["withdraw_at_round"] = 2
    return entry


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path, dict[str, Any]]:
    runs = tmp_path_factory.mktemp("runs")
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "secure",
            "runs_dir": str(runs),
            "dataset": {"partition": "iid", "num_sites": len(SITES)},
            "training": {"rounds": ROUNDS},
            "strategy": {"min_sites": 3},
            "federation": {"fresh_budget": True},
            "compliance": {"consent": [_consent(s) for s in SITES]},
            "security": {"secure_aggregation": True},
        },
    )
    run_dir = runs / "secure-run"
    return cfg, run_dir, simulate(cfg, run_dir)


def _entries(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        return [(e.kind, e.payload) for e in ledger.entries()]


def _site_keys(cfg: ExperimentConfig, run_dir: Path) -> dict[str, bytes]:
    """Each site's key from its own folder (what it enrolled), not from the run folder."""
    return {
        s: (simulated_site_dir(cfg, s, run_dir.name) / "keys" / "signing.pub").read_bytes()
        for s in SITES
    }


def test_the_ledger_verifies_with_the_coordinators_and_the_sites_keys(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    cfg, run_dir, summary = run
    coordinator = Path(cfg.runs_dir) / "coordinator" / "keys" / "server_signing.pub"
    result = verify_ledger(
        run_dir / "ledger.sqlite",
        server_public_pem=coordinator.read_bytes(),
        site_keys=_site_keys(cfg, run_dir),
        witness=run_dir / "ledger.witness.json",
    )
    trained = sum(len(site["rounds_trained"]) for site in summary["sites"].values())
    assert result.attestations_checked == trained == 5 + 4 + 4
    assert result.signed_heads >= ROUNDS
    started = next(p for k, p in _entries(run_dir) if k == "run_started")
    assert started["secure_aggregation"] is True and set(started["participants"]) == set(SITES)


def test_every_round_has_consent_decisions_attestations_and_a_secure_aggregate(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    _, run_dir, summary = run
    entries = _entries(run_dir)
    assert summary["rounds_completed"] == ROUNDS
    for server_round in range(1, ROUNDS + 1):
        decisions = {  # the gate's decision per site (a received withdrawal is its own entry)
            p["site"]: p["decision"]
            for k, p in entries
            if k == "consent_decision" and p["round"] == server_round and "withdrawal" not in p
        }
        assert set(decisions) == set(SITES), server_round
        expected = "granted" if server_round == 1 else "withdrawn"
        assert decisions.pop(LEAVER) == expected
        assert set(decisions.values()) == {"granted"}
        (aggregated,) = [
            p for k, p in entries if k == "round_aggregated" and p["round"] == server_round
        ]
        contributors = [s for s in SITES if server_round == 1 or s != LEAVER]
        assert aggregated["sites"] == contributors
        assert aggregated["protocol"]["secure_aggregation"] == "secagg+"
        signed = [
            p["signed"]
            for k, p in entries
            if k == "attestation" and p["signed"]["round"] == server_round
        ]
        assert sorted(s["site"] for s in signed) == contributors


def test_a_withdrawn_site_is_excluded_and_never_trains_again(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    cfg, run_dir, summary = run
    assert summary["sites"][LEAVER]["rounds_trained"] == [1]
    for site in SITES:
        if site != LEAVER:
            assert summary["sites"][site]["rounds_trained"] == [1, 2, 3], site


def test_attestations_commit_to_the_masked_vector_never_to_the_plain_update(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    """The plain update's digest would let the coordinator confirm a guessed update."""
    cfg, run_dir, _ = run
    signed = [p["signed"] for k, p in _entries(run_dir) if k == "attestation"]
    assert signed and all(s["masking"] == MASKING_NAME for s in signed)
    assert all(len(s["update_digest"]) == 64 for s in signed)
    digests = {s["update_digest"] for s in signed}
    assert len(digests) == len(signed)  # fresh masks every round, at every site
    # The plain update each site trained (its own cache, its own signed statement over it):
    # that digest is what a sealed round would send; here it never reaches the coordinator.
    plain = set()
    for site in SITES:
        folder = simulated_site_dir(cfg, site, run_dir.name)
        for server_round in range(1, ROUNDS + 1):
            cached = load_update(folder, run_dir.name, server_round)
            if cached is not None:
                plain.add(json.loads(cached.attestation["payload"])["update_digest"])
    assert len(plain) == len(SITES)  # the cache keeps each site's latest round
    assert not plain & digests
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        text = json.dumps([e.payload for e in ledger.entries()])
    assert not any(d in text for d in plain)


def test_the_aggregate_moves_the_model_and_stays_finite(
    run: tuple[ExperimentConfig, Path, dict[str, Any]],
) -> None:
    _, run_dir, summary = run
    from safetensors.numpy import load_file

    model = load_file(str(run_dir / summary["model"]["path"]))
    assert all(np.isfinite(v).all() for v in model.values())
    assert summary["global"]["accuracy"] is not None
