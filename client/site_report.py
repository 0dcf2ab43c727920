"""`fedsafe site report`: a site's own HTML+JSON budget report, from its local store alone."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from fedsafe.client.budget import BudgetStore, BudgetStoreError, StoreAnchor
from fedsafe.client.budget_cli import add_keys_argument
from fedsafe.common.errors import FedsafeError
from fedsafe.common.privacy.accountants import epsilon_for
from fedsafe.common.report import (
    SITE_REPORT_FORMAT,
    WrittenReport,
    render_site_html,
    write_html_and_json,
)
from fedsafe.common.report.findings import site_findings
from fedsafe.common.report.inputs import clean_numbers

__all__ = ["add_site_report_parser", "build_site_report", "run_site_report", "write_site_report"]


def _epsilon(history: list[Any], delta: float, accountant: str) -> float | None:
    # A history some accountant cannot evaluate (PRV at tiny delta) is shown as unknown,
    # not as a crash that hides the rest of the report.
    try:
        return epsilon_for(history, delta=delta, accountant=accountant)
    except (FedsafeError, ValueError, ArithmeticError):
        return None


def _dataset(store: BudgetStore, dataset_id: str, cap: float | None) -> dict[str, Any]:
    summary = next(d for d in store.datasets() if d.dataset_id == dataset_id)
    records = store.charges(dataset_id)
    refusals = store.refusals(dataset_id)
    delta, accountant = summary.delta, summary.accountant
    history = []
    for index, record in enumerate(records, start=1):
        prefix = [r.charge for r in records[:index]]
        history.append(
            {
                "index": index,
                "run_id": record.run_id,
                "round": record.round,
                "noise_multiplier": record.charge.noise_multiplier,
                "sample_rate": record.charge.sample_rate,
                "steps": record.charge.steps,
                "planned_steps": record.planned_steps,
                "status": record.status,
                "purpose": record.purpose,
                "time": record.time,
                # Each point composes the whole history up to it, in the store's own units.
                "epsilon_after": _epsilon(prefix, record.delta, record.accountant),
            }
        )
    if cap is None and refusals:
        cap = refusals[-1].cap  # the cap the site itself enforced most recently
    eps = summary.epsilon
    return {
        "dataset_id": dataset_id,
        "epsilon": eps,
        "delta": delta,
        "accountant": accountant,
        "cap": cap,
        "cap_fraction": eps / cap if cap and math.isfinite(eps) else None,
        "rounds": summary.rounds,
        "steps": summary.steps,
        "reserved": summary.reserved,
        "refusals": summary.refusals,
        "runs": [
            {
                "run_id": run.run_id,
                "rounds": run.rounds,
                "steps": run.steps,
                "reserved": run.reserved,
                "refusals": run.refusals,
                "epsilon_after": run.epsilon_after,
            }
            for run in store.runs(dataset_id)
        ],
        "history": history,
        "refusal_list": [
            {
                "run_id": r.run_id,
                "round": r.round,
                "reason": r.reason,
                "spent_epsilon": r.spent_epsilon,
                "round_epsilon_cost": r.round_epsilon_cost,
                "cap": r.cap,
                "message": r.message,
                "time": r.time,
            }
            for r in refusals
        ],
    }


def build_site_report(
    store_path: Path,
    *,
    cap: float | None = None,
    site: str | None = None,
    keys_dir: Path | None = None,
    clock: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """Every dataset in the store across all its runs; never creates a store.

    ``cap`` is the site's max_epsilon when known; otherwise the cap of the latest refusal.
    With ``keys_dir`` (the site's keys folder) the store is checked against the site's signed
    head first, so an edited or truncated store is an error, not a smaller spend; without it
    the report says NOT VERIFIED. Infinite epsilons are written "inf" (strict JSON).
    """
    if cap is not None and not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"cap must be a finite float > 0, got {cap!r}")
    now = (clock or (lambda: datetime.now(UTC)))()
    anchor = StoreAnchor.from_keys_dir(keys_dir) if keys_dir is not None else None
    with BudgetStore.open(Path(store_path), create=False, anchor=anchor) as store:
        datasets = [_dataset(store, ds.dataset_id, cap) for ds in store.datasets()]
    report: dict[str, Any] = {
        "format": SITE_REPORT_FORMAT,
        "generated_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "store": str(store_path),
        "site": site,
        "verified": anchor is not None,
        "datasets": datasets,
    }
    report["findings"] = site_findings(report)
    if anchor is None:
        report["findings"].insert(
            0,
            {
                "level": "warn",
                "text": "NOT VERIFIED against the site's signed head (give --keys KEYS_DIR): "
                "edited or deleted rows would show here as a smaller spend.",
            },
        )
    return clean_numbers(report)


def write_site_report(
    store_path: Path,
    out: Path | None = None,
    *,
    cap: float | None = None,
    site: str | None = None,
    keys_dir: Path | None = None,
) -> WrittenReport:
    """Write the HTML (default next to the store, site-report.html) and its JSON twin."""
    report = build_site_report(store_path, cap=cap, site=site, keys_dir=keys_dir)
    out = Path(out) if out is not None else Path(store_path).parent / "site-report.html"
    return write_html_and_json(report, render_site_html(report), out)


def run_site_report(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """CLI body: 0 when written, 2 (with the reason) when the store cannot be read."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        written = write_site_report(
            args.store, args.out, cap=args.cap, site=args.site, keys_dir=args.keys
        )
    except (BudgetStoreError, ValueError) as error:
        print(f"fedsafe site report: error: {error}", file=err)
        return 2
    print(f"site report: {written.html}\nsame numbers: {written.json}", file=out)
    return 0


def add_site_report_parser(site_subparsers: Any) -> argparse.ArgumentParser:
    """Add `report --store PATH [--out FILE] [--cap EPS] [--site NAME]`; `func` is set."""
    parser: argparse.ArgumentParser = site_subparsers.add_parser(
        "report",
        help="write this site's privacy budget report (HTML + JSON) from its own store",
        description=(
            "Read the site's budget store (never created here) and write a self-contained HTML "
            "report and a JSON file with the same numbers: per dataset, the composed epsilon "
            "over all runs, against the cap, every charge and every refusal."
        ),
    )
    parser.add_argument("--store", type=Path, required=True, help="path of the site's budget store")
    parser.add_argument(
        "--out", type=Path, default=None, help="HTML file (default: site-report.html by the store)"
    )
    parser.add_argument(
        "--cap", type=float, default=None, help="the site's max_epsilon, to show the cap"
    )
    parser.add_argument("--site", default=None, help="site name for the title")
    add_keys_argument(parser)
    parser.set_defaults(func=run_site_report)
    return parser
