"""Run report sections on what happened: who took part in each round, and how the model did."""

from __future__ import annotations

from typing import Any

from fedsafe.common.report.fmt import esc, num, table, tag
from fedsafe.common.report.run_data import STATUSES
from fedsafe.common.report.svg import Series, line_chart

__all__ = ["participation_section", "utility_section"]


def participation_section(report: dict[str, Any]) -> str:
    """Site x round grid, per-site counts, consent decisions and dropouts."""
    part = report["participation"]
    grid = _grid_table(part)
    key = tag(
        "p",
        "".join(tag("span", esc(s), class_=f"cell-key {s.replace(' ', '-')}") for s in STATUSES),
        class_="key",
    )
    count_rows = [
        [esc(name)] + [esc(str(c[s])) for s in STATUSES] for name, c in part["counts"].items()
    ]
    consent_rows = [
        [
            esc(num(c.get("round"))),
            esc(c.get("site")),
            esc(c.get("decision")),
            esc(c.get("legal_basis") or ""),
            esc(c.get("reason") or ""),
        ]
        for c in part["consent"]
    ]
    consent = (
        table(["round", "site", "decision", "legal basis", "reason"], consent_rows, numeric=(0,))
        if consent_rows
        else tag(
            "p", esc("No consent decisions recorded (no ledger, or none written)."), class_="muted"
        )
    )
    drop_rows = [
        [esc(num(d.get("round"))), esc(d.get("site")), esc(d.get("reason") or "")]
        for d in part["dropouts"]
    ]
    dropouts = (
        table(["round", "site", "reason"], drop_rows, numeric=(0,))
        if drop_rows
        else tag("p", esc("No dropouts recorded."), class_="muted")
    )
    return tag(
        "section",
        tag("h2", "Participation")
        + tag(
            "p",
            esc(
                "Which site took part in which round: trained, refused (by its own "
                "policy or for lack of consent), dropped (selected but no reply), or not "
                "selected."
            ),
            class_="muted",
        )
        + grid
        + key
        + table(["site", *STATUSES], count_rows, numeric=(1, 2, 3, 4))
        + tag("h3", "Consent decisions")
        + consent
        + tag("h3", "Dropouts")
        + dropouts,
        id="participation",
    )


def _grid_table(part: dict[str, Any]) -> str:
    """Site x round table; each cell names its status in words and is coloured by it."""
    head = tag("th", "site", scope="col") + "".join(
        tag("th", f"round {r}", class_="cell", scope="col") for r in part["rounds"]
    )
    body = []
    for name, cells in part["grid"].items():
        row = tag("th", esc(name), scope="row")
        for rnd in part["rounds"]:
            cell = cells[str(rnd)]
            status = cell["status"]
            title = f"round {rnd}: {status}" + (f": {cell['reason']}" if cell.get("reason") else "")
            row += tag("td", esc(status), class_=f"cell {status.replace(' ', '-')}", title=title)
        body.append(tag("tr", row))
    return tag("table", tag("thead", tag("tr", head)) + tag("tbody", "".join(body)), class_="grid")


def utility_section(report: dict[str, Any]) -> str:
    """Accuracy and AUROC per round (sites and pooled), final figures, the fairness gap."""
    util = report["utility"]
    charts = []
    for metric, label in (("accuracy", "accuracy"), ("auroc", "AUROC")):
        series = [
            Series(name, [(p["round"], p[metric]) for p in points], index=i)
            for i, (name, points) in enumerate(util["sites"].items())
        ]
        series.append(
            Series(
                "global (weighted)",
                [(p["round"], p[metric]) for p in util["global"]],
                emphasis=True,
                index=7,
            )
        )
        chart = line_chart(
            series,
            title=f"Held-out {label} per round",
            x_label="round",
            y_label=label,
            y_floor=0.0,
            y_ceiling=1.0,
        )
        caption = (
            f"Each site's {label} on its own held-out split, and the pooled figure weighted by "
            "test-set size."
        )
        charts.append(tag("figure", chart + tag("figcaption", esc(caption))))
    rows = [
        [
            esc(name),
            esc(num(s["accuracy"])),
            esc(num(s["balanced_accuracy"])),
            esc(num(s["auroc"])),
            esc(num(s["loss"])),
            esc(num(s["num_test"], 0)),
        ]
        for name, s in report["sites"].items()
    ]
    final = util.get("final_global") or {}
    rows.append(
        [
            tag("b", "global"),
            esc(num(final.get("accuracy"))),
            esc(num(final.get("balanced-accuracy", final.get("balanced_accuracy")))),
            esc(num(final.get("auroc"))),
            esc(num(final.get("loss"))),
            "",
        ]
    )
    fair = report.get("fairness")
    fairness = (
        tag(
            "p",
            esc(
                f"Fairness gap ({fair.get('metric')}): {num(fair.get('gap'))} between "
                f"the best site ({fair.get('best_site')}) and the worst "
                f"({fair.get('worst_site')})."
            ),
        )
        if isinstance(fair, dict)
        else tag("p", esc("No fairness figure recorded."), class_="muted")
    )
    return tag(
        "section",
        tag("h2", "Model utility")
        + tag("div", "".join(charts), class_="charts")
        + tag("h3", "Final figures")
        + table(
            ["site", "accuracy", "balanced accuracy", "AUROC", "loss", "test rows"],
            rows,
            numeric=(1, 2, 3, 4, 5),
        )
        + fairness,
        id="utility",
    )
