"""A site's own budget report as one HTML page, from its local store only, never from a server."""

from __future__ import annotations

from typing import Any

from fedsafe.common.report.findings import NEAR_CAP
from fedsafe.common.report.fmt import esc, num, pct, table, tag
from fedsafe.common.report.page import document, findings_list
from fedsafe.common.report.svg import Rule, Series, line_chart

__all__ = ["SITE_REPORT_FORMAT", "render_site_html"]

SITE_REPORT_FORMAT = "fedsafe-site-report-v1"


def _eps(value: Any) -> str:
    return value if isinstance(value, str) else num(value)


def _dataset(ds: dict[str, Any]) -> str:
    name = ds["dataset_id"]
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
    rules = []
    if isinstance(ds["cap"], float):
        rules = [
            Rule(ds["cap"], f"cap {ds['cap']:g}", "cap"),
            Rule(ds["cap"] * NEAR_CAP, f"{NEAR_CAP:.0%} of cap", "near", at_start=True),
        ]
    chart = line_chart(
        series,
        title=f"{name}: cumulative epsilon",
        x_label="charge (all runs, in order)",
        y_label="epsilon",
        rules=rules,
        y_floor=0.0,
    )
    caption = (
        f"Epsilon of the dataset's whole history after each charged round, at delta "
        f"{num(ds['delta'])} ({ds['accountant'] or 'n/a'}); one line per run."
    )
    facts = table(
        ["epsilon", "cap", "of cap", "δ", "accountant", "runs", "rounds", "steps", "refusals"],
        [
            [
                esc(_eps(ds["epsilon"])),
                esc(num(ds["cap"], 2, none="none")),
                esc(pct(ds["cap_fraction"])),
                esc(num(ds["delta"])),
                esc(ds["accountant"] or "n/a"),
                esc(str(len(ds["runs"]))),
                esc(str(ds["rounds"])),
                esc(str(ds["steps"])),
                esc(str(ds["refusals"])),
            ]
        ],
        numeric=(0, 1, 2, 3, 5, 6, 7, 8),
    )
    run_rows = [
        [
            esc(r["run_id"]),
            esc(str(r["rounds"])) + ("*" if r["reserved"] else ""),
            esc(str(r["steps"])),
            esc(_eps(r["epsilon_after"])),
            esc(str(r["refusals"])),
        ]
        for r in ds["runs"]
    ]
    history_rows = [
        [
            esc(str(h["index"])),
            esc(h["run_id"]),
            esc(str(h["round"])),
            esc(num(h["noise_multiplier"])),
            esc(num(h["sample_rate"])),
            esc(str(h["steps"])),
            esc(h["status"]),
            esc(h["purpose"] or ""),
            esc(_eps(h["epsilon_after"])),
            esc(h["time"]),
        ]
        for h in ds["history"]
    ]
    refusal_rows = [
        [
            esc(r["time"]),
            esc(r["run_id"]),
            esc(str(r["round"])),
            esc(r["reason"]),
            esc(r["message"]),
        ]
        for r in ds["refusal_list"]
    ]
    return tag(
        "section",
        tag("h2", f"Dataset {esc(name)}")
        + facts
        + tag("figure", chart + tag("figcaption", esc(caption)))
        + tag("h3", "Runs")
        + table(
            ["run", "rounds", "steps", "epsilon after run", "refusals"],
            run_rows,
            numeric=(1, 2, 3, 4),
        )
        + tag("h3", "Every charge")
        + table(
            [
                "#",
                "run",
                "round",
                "noise σ",
                "sample rate q",
                "steps",
                "status",
                "purpose",
                "epsilon after",
                "time",
            ],
            history_rows,
            numeric=(0, 2, 3, 4, 5, 8),
        )
        + tag("h3", "Refusals")
        + (
            table(["time", "run", "round", "reason", "message"], refusal_rows, numeric=(2,))
            if refusal_rows
            else tag("p", esc("None."), class_="muted")
        ),
    )


def render_site_html(report: dict[str, Any]) -> str:
    """The site report; ``report`` is what ``client.site_report.build_site_report`` returned."""
    title = "Site privacy budget report" + (f": {report['site']}" if report.get("site") else "")
    body = (
        tag(
            "header",
            tag("h1", esc(title))
            + tag(
                "p",
                esc(
                    f"budget store {report['store']} · generated {report['generated_at']} · "
                    "read from "
                    "this site's own store only, nothing from the server"
                ),
                class_="subtitle",
            ),
        )
        + tag("section", tag("h2", "Summary") + findings_list(report["findings"]), id="summary")
        + tag(
            "p",
            esc(
                "Epsilon composes every round of every run on a dataset (never summed); "
                "a new run does not start from zero."
            ),
            class_="muted",
        )
        + "".join(_dataset(ds) for ds in report["datasets"])
    )
    footer = esc(f"fedsafe site report ({report['format']}); the same numbers are in the JSON.")
    return document(title, body, footer=footer)
