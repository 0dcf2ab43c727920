"""What one simulation pays before its first round: start-up, imports, Ray, actors, roll call."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from fedsafe.simulations.bench.rows import Row, summarize
from fedsafe.simulations.bench.sims import hospitals_config
from fedsafe.simulations.bench.spawn import run_worker

__all__ = ["run", "rows_from_results", "PHASES"]

# (label, from mark, to mark); "spawn" is the parent's clock just before the process starts.
PHASES: tuple[tuple[str, str, str], ...] = (
    ("interpreter start-up", "spawn", "start"),
    ("imports (torch, flwr, opacus)", "start", "imported"),
    ("config, privacy plan, app build", "simulate_call", "ray_init_start"),
    ("Ray init", "ray_init_start", "ray_init_end"),
    ("actor pool start", "actors_start", "actors_end"),
    ("roll call (signed identity + consent)", "roll_call_start", "roll_call_end"),
    ("roll call end to round 1", "roll_call_end", "round1_start"),
    ("process start to round 1 start", "spawn", "round1_start"),
)


def _phase(result: dict[str, Any], start: str, end: str) -> float | None:
    marks = {**result.get("marks", {}), "spawn": result.get("spawn")}
    if marks.get(start) is None or marks.get(end) is None:
        return None
    return float(marks[end] - marks[start])


def _ready(result: dict[str, Any]) -> float | None:
    """Process start to the end of round 1, less one steady round: the fixed cost both apps pay.

    The bare app starts its round 1 before Ray is up (the round absorbs the start-up);
    fedsafe starts it after the roll call. Subtracting a steady round compares like with like.
    """
    seconds = result.get("round_seconds") or []
    marks = result.get("marks", {})
    if len(seconds) < 2 or "round1_start" not in marks:
        return None
    round1_end = marks["round1_start"] + seconds[0]
    return float(round1_end - result["spawn"] - statistics.median(seconds[1:]))


def rows_from_results(results: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """Each phase's min/median over runs; the comparable fixed cost with its ratio."""
    rows = []
    fed = [r for r in results["fedsafe"] if "error" not in r]
    base = [r for r in results["baseline"] if "error" not in r]
    for label, start, end in PHASES:
        values = [v for r in fed if (v := _phase(r, start, end)) is not None]
        lo, med, n = summarize(values)
        rows.append(Row("fixed_cost", f"fedsafe: {label}", "s", lo, med, n))
    b_ready = [v for r in base if (v := _ready(r)) is not None]
    f_ready = [v for r in fed if (v := _ready(r)) is not None]
    b_lo, b_med, b_n = summarize(b_ready)
    f_lo, f_med, f_n = summarize(f_ready)
    rows.append(
        Row(
            "fixed_cost",
            "bare Flower: start to round 1 end - 1 steady round",
            "s",
            b_lo,
            b_med,
            b_n,
        )
    )
    rows.append(
        Row(
            "fixed_cost",
            "fedsafe: start to round 1 end - 1 steady round",
            "s",
            f_lo,
            f_med,
            f_n,
            baseline="bare Flower",
            ratio_min=f_lo / b_lo if b_ready and f_ready else None,
            ratio_median=f_med / b_med if b_ready and f_ready else None,
            note="round 1 also carries the sites' first DP imports (opacus) and store creation",
        )
    )
    return rows


def run(
    *, quick: bool = False, results: dict[str, list[dict[str, Any]]] | None = None
) -> list[Row]:
    """Reuse round_overhead's runs when given; otherwise run its own 3-round pairs."""
    if results is None:
        results = {"baseline": [], "fedsafe": []}
        with tempfile.TemporaryDirectory(prefix="fedsafe-fixed-") as tmp:
            for i in range(1 if quick else 2):
                order = ("fedsafe", "baseline") if i % 2 == 0 else ("baseline", "fedsafe")
                for kind in order:
                    cfg = hospitals_config(Path(tmp) / f"runs-{kind}-{i}", rounds=3)
                    results[kind].append(run_worker(kind, cfg, Path(tmp), f"{kind}-{i}"))
    return rows_from_results(results)
