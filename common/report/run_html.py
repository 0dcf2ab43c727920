"""A run report as one HTML page: summary first, then privacy, participation, utility, record."""

from __future__ import annotations

from typing import Any

from fedsafe.common.report.client_level_html import client_level_section
from fedsafe.common.report.findings import NEAR_CAP
from fedsafe.common.report.fmt import esc, num, pct, table, tag
from fedsafe.common.report.page import document, findings_list
from fedsafe.common.report.run_activity import participation_section, utility_section
from fedsafe.common.report.run_record import ledger_section, manifest_section
from fedsafe.common.report.svg import Rule, Series, line_chart

__all__ = ["render_run_html"]


def _banner(ledger: dict[str, Any]) -> str:
    if ledger["status"] == "tampered":
        bad = ledger.get("first_bad_entry") or {}
        where = f" ({bad['kind']} written {bad['time']})" if bad else ""
        return tag(
            "div",
            esc(f"LEDGER TAMPERED: the first bad entry is seq {ledger['first_bad_seq']}{where}.")
            + tag(
                "small",
                esc(ledger["message"]) + ". Figures that come from the ledger "
                "(manifest, consent, attestations) cannot be trusted.",
            ),
            class_="banner",
            role="alert",
            id="ledger-alert",
        )
    if ledger["status"] in ("unverifiable", "missing"):
        title = "LEDGER MISSING." if ledger["status"] == "missing" else "LEDGER UNVERIFIABLE."
        return tag(
            "div",
            esc(title) + tag("small", esc(ledger["message"])),
            class_="banner",
            role="alert",
            id="ledger-alert",
        )
    return ""


def _fact(value: str, label: str, css: str | None = None) -> str:
    return tag("div", tag("b", esc(value), class_=css) + tag("span", esc(label)), class_="fact")


def _summary(report: dict[str, Any]) -> str:
    run, privacy, sites = report["run"], report["privacy"], report["sites"]
    eps = [s["final_epsilon"] for s in sites.values() if isinstance(s["final_epsilon"], float)]
    refusals = sum(len(s["refusals"]) + len(s["consent_refusals"]) for s in sites.values())
    facts = [
        _fact(str(len(sites)), "sites"),
        _fact(
            f"{num(run['rounds_completed'])} / {num(run['rounds_planned'])}",
            "rounds completed / planned",
        ),
        _fact("on" if privacy.get("enabled") else "OFF", "differential privacy (DP-SGD)"),
        _fact(num(max(eps)) if eps else "n/a", "highest site epsilon"),
        _fact(num(privacy.get("delta")), "delta"),
        _fact(str(refusals), "refusals"),
        _fact(report["ledger"]["status"], "ledger", f"status-{report['ledger']['status']}"),
        _fact(str(report["manifest"].get("purpose") or "not recorded"), "purpose"),
    ]
    return tag(
        "section",
        tag("h2", "Summary")
        + findings_list(report["findings"])
        + tag("div", "".join(facts), class_="facts"),
        id="summary",
    )


def _privacy(report: dict[str, Any]) -> str:
    rows, charts = [], []
    span = (1.0, float(max(len(report["participation"]["rounds"]), 1)))
    for i, (name, s) in enumerate(report["sites"].items()):
        refusals = len(s["refusals"]) + len(s["consent_refusals"])
        rows.append(
            [
                esc(name),
                esc(num(s["final_epsilon"])),
                esc(num(s["cap"], 2, none="none")),
                esc(pct(s["cap_fraction"])),
                esc(num(s["delta"])),
                esc(s["accountant"] or "n/a"),
                esc(num(s["noise_multiplier"])),
                esc(num(s["max_grad_norm"], 2)),
                esc(num(s["sample_rate"])),
                esc(num(s["steps"])),
                esc(", ".join(map(str, s["rounds_joined"])) or "none"),
                esc(str(refusals)),
                esc(s.get("release_policy") or "n/a"),
                esc(
                    "NOT PRIVATE (test seed)"
                    if s.get("randomness") not in (None, "os-csprng")
                    else (s.get("randomness") or "n/a")
                ),
            ]
        )
        points = [(p["round"], p["epsilon"]) for p in s["epsilon_by_round"]]
        series = [Series("reported (metrics)", points, emphasis=True, index=i)]
        attested = [(p["round"], p["attested_epsilon"]) for p in s["epsilon_by_round"]]
        if any(y is not None for _, y in attested):
            series.append(Series("attested (ledger)", attested, index=7))
        rules = []
        if s["cap"] is not None:
            rules = [
                Rule(s["cap"], f"cap {s['cap']:g}", "cap"),
                Rule(s["cap"] * NEAR_CAP, f"{NEAR_CAP:.0%} of cap", "near", at_start=True),
            ]
        caption = (
            f"Cumulative epsilon of {name} after each round it trained (delta "
            f"{num(s['delta'])}, {s['accountant'] or 'accountant n/a'})"
            + ("; no cap recorded for this site." if s["cap"] is None else ".")
        )
        chart = line_chart(
            series,
            title=f"{name}: epsilon",
            x_label="round",
            y_label="epsilon",
            rules=rules,
            y_floor=0.0,
            x_range=span,
        )
        charts.append(tag("figure", chart + tag("figcaption", esc(caption))))
    headers = [
        "site",
        "final ε",
        "cap",
        "of cap",
        "δ",
        "accountant",
        "noise σ",
        "clip C",
        "sample rate q",
        "steps",
        "rounds joined",
        "refusals",
        "released",
        "noise source",
    ]
    off = (
        ""
        if report["privacy"].get("enabled", True)
        else tag(
            "p",
            esc("DP was off in this run: epsilon is not defined (no noise was added)."),
            class_="muted",
        )
    )
    refusal_rows = [
        [
            esc(name),
            esc(num(r.get("round"))),
            esc(r.get("code") or r.get("decision") or ""),
            esc(r.get("reason") or ""),
        ]
        for name, s in report["sites"].items()
        for r in s["refusals"] + s["consent_refusals"]
    ]
    refusal_html = (
        tag("h3", "Refusals")
        + table(["site", "round", "code", "reason"], refusal_rows, numeric=(1,))
        if refusal_rows
        else tag("p", esc("No site refused a round."), class_="muted")
    )
    return tag(
        "section",
        tag("h2", "Privacy budget per site")
        + off
        + tag(
            "p",
            esc(
                "Epsilon is the cumulative privacy loss over everything a site ran on "
                "its data (composed, never summed); smaller is more private."
            ),
            class_="muted",
        )
        + table(headers, rows, numeric=(1, 2, 3, 4, 6, 7, 8, 9, 11))
        + tag("div", "".join(charts), class_="charts")
        + refusal_html,
        id="privacy",
    )


def render_run_html(report: dict[str, Any], *, json_name: str = "report.json") -> str:
    """The whole run report; ``report`` is what ``build_run_report`` returned."""
    run = report["run"]
    title = f"Privacy and compliance report: run {run.get('name') or '?'}"
    notes = "".join(tag("li", esc(n)) for n in report.get("notes", []))
    body = (
        _banner(report["ledger"])
        + tag(
            "header",
            tag("h1", esc(title))
            + tag(
                "p",
                esc(
                    f"dataset {run.get('dataset') or '?'} · "
                    f"strategy {run.get('strategy') or '?'} · "
                    f"run folder {report['run_dir']} · generated {report['generated_at']}"
                ),
                class_="subtitle",
            ),
        )
        + _summary(report)
        + _privacy(report)
        + client_level_section(report)
        + participation_section(report)
        + utility_section(report)
        + manifest_section(report)
        + ledger_section(report)
        + (tag("section", tag("h2", "Notes") + tag("ul", notes)) if notes else "")
    )
    footer = esc(f"fedsafe report ({report['format']}); the same numbers are in {json_name}.")
    return document(title, body, footer=footer)
