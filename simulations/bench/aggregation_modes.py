"""Aggregation modes side by side: a secure-aggregation round against a sealed round at 10
sites (same run, interleaved), and the hospitals' utility under each kind of DP."""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from fedsafe.simulations.bench.rows import Row
from fedsafe.simulations.bench.spawn import run_worker

__all__ = ["run", "round_config", "utility_configs"]

TARGET_RATIO = 2.0  # secure vs sealed round (Flower's own SecAgg+ measured 3.8-4.0x here)


def round_config(runs_dir: Path, *, secure: bool, rounds: int) -> dict[str, Any]:
    """10 sites of the pooled heart data, DP on, fresh budgets; only the mode differs."""
    return {
        "name": "secagg" if secure else "sealed",
        "runs_dir": str(runs_dir),
        "dataset": {"name": "heart_disease", "partition": "iid", "num_sites": 10},
        "training": {"rounds": rounds},
        "strategy": {"min_sites": 3},
        "federation": {"name": "open", "fresh_budget": True},
        "compliance": {"purpose": "research"},
        "security": {"secure_aggregation": secure},
    }


def utility_configs(runs_dir: Path, *, rounds: int) -> dict[str, dict[str, Any]]:
    """The four hospitals: no DP, sample-level DP at epsilon 3, and client-level DP (central
    and distributed) at client-level epsilon 3 and 8 on top of the same sample-level DP."""
    base = {"runs_dir": str(runs_dir), "training": {"rounds": rounds}, "strategy": {"min_sites": 3}}
    base["federation"] = {"fresh_budget": True}

    def client(mode: str, eps: float) -> dict[str, Any]:
        level = {"mode": mode, "target_epsilon": eps, "clipping_norm": 0.5}
        out = {**base, "name": f"{mode}{eps:g}", "privacy": {"client_level": level}}
        if mode == "distributed":
            out["security"] = {"secure_aggregation": True}
        return out

    off = {"enabled": False, "target_epsilon": None, "noise_multiplier": None}
    return {
        "no DP": {**base, "name": "nodp", "privacy": off},
        "sample-level eps 3": {**base, "name": "sample3"},
        "central client-level eps 3": client("central", 3.0),
        "central client-level eps 8": client("central", 8.0),
        "distributed client-level eps 3": client("distributed", 3.0),
        "distributed client-level eps 8": client("distributed", 8.0),
    }


def _steady(result: dict[str, Any]) -> list[float]:
    return list(result.get("round_seconds", [])[1:])


def _round_rows(tmp: Path, *, rounds: int, pairs: int) -> list[Row]:
    seconds: dict[bool, list[float]] = {False: [], True: []}
    notes = []
    for pair in range(pairs):
        for secure in (False, True):
            tag = f"{'secure' if secure else 'sealed'}-{pair}"
            cfg = round_config(tmp / tag, secure=secure, rounds=rounds)
            result = run_worker("fedsafe", cfg, tmp / "work", tag)
            if "error" in result:
                notes.append(f"{tag} FAILED: {result['error'][-300:]}")
            seconds[secure] += _steady(result)
    sealed_s = statistics.median(seconds[False]) if seconds[False] else float("nan")
    secure_s = statistics.median(seconds[True]) if seconds[True] else float("nan")
    low = min(seconds[True], default=float("nan")) / min(seconds[False], default=float("nan"))
    ratio = secure_s / sealed_s
    return [
        Row(
            "aggregation_modes",
            "sealed round, 10 sites",
            "s/round",
            min(seconds[False], default=float("nan")),
            sealed_s,
            len(seconds[False]),
        ),
        Row(
            "aggregation_modes",
            "secure-aggregation round, 10 sites",
            "s/round",
            min(seconds[True], default=float("nan")),
            secure_s,
            len(seconds[True]),
            baseline="sealed round, 10 sites",
            ratio_min=low,
            ratio_median=ratio,
            target=f"<= {TARGET_RATIO:g}x",
            met=ratio <= TARGET_RATIO,
            note="; ".join(notes) or "rounds 2.. of each run, runs interleaved",
        ),
    ]


def _utility_rows(tmp: Path, *, rounds: int) -> list[Row]:
    rows = []
    for label, cfg in utility_configs(tmp / "utility", rounds=rounds).items():
        tag = cfg["name"]
        result = run_worker("fedsafe", cfg, tmp / "work", tag)
        summary_path = tmp / "work" / tag / "summary.json"
        if "error" in result or not summary_path.exists():
            rows.append(
                Row(
                    "aggregation_modes",
                    f"utility: {label}",
                    "accuracy",
                    float("nan"),
                    float("nan"),
                    0,
                    note=f"FAILED: {result.get('error', '')[-300:]}",
                )
            )
            continue
        summary = json.loads(summary_path.read_text())
        pooled = summary["global"]
        level = summary.get("client_level") or {}
        sample = max((s["epsilon"] or 0.0) for s in summary["sites"].values())
        note = (
            f"balanced accuracy {pooled.get('balanced-accuracy')}, AUROC {pooled.get('auroc')}; "
            f"sample-level eps (max site) {sample:.3g}"
        )
        if level:
            note += f"; client-level eps {level['epsilon']:.3g} after {level['releases']} releases"
        rows.append(
            Row(
                "aggregation_modes",
                f"utility: {label}",
                "accuracy",
                float(pooled["accuracy"]),
                float(pooled["accuracy"]),
                1,
                note=note,
                extra={"summary_global": pooled, "client_level": level},
            )
        )
    return rows


def run(*, quick: bool = False) -> list[Row]:
    """Round cost at 10 sites (interleaved pairs), then utility per mode on the hospitals."""
    with tempfile.TemporaryDirectory(prefix="fedsafe-modes-") as name:
        tmp = Path(name)
        rows = _round_rows(tmp, rounds=3 if quick else 5, pairs=1 if quick else 2)
        if quick:  # accuracy after 3 rounds says little, and one run per mode costs minutes
            note = "utility per mode is measured by `make bench` (10 rounds), not --quick"
            return [*rows, Row("aggregation_modes", "utility: not run in --quick", "accuracy",
                               float("nan"), float("nan"), 0, note=note)]  # fmt: skip
        return rows + _utility_rows(tmp, rounds=10)
