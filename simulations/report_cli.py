"""`fedsafe report RUN_DIR`: a run's privacy and compliance report (HTML + JSON)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from fedsafe.common.ledger.audit import Anchors
from fedsafe.common.report import (
    ReportError,
    json_path_for,
    render_run_html,
    write_html_and_json,
    write_run_report,
)
from fedsafe.server.access.options import add_admin_arguments, admin_client
from fedsafe.simulations.audit_cli import UNVERIFIABLE_EXIT, add_anchor_arguments, anchors_from

__all__ = ["add_report_parser", "run_report", "write_report"]


def write_report(run_dir: Path, out: Path | None = None, *, anchors: Anchors | None = None) -> Path:
    """Write RUN_DIR's report (default RUN_DIR/report.html, plus report.json); return the HTML.

    Never raises for a ledger that fails verification: the report says so at its top.
    """
    return write_run_report(
        Path(run_dir), Path(out) if out is not None else None, anchors=anchors
    ).html


def run_report(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """0: written, ledger intact against the auditor's anchors (or never kept); 1: tampered,
    missing or unreadable; 2: no report; 3: consistent only with keys found in the folder."""
    out, err = out or sys.stdout, err or sys.stderr
    client = admin_client(args)
    try:
        if client is not None:  # RUN_DIR is a run id on the coordinator (role report)
            run_id = str(args.run_dir)
            report = client.report(run_id)["report"]
            html_out = Path(args.out) if args.out else Path(f"{Path(run_id).name}-report.html")
            html = render_run_html(report, json_name=json_path_for(html_out).name)
            written = write_html_and_json(report, html, html_out)
        else:
            written = write_run_report(args.run_dir, args.out, anchors=anchors_from(args))
    except ReportError as error:
        print(f"fedsafe report: error: {error}", file=err)
        return 2
    print(f"report: {written.html}\nsame numbers: {written.json}", file=out)
    if written.ledger_unanchored:
        print(
            f"fedsafe report: LEDGER UNVERIFIABLE: {written.report['ledger']['message']}", file=err
        )
        return UNVERIFIABLE_EXIT
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
            "the same numbers. Give --key/--keys/--fingerprint/--witness from an independent "
            "copy to check it against them. Exits 1 when the ledger does not verify or is "
            "missing, 3 when it was checked only against keys found in the run folder (the "
            "report is still written)."
        ),
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder")
    parser.add_argument(
        "--out", type=Path, default=None, help="HTML file (default: RUN_DIR/report.html)"
    )
    add_anchor_arguments(parser)
    add_admin_arguments(parser)  # with --admin, RUN_DIR is a run id the coordinator holds
    parser.set_defaults(func=run_report)
    return parser
