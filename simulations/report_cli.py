"""`fedsafe report RUN_DIR`: a run's privacy and compliance report (HTML + JSON)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from common.report import ReportError, write_run_report

__all__ = ["add_report_parser", "run_report", "write_report"]


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write RUN_DIR's report (default RUN_DIR/report.html, plus report.json); return the HTML.

    Never raises for a ledger that fails verification: the report says so at its top.
    """
    return write_run_report(Path(run_dir), Path(out) if out is not None else None).html


def run_report(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """0 when written and the ledger verified (or is absent); 1 when it failed; 2 unreadable."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        written = write_run_report(args.run_dir, args.out)
    except ReportError as error:
        print(f"fedsafe report: error: {error}", file=err)
        return 2
    print(f"report: {written.html}\nsame numbers: {written.json}", file=out)
    if not written.ledger_ok:
        ledger = written.report["ledger"]
        print(f"fedsafe report: LEDGER {ledger['status'].upper()}: {ledger['message']}", file=err)
        return 1
    return 0


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `report RUN_DIR [--out FILE]` to the top-level subparsers; `func` is `run_report`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="write a run's privacy and compliance report (HTML + JSON)",
        description=(
            "Read a run folder (summary.json, metrics.jsonl, ledger.sqlite and keys when present), "
            "verify the ledger now, and write a self-contained HTML report and report.json with "
            "the same numbers. Exits 1 when the ledger does not verify (the report is still "
            "written)."
        ),
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder")
    parser.add_argument(
        "--out", type=Path, default=None, help="HTML file (default: RUN_DIR/report.html)"
    )
    parser.set_defaults(func=run_report)
    return parser
