"""A run report as one HTML page: summary first, then privacy, participation, utility, record.

``run_data`` builds the numbers; this module draws the charts and hands both to the
``run.html.j2`` template, which escapes every value it prints.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from markupsafe import Markup

from fedsafe.common.report.findings import NEAR_CAP
from fedsafe.common.report.fmt import num
from fedsafe.common.report.run_data import STATUSES
from fedsafe.common.report.svg import Series, cap_rules, line_chart
from fedsafe.common.report.templating import render

__all__ = ["render_run_html"]


class _Fact(NamedTuple):
    """One headline figure of the summary: value, what it is, and a CSS class for its colour."""

    value: str
    label: str
    css: str | None = None


def _facts(report: dict[str, Any]) -> list[_Fact]:
    run, privacy, sites = report["run"], report["privacy"], report["sites"]
    eps = [s["final_epsilon"] for s in sites.values() if isinstance(s["final_epsilon"], float)]
    status = report["ledger"]["status"]
    return [
        _Fact(str(len(sites)), "sites"),
        _Fact(
            f"{num(run['rounds_completed'])} / {num(run['rounds_planned'])}",
            "rounds completed / planned",
        ),
        _Fact("on" if privacy.get("enabled") else "OFF", "differential privacy (DP-SGD)"),
        _Fact(num(max(eps)) if eps else "n/a", "highest site epsilon"),
        _Fact(num(privacy.get("delta")), "delta"),
        _Fact(
            str(sum(len(s["refusals"]) + len(s["consent_refusals"]) for s in sites.values())),
            "refusals",
        ),
        _Fact(status, "ledger", f"status-{status}"),
        _Fact(str(report["manifest"].get("purpose") or "not recorded"), "purpose"),
    ]


def _epsilon_chart(
    index: int, name: str, site: dict[str, Any], span: tuple[float, float]
) -> Markup:
    """One site's cumulative epsilon as reported and as attested, against its cap."""
    points = [(p["round"], p["epsilon"]) for p in site["epsilon_by_round"]]
    series = [Series("reported (metrics)", points, emphasis=True, index=index)]
    attested = [(p["round"], p["attested_epsilon"]) for p in site["epsilon_by_round"]]
    if any(y is not None for _, y in attested):
        series.append(Series("attested (ledger)", attested, index=7))
    rules = cap_rules(site["cap"], NEAR_CAP)
    return line_chart(
        series,
        title=f"{name}: epsilon",
        x_label="round",
        y_label="epsilon",
        rules=rules,
        y_floor=0.0,
        x_range=span,
    )


def _utility_charts(report: dict[str, Any]) -> list[tuple[str, Markup]]:
    """Accuracy and AUROC per round: one line per site and the pooled figure in bold."""
    util, charts = report["utility"], []
    for metric, label in (("accuracy", "accuracy"), ("auroc", "AUROC")):
        series = [
            Series(name, [(p["round"], p[metric]) for p in points], index=i)
            for i, (name, points) in enumerate(util["sites"].items())
        ]
        pooled = [(p["round"], p[metric]) for p in util["global"]]
        series.append(Series("global (weighted)", pooled, emphasis=True, index=7))
        chart = line_chart(
            series,
            title=f"Held-out {label} per round",
            x_label="round",
            y_label=label,
            y_floor=0.0,
            y_ceiling=1.0,
        )
        charts.append((label, chart))
    return charts


def render_run_html(report: dict[str, Any], *, json_name: str = "report.json") -> str:
    """The whole run report; ``report`` is what ``build_run_report`` returned."""
    span = (1.0, float(max(len(report["participation"]["rounds"]), 1)))
    epsilon = {
        name: _epsilon_chart(i, name, site, span)
        for i, (name, site) in enumerate(report["sites"].items())
    }
    refusals = [
        (name, r)
        for name, s in report["sites"].items()
        for r in s["refusals"] + s["consent_refusals"]
    ]
    return render(
        "run.html.j2",
        title=f"Privacy and compliance report: run {report['run'].get('name') or '?'}",
        report=report,
        json_name=json_name,
        facts=_facts(report),
        refusals=refusals,
        statuses=STATUSES,
        charts={"epsilon": epsilon, "utility": _utility_charts(report)},
    )
