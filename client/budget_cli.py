"""`fedsafe site budget`: show a site what its store says it has spent, per dataset and run."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from client.budget import BudgetStore, BudgetStoreError

__all__ = ["add_budget_parser", "budget_report", "format_report", "run_budget"]

_COLUMNS = ("dataset", "run", "rounds", "steps", "epsilon after run", "refusals")


def _number(value: float) -> float | str:
    """JSON has no infinity; say it in words rather than emit invalid JSON."""
    return value if math.isfinite(value) else "inf"


def budget_report(store_path: Path) -> dict[str, Any]:
    """The store's summaries as plain data; never creates a store (a missing one is an error)."""
    with BudgetStore.open(Path(store_path), create=False) as store:
        datasets = []
        for ds in store.datasets():
            runs = store.runs(ds.dataset_id)
            datasets.append(
                {
                    "dataset_id": ds.dataset_id,
                    "epsilon": _number(ds.epsilon),
                    "delta": ds.delta,
                    "accountant": ds.accountant,
                    "runs": [
                        {
                            "run_id": run.run_id,
                            "rounds": run.rounds,
                            "steps": run.steps,
                            "reserved": run.reserved,
                            "refusals": run.refusals,
                            "epsilon_after": _number(run.epsilon_after),
                        }
                        for run in runs
                    ],
                    "rounds": ds.rounds,
                    "steps": ds.steps,
                    "reserved": ds.reserved,
                    "refusals": ds.refusals,
                }
            )
    return {"store": str(store_path), "datasets": datasets}


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table, one line per (dataset, run); a '*' marks rounds left reserved."""
    rows: list[tuple[str, ...]] = []
    for ds in report["datasets"]:
        for run in ds["runs"]:
            eps = run["epsilon_after"]
            rows.append(
                (
                    ds["dataset_id"],
                    run["run_id"],
                    f"{run['rounds']}{'*' if run['reserved'] else ''}",
                    str(run["steps"]),
                    eps if isinstance(eps, str) else f"{eps:.4f}",
                    str(run["refusals"]),
                )
            )
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(_COLUMNS)]
    lines = [f"budget store: {report['store']}"]
    line = "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True))
    lines += [line.rstrip(), "  ".join("-" * w for w in widths)]
    for row in rows:
        cells = [
            cell.rjust(w) if i >= 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if not rows:
        lines.append("(no charges or refusals yet)")
    for ds in report["datasets"]:
        if ds["delta"] is not None:
            eps = ds["epsilon"]
            eps_text = eps if isinstance(eps, str) else f"{eps:.4f}"
            lines.append(
                f"{ds['dataset_id']}: epsilon {eps_text} "
                f"at delta={ds['delta']:g} ({ds['accountant']}), {ds['rounds']} rounds, "
                f"{ds['steps']} steps over {len(ds['runs'])} run(s)"
            )
    if any(ds["reserved"] for ds in report["datasets"]):
        lines.append("* a round still 'reserved' (a crash mid-round): counted at its planned steps")
    return "\n".join(lines)


def run_budget(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Print the report; exit status 2 with the reason when the store cannot be read."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        report = budget_report(args.store)
    except BudgetStoreError as error:
        print(f"fedsafe site budget: error: {error}", file=err)
        return 2
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        print(format_report(report), file=out)
    return 0


def add_budget_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `budget --store PATH [--json]` to a subparsers object; its `func` is `run_budget`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "budget",
        help="show this site's privacy spend per dataset and run",
        description=(
            "Read the site's budget store (never created here) and show, per dataset and run, "
            "rounds, steps, the dataset's composed epsilon after the run, and refusals."
        ),
    )
    parser.add_argument("--store", type=Path, required=True, help="path of the site's budget store")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_budget)
    return parser
