"""Privacy and compliance reports as self-contained HTML (inline SVG) with a JSON twin."""

from __future__ import annotations

from fedsafe.common.report.findings import NEAR_CAP, findings
from fedsafe.common.report.inputs import ReportError
from fedsafe.common.report.ledger_facts import NO_LEDGER, check_ledger, read_ledger
from fedsafe.common.report.run_data import REPORT_FORMAT, STATUSES, build_run_report
from fedsafe.common.report.run_html import render_run_html
from fedsafe.common.report.site_html import SITE_REPORT_FORMAT, render_site_html
from fedsafe.common.report.write import (
    WrittenReport,
    json_path_for,
    write_html_and_json,
    write_run_report,
)

__all__ = [
    "NEAR_CAP",
    "NO_LEDGER",
    "REPORT_FORMAT",
    "SITE_REPORT_FORMAT",
    "STATUSES",
    "ReportError",
    "WrittenReport",
    "build_run_report",
    "check_ledger",
    "findings",
    "json_path_for",
    "read_ledger",
    "render_run_html",
    "render_site_html",
    "write_html_and_json",
    "write_run_report",
]
