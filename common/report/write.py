"""Writing a report's HTML and its JSON twin side by side, so the two can never drift apart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fedsafe.common.ledger.audit import Anchors
from fedsafe.common.report.run_data import build_run_report
from fedsafe.common.report.run_html import render_run_html
from fedsafe.common.storage import write_atomic
from fedsafe.common.storage.atomic import PUBLIC_MODE

__all__ = ["WrittenReport", "json_path_for", "write_html_and_json", "write_run_report"]


@dataclass(frozen=True)
class WrittenReport:
    """Where a report went and what it says; ``ledger_ok`` is False for a failed verification."""

    html: Path
    json: Path
    report: dict[str, Any]

    @property
    def ledger_ok(self) -> bool:
        return self.report.get("ledger", {}).get("status") in ("intact", "absent", None)

    @property
    def ledger_unanchored(self) -> bool:
        """Consistent, but checked only against keys found in the run folder."""
        ledger = self.report.get("ledger", {})
        return ledger.get("status") == "unverifiable" and bool(ledger.get("consistent"))


def json_path_for(html_path: Path) -> Path:
    """report.html -> report.json; any other name keeps its stem (x.html -> x.json)."""
    return Path(html_path).with_suffix(".json")


def _atomic_write(path: Path, text: str) -> None:
    """A half-written report must never be mistaken for a complete one; a report is meant to
    be handed on, so it is readable by others (0644)."""
    write_atomic(path, text, mode=PUBLIC_MODE)


def write_html_and_json(report: dict[str, Any], html: str, out: Path) -> WrittenReport:
    """Write ``html`` to ``out`` and ``report`` as strict JSON next to it."""
    out = Path(out)
    json_out = json_path_for(out)
    _atomic_write(json_out, json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n")
    _atomic_write(out, html)
    return WrittenReport(out, json_out, report)


def write_run_report(
    run_dir: Path,
    out: Path | None = None,
    *,
    now: datetime | None = None,
    anchors: Anchors | None = None,
) -> WrittenReport:
    """Build, render and write a run report (default RUN_DIR/report.html + report.json).

    Written even when the ledger fails verification: that report is the evidence.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    report = build_run_report(run_dir, now=now, anchors=anchors)
    return write_html_and_json(
        report, render_run_html(report, json_name=json_path_for(out).name), out
    )
