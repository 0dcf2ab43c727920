"""Configs of the simulated federations the benchmarks run, as plain data for a worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["hospitals_config", "steady_rounds"]


def hospitals_config(runs_dir: Path, *, rounds: int, name: str = "bench") -> dict[str, Any]:
    """The four hospitals with every protection at its default (sealed updates, consent,
    signed attestations, ledger, DP at target epsilon 3) and fresh budget stores."""
    return {
        "name": name,
        "runs_dir": str(runs_dir),
        "training": {"rounds": rounds},
        "federation": {"fresh_budget": True},
    }


def steady_rounds(results: list[dict[str, Any]]) -> list[float]:
    """Round times after warm-up: every round but the first, over all successful runs."""
    return [s for r in results if "error" not in r for s in r.get("round_seconds", [])[1:]]
