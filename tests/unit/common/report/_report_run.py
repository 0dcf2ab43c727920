"""Builds a run folder as the server writes it: summary.json, metrics.jsonl, signed ledger, keys."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fedsafe.common import crypto
from fedsafe.common.ledger import Ledger, canonical_bytes

__all__ = ["SITES", "BuiltRun", "T0", "build_run"]

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SITES = ("cleveland", "hungary", "switzerland")
DELTA = 1e-5
NOISE = {"cleveland": 1.39, "hungary": 1.39, "switzerland": 1.75}
RATE = {"cleveland": 0.125, "hungary": 0.125, "switzerland": 0.25}
STEPS = {"cleveland": 8, "hungary": 8, "switzerland": 4}
# Cumulative epsilon after each round a site trained (what a site reports and attests).
EPSILON = {
    "cleveland": {1: 2.0226, 2: 2.5484, 3: 2.9711},
    "hungary": {1: 2.0226, 3: 2.5484},
    "switzerland": {1: 1.9277},
}
CAPS = {"cleveland": 3.5, "hungary": 10.0}  # cleveland ends at 85% of its cap
ACCURACY = {
    "cleveland": [0.51, 0.56, 0.59],
    "hungary": [0.37, 0.37, 0.38],
    "switzerland": [0.92, 0.90, 0.84],
}
REFUSAL = "site hungary: site refused round 2: privacy budget exceeded"
PURPOSE = "cardiology-risk-model"


@dataclass
class BuiltRun:
    """The folder and what was written into it, for tests to compare against."""

    path: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    server_keys: tuple[bytes, bytes]
    site_keys: dict[str, tuple[bytes, bytes]]
    auditor_key: Path  # the server's public key as the auditor holds it, outside the folder


SEEDED: set[str] = set()  # sites whose attestations say the test-only seeded noise was used


def _attest(private: bytes, site: str, rnd: int, *, refused: bool) -> dict[str, Any]:
    # A refused round attests the spend so far: the epsilon after the last round it trained.
    epsilon = EPSILON[site][max(k for k in EPSILON[site] if k <= rnd)]
    signed = {
        "site": site,
        "round": rnd,
        "epsilon": epsilon,
        "delta": DELTA,
        "steps": 0 if refused else STEPS[site],
        "update_digest": None if refused else hashlib.sha256(f"{site}{rnd}".encode()).hexdigest(),
        "refused": refused,
        "randomness": "seeded-test-only" if site in SEEDED else "os-csprng",
        "release": "rounded",
    }
    return {
        "site": site,
        "signature": crypto.sign(private, canonical_bytes(signed)).hex(),
        "signed": signed,
    }


def _metrics() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for rnd in (1, 2, 3):
        for site in SITES:
            if rnd in EPSILON[site]:
                rows.append(
                    {
                        "delta": DELTA,
                        "epsilon": EPSILON[site][rnd],
                        "loss": 0.68,
                        "noise-multiplier": NOISE[site],
                        "num-examples": 200.0,
                        "phase": "train",
                        "round": rnd,
                        "sample-rate": RATE[site],
                        "site": site,
                        "steps": float(STEPS[site]),
                    }
                )
        if rnd == 2:
            rows.append(
                {"code": 1, "phase": "refused", "reason": REFUSAL, "round": 2, "site": "hungary"}
            )
        for site in SITES:
            acc = ACCURACY[site][rnd - 1]
            rows.append(
                {
                    "accuracy": acc,
                    "auroc": acc + 0.1,
                    "balanced-accuracy": acc - 0.02,
                    "loss": 1 - acc,
                    "num-examples": 50.0,
                    "phase": "evaluate",
                    "round": rnd,
                    "site": site,
                }
            )
        mean = sum(ACCURACY[s][rnd - 1] for s in SITES) / len(SITES)
        rows.append(
            {
                "accuracy": mean,
                "auroc": mean + 0.1,
                "balanced-accuracy": mean - 0.02,
                "loss": 1 - mean,
                "phase": "global",
                "round": rnd,
                "seconds": 3.0,
            }
        )
    return rows


def _summary(run_dir: Path, model_sha: str) -> dict[str, Any]:
    sites = {}
    for site in SITES:
        acc = ACCURACY[site][-1]
        rounds = sorted(EPSILON[site])
        sites[site] = {
            "accuracy": acc,
            "auroc": acc + 0.1,
            "balanced_accuracy": acc - 0.02,
            "loss": 1 - acc,
            "num_test": 50.0,
            "num_train": 200.0,
            "epsilon": EPSILON[site][rounds[-1]],
            "delta": DELTA,
            "steps": STEPS[site] * len(rounds),
            "noise_multiplier": NOISE[site],
            "sample_rate": RATE[site],
            "rounds_trained": rounds,
            "refusals": [{"round": 2, "code": 1, "reason": REFUSAL}] if site == "hungary" else [],
        }
        if site in CAPS:
            sites[site]["cap"] = CAPS[site]
    final = {s: ACCURACY[s][-1] for s in SITES}
    return {
        "run": "heart",
        "run_dir": str(run_dir),
        "dataset": "heart_disease",
        "strategy": "fedavg",
        "privacy": {
            "enabled": True,
            "target_epsilon": 3.0,
            "noise_multiplier": None,
            "delta": DELTA,
            "max_grad_norm": 1.0,
            "accountant": "rdp",
        },
        "rounds_planned": 3,
        "rounds_completed": 3,
        "stopped_early": None,
        "sites": sites,
        "global": {"accuracy": 0.6, "auroc": 0.7, "balanced-accuracy": 0.58, "loss": 0.4},
        "fairness": {
            "metric": "accuracy",
            "best_site": "switzerland",
            "worst_site": "hungary",
            "gap": final["switzerland"] - final["hungary"],
            "gap_ci95": [0.01, 0.42],
            "mean": 0.7,
        },
        "model": {"path": "model.pt", "sha256": model_sha},
        "wall_time_s": 12.0,
        "seconds_per_round": 3.0,
        "config": {"name": "heart", "training": {"decision_rule": "balanced"}},
    }


def build_run(run_dir: Path, *, ledger: bool = True) -> BuiltRun:
    """Three hospitals, three rounds: a site near its cap, a refusal, a withdrawal, a dropout."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model = b"model-bytes"
    (run_dir / "model.pt").write_bytes(model)
    model_sha = hashlib.sha256(model).hexdigest()
    summary = _summary(run_dir, model_sha)
    metrics = _metrics()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in metrics), encoding="utf-8"
    )
    (run_dir / "config.json").write_text('{"name": "heart"}\n', encoding="utf-8")
    server = crypto.generate_signing_key()
    sites = {s: crypto.generate_signing_key() for s in SITES}
    if ledger:
        _write_ledger(run_dir, server, sites, model_sha)
    auditor = run_dir.parent / f"{run_dir.name}-auditor" / "server_signing.pub"
    auditor.parent.mkdir(parents=True, exist_ok=True)
    auditor.write_bytes(server[1])
    return BuiltRun(run_dir, summary, metrics, server, sites, auditor)


def _write_ledger(
    run_dir: Path,
    server: tuple[bytes, bytes],
    sites: dict[str, tuple[bytes, bytes]],
    model_sha: str,
) -> None:
    (run_dir / "keys" / "sites").mkdir(parents=True)
    (run_dir / "keys" / "server_signing.pub").write_bytes(server[1])
    for site, (_, public) in sites.items():
        (run_dir / "keys" / "sites" / f"{site}.pub").write_bytes(public)
    grant = "consent c-{0} covers dataset 'heart_disease' for purpose '" + PURPOSE + "' ({1})"
    with Ledger.open(run_dir / "ledger.sqlite") as led:
        led.append(
            "run_started",
            {
                "run_id": "heart-20250301",
                "purpose": PURPOSE,
                "code_version": "abc1234",
                "config_hash": hashlib.sha256(b'{"name": "heart"}').hexdigest(),
                "strategy": "fedavg",
                "secure_aggregation": False,
                "privacy": {
                    "accountant": "rdp",
                    "target_epsilon": 3.0,
                    "delta": DELTA,
                    "max_grad_norm": 1.0,
                },
            },
            at_time=T0,
        )
        for rnd in (1, 2, 3):
            at = T0 + timedelta(minutes=rnd)
            items: list[tuple[str, dict[str, Any]]] = [
                (
                    "consent_decision",
                    {
                        "site": "cleveland",
                        "round": rnd,
                        "decision": "granted",
                        "reason": grant.format(1, "GDPR Art. 9(2)(j); EU; open-ended"),
                        "legal_basis": "GDPR Art. 9(2)(j) research",
                    },
                ),
                (
                    "consent_decision",
                    {
                        "site": "hungary",
                        "round": rnd,
                        "decision": "granted",
                        "reason": grant.format(2, "GDPR Art. 6(1)(e); HU; open-ended"),
                    },
                ),
            ]
            if rnd == 2:
                items.append(
                    (
                        "consent_decision",
                        {
                            "site": "switzerland",
                            "round": 2,
                            "decision": "withdrawn",
                            "reason": "consent c-3 withdrawn at 2025-03-01T09:01:30.000000Z",
                        },
                    )
                )
            else:
                items.append(
                    (
                        "consent_decision",
                        {
                            "site": "switzerland",
                            "round": rnd,
                            "decision": "granted",
                            "reason": grant.format(3, "FADP Art. 31; CH; open-ended"),
                        },
                    )
                )
            for site in SITES:
                if rnd in EPSILON[site]:
                    items.append(("attestation", _attest(sites[site][0], site, rnd, refused=False)))
            if rnd == 2:
                items.append(
                    ("attestation", _attest(sites["hungary"][0], "hungary", 2, refused=True))
                )
            if rnd == 3:
                items.append(
                    (
                        "dropout",
                        {
                            "site": "switzerland",
                            "round": 3,
                            "reason": "no reply within round_timeout_s",
                        },
                    )
                )
            trained = sorted(s for s in SITES if rnd in EPSILON[s])
            items.append(
                (
                    "round_aggregated",
                    {
                        "round": rnd,
                        "sites": trained,
                        "aggregate_digest": hashlib.sha256(f"agg{rnd}".encode()).hexdigest(),
                    },
                )
            )
            led.append_many(items, at_time=at)
        led.append(
            "run_finished",
            {"run_id": "heart-20250301", "rounds_completed": 3, "final_model_sha256": model_sha},
            at_time=T0 + timedelta(minutes=5),
        )
        led.sign_head(
            server[0],
            public_pem=server[1],
            witness_path=run_dir / "ledger.witness.json",
            at_time=T0 + timedelta(minutes=6),
        )


def build_seeded_run(run_dir: Path, site: str) -> BuiltRun:
    """The same run, except that `site` signed that its noise came from the test-only seed."""
    SEEDED.add(site)
    try:
        return build_run(run_dir)
    finally:
        SEEDED.discard(site)
