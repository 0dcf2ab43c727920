"""A fedsafe round with every protection vs a bare Flower + Opacus round on the same sites."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fedsafe.simulations.bench.breakdown import breakdown_rows
from fedsafe.simulations.bench.rows import Row, summarize
from fedsafe.simulations.bench.sims import hospitals_config, steady_rounds
from fedsafe.simulations.bench.spawn import run_worker

__all__ = ["run", "rows_from_results", "interleaved_runs", "TARGET"]

TARGET = 1.15


def interleaved_runs(workdir: Path, *, rounds: int, pairs: int) -> dict[str, list[dict[str, Any]]]:
    """baseline, fedsafe, fedsafe, baseline, ...: each in a fresh process, alternating first."""
    results: dict[str, list[dict[str, Any]]] = {"baseline": [], "fedsafe": []}
    for i in range(pairs):
        order = ("baseline", "fedsafe") if i % 2 == 0 else ("fedsafe", "baseline")
        for kind in order:
            cfg = hospitals_config(workdir / f"runs-{kind}-{i}", rounds=rounds)
            results[kind].append(run_worker(kind, cfg, workdir, f"{kind}-{i}"))
    return results


def rows_from_results(results: dict[str, list[dict[str, Any]]], rounds: int) -> list[Row]:
    """Per-round seconds after warm-up for both apps, and fedsafe's ratio to the baseline."""
    base, fed = steady_rounds(results["baseline"]), steady_rounds(results["fedsafe"])
    rows = []
    errors = [r["error"][-300:] for k in results for r in results[k] if "error" in r]
    b_lo, b_med, b_n = summarize(base)
    f_lo, f_med, f_n = summarize(fed)
    rows.append(
        Row(
            "round_overhead",
            f"bare Flower+Opacus, 4 hospitals, rounds 2..{rounds}",
            "s/round",
            b_lo,
            b_med,
            b_n,
        )
    )
    ratio_med = f_med / b_med if base and fed else None
    rows.append(
        Row(
            "round_overhead",
            f"fedsafe all protections, rounds 2..{rounds}",
            "s/round",
            f_lo,
            f_med,
            f_n,
            baseline="bare Flower+Opacus",
            ratio_min=f_lo / b_lo if base and fed else None,
            ratio_median=ratio_med,
            target=f"<= {TARGET}x",
            met=None if ratio_med is None else ratio_med <= TARGET,
            note="; ".join(errors) if errors else "",
            extra={
                "fedsafe_round_seconds": [r.get("round_seconds") for r in results["fedsafe"]],
                "baseline_round_seconds": [r.get("round_seconds") for r in results["baseline"]],
            },
        )
    )
    for kind in ("baseline", "fedsafe"):
        firsts = [r["round_seconds"][0] for r in results[kind] if r.get("round_seconds")]
        walls = [r["wall_s"] for r in results[kind] if "error" not in r]
        lo, med, n = summarize(firsts)
        rows.append(Row("round_overhead", f"{kind}: round 1 (warm-up)", "s", lo, med, n))
        lo, med, n = summarize(walls)
        rows.append(
            Row("round_overhead", f"{kind}: whole run, process start to exit", "s", lo, med, n)
        )
    return rows


def run(*, quick: bool = False, workdir: Path | None = None) -> list[Row]:
    """Fresh processes, interleaved; then where fedsafe's extra time per round goes."""
    rounds, pairs = (3, 1) if quick else (6, 2)
    with tempfile.TemporaryDirectory(prefix="fedsafe-bench-") as tmp:
        results = interleaved_runs(workdir or Path(tmp), rounds=rounds, pairs=pairs)
        rows = rows_from_results(results, rounds)
    rows.extend(breakdown_rows(repeats=3 if quick else 10))
    return rows
