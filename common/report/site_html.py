"""A site's own budget report as one HTML page, from its local store only, never from a server.

``client.site_report`` builds the numbers; this module draws one chart per dataset and hands
both to the ``site.html.j2`` template, which escapes every value it prints.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from fedsafe.common.report.findings import NEAR_CAP
from fedsafe.common.report.svg import Series, cap_rules, line_chart
from fedsafe.common.report.templating import render

__all__ = ["SITE_REPORT_FORMAT", "render_site_html"]

SITE_REPORT_FORMAT = "fedsafe-site-report-v1"


def _chart(ds: dict[str, Any]) -> Markup:
    """The dataset's cumulative epsilon after each charge, one line per run, against its cap."""
    runs = list(dict.fromkeys(h["run_id"] for h in ds["history"]))
    series = [
        Series(
            run,
            [
                (h["index"], h["epsilon_after"])
                for h in ds["history"]
                if h["run_id"] == run and isinstance(h["epsilon_after"], float)
            ],
            index=i,
        )
        for i, run in enumerate(runs)
    ]
    rules = cap_rules(ds["cap"] if isinstance(ds["cap"], float) else None, NEAR_CAP)
    return line_chart(
        series,
        title=f"{ds['dataset_id']}: cumulative epsilon",
        x_label="charge (all runs, in order)",
        y_label="epsilon",
        rules=rules,
        y_floor=0.0,
    )


def render_site_html(report: dict[str, Any]) -> str:
    """The site report; ``report`` is what ``client.site_report.build_site_report`` returned."""
    title = "Site privacy budget report" + (f": {report['site']}" if report.get("site") else "")
    return render(
        "site.html.j2",
        title=title,
        report=report,
        datasets=[(ds, _chart(ds)) for ds in report["datasets"]],
    )
