"""`python -m simulations.bench [--quick] [--only NAME,...] [--out bench.json]`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedsafe.simulations.bench import BENCHES, FULL_ONLY
from fedsafe.simulations.bench.rows import Row, format_table, rows_to_json

__all__ = ["main", "run_benches"]


def _one(name: str, quick: bool, shared: dict[str, Any]) -> list[Row]:
    from fedsafe.simulations.bench import crypto_ledger, dp_step, fixed_cost, round_overhead, scale
    from fedsafe.simulations.bench.breakdown import breakdown_rows

    if name == "dp_step":
        return dp_step.run(quick=quick)
    if name == "round_overhead":
        rounds, pairs = (3, 1) if quick else (6, 2)
        with tempfile.TemporaryDirectory(prefix="fedsafe-bench-") as tmp:
            shared["runs"] = round_overhead.interleaved_runs(Path(tmp), rounds=rounds, pairs=pairs)
        rows = round_overhead.rows_from_results(shared["runs"], rounds)
        try:
            return rows + breakdown_rows(repeats=3 if quick else 10)
        except Exception as err:  # keep the simulation figures even if the parts fail
            note = f"breakdown failed: {type(err).__name__}: {str(err)[:300]}"
            return [
                *rows,
                Row(name, "breakdown not completed", "-", float("nan"), 0.0, 0, note=note),
            ]
    if name == "crypto_ledger":
        return crypto_ledger.run(quick=quick)
    if name == "scale":
        return scale.run(quick=quick)
    if name == "aggregation_modes":
        from fedsafe.simulations.bench import aggregation_modes

        return aggregation_modes.run(quick=quick)
    if name == "update_bits":
        from fedsafe.simulations.bench import update_bits

        return update_bits.run(quick=quick)
    if name == "deploy":
        from fedsafe.simulations.bench import deploy_rounds

        return deploy_rounds.run(quick=quick)
    return fixed_cost.run(quick=quick, results=shared.get("runs"))


def run_benches(
    names: list[str],
    *,
    quick: bool,
    progress: Callable[[list[Row]], None] | None = None,
    named: bool = False,
) -> list[Row]:
    """Run the named benchmarks in BENCHES order; fixed_cost reuses round_overhead's runs.

    A bench that fails (the working tree changing under a long run, a missing data set)
    becomes one row saying why; the others still run. With `quick`, a FULL_ONLY bench runs
    only when `named` (asked for by name) and otherwise leaves a row saying how to run it.
    """
    rows: list[Row] = []
    shared: dict[str, Any] = {}
    for name in BENCHES:
        if name not in names:
            continue
        if quick and name in FULL_ONLY and not named:
            note = f"left out of --quick (minutes of Flower polling); `make bench` or --only {name}"
            rows.append(
                Row(name, "not run in --quick", "-", float("nan"), float("nan"), 0, note=note)
            )
            continue
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            new = _one(name, quick, shared)
        except Exception as err:  # report and go on: one broken bench must not lose the rest
            note = f"bench failed: {type(err).__name__}: {str(err)[:300]}"
            new = [Row(name, "not completed", "-", float("nan"), float("nan"), 0, note=note)]
        rows.extend(new)
        print(format_table(new), file=sys.stderr, flush=True)
        print(
            f"[bench] {name} done in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        if progress is not None:
            progress(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the table, write the JSON file."""
    parser = argparse.ArgumentParser(prog="python -m simulations.bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small repeats; skip 1,000 sites, the 100k-entry verify, deployed rounds and the "
        "per-mode utility runs (under 5 minutes on 2 cores)",
    )
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--out", default="bench.json", help="where to write the figures")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown bench {unknown}; known: {', '.join(BENCHES)}")
    for key, value in (
        ("FLWR_TELEMETRY_ENABLED", "0"),
        ("FLWR_DISABLE_UPDATE_CHECK", "1"),
        ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1"),
        ("RAY_USAGE_STATS_ENABLED", "0"),
    ):
        os.environ.setdefault(key, value)
    started = time.time()

    def write(rows: list[Row]) -> None:
        report = {
            "quick": args.quick,
            "benches": names,
            "started": started,
            "seconds": time.time() - started,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg": os.getloadavg(),
            },
            "rows": rows_to_json(rows),
        }
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    rows = run_benches(names, quick=args.quick, progress=write, named=bool(args.only))
    write(rows)
    print(format_table(rows))
    load = os.getloadavg()
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f}; ratios compare cases measured interleaved in this run"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
