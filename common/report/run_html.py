"""A run report as one HTML page: summary first, then privacy, participation, utility, record."""

from __future__ import annotations

from typing import Any

from common.report.findings import NEAR_CAP
from common.report.fmt import esc, num, pct, table, tag
from common.report.page import document, findings_list
from common.report.svg import Rule, Series, line_chart

__all__ = ["render_run_html"]

_STATUS_TEXT = {
    "trained": "trained",
    "refused": "refused",
    "dropped": "dropped",
    "not selected": "not selected",
}


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
    if ledger["status"] == "unverifiable":
        return tag(
            "div",
            esc("LEDGER COULD NOT BE VERIFIED.") + tag("small", esc(ledger["message"])),
            class_="banner",
            role="alert",
            id="ledger-alert",
        )
    return ""


def _fact(value: str, label: str) -> str:
    return tag("div", tag("b", esc(value)) + tag("span", esc(label)), class_="fact")


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
        _fact(report["ledger"]["status"], "ledger"),
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


def _participation(report: dict[str, Any]) -> str:
    part = report["participation"]
    grid = _grid_table(part)
    key = tag(
        "p",
        "".join(
            tag("span", esc(s), class_=f"cell-key {s.replace(' ', '-')}") for s in _STATUS_TEXT
        ),
        class_="key",
    )
    count_rows = [
        [esc(name)] + [esc(str(c[s])) for s in _STATUS_TEXT] for name, c in part["counts"].items()
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
        + table(["site", *_STATUS_TEXT], count_rows, numeric=(1, 2, 3, 4))
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


def _utility(report: dict[str, Any]) -> str:
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


def _dl(items: list[tuple[str, str]]) -> str:
    return tag("dl", "".join(tag("dt", esc(k)) + tag("dd", v) for k, v in items), class_="manifest")


def _manifest(report: dict[str, Any]) -> str:
    m = report["manifest"]
    privacy = m.get("privacy") if isinstance(m.get("privacy"), dict) else {}
    legal = m.get("legal_basis") or {}
    legal_html = "<br>".join(
        f"{esc(site)}: {esc(basis or 'not recorded')}" for site, basis in legal.items()
    ) or esc("not recorded")
    secagg = m.get("secure_aggregation")
    items = [
        ("source", esc(m["source"]) + (f" ({esc(m['note'])})" if m.get("note") else "")),
        ("run id", esc(m.get("run_id") or "not recorded")),
        ("purpose", esc(m.get("purpose") or "not recorded")),
        ("legal basis per site", legal_html),
        ("dataset", esc(m.get("dataset") or "not recorded")),
        ("strategy", esc(m.get("strategy") or "not recorded")),
        (
            "secure aggregation",
            esc("not recorded" if secagg is None else ("on" if secagg else "off")),
        ),
        ("code version", tag("span", esc(m.get("code_version") or "not recorded"), class_="hash")),
        (
            "config hash",
            tag("span", esc(m.get("config_hash") or "not recorded"), class_="hash")
            + (
                f' <span class="muted">(of {esc(m["config_hash_of"])})</span>'
                if m.get("config_hash_of")
                else ""
            ),
        ),
        (
            "privacy settings",
            esc(", ".join(f"{k}={v}" for k, v in sorted(privacy.items())) or "not recorded"),
        ),
        ("rounds completed", esc(num(m.get("rounds_completed")))),
        (
            "final model SHA-256",
            tag("span", esc(m.get("final_model_sha256") or "not recorded"), class_="hash"),
        ),
        (
            "model file SHA-256 (now)",
            tag("span", esc(m.get("model_file_sha256") or "no model file"), class_="hash"),
        ),
    ]
    if m.get("started_at"):
        items.insert(
            2,
            (
                "started / finished",
                esc(f"{m['started_at']} / {m.get('finished_at') or 'not finished'}"),
            ),
        )
    return tag("section", tag("h2", "Run manifest") + _dl(items), id="manifest")


def _ledger(report: dict[str, Any]) -> str:
    led = report["ledger"]
    status = led["status"]
    items = [
        ("status", tag("span", esc(status), class_=f"status-{status}")),
        ("result", esc(led["message"])),
    ]
    if led.get("present"):
        used = led["checked_with"]
        items += [
            ("server key", esc("keys/server_signing.pub" if used["server_key"] else "none")),
            ("site keys", esc(", ".join(used["site_keys"]) or "none")),
            ("witness", esc("ledger.witness.json" if used["witness"] else "none")),
        ]
    if status == "intact":
        items += [
            ("entries checked", esc(num(led["entries_checked"]))),
            ("signed heads", esc(num(led["signed_heads"]))),
            ("attestations checked", esc(num(led["attestations_checked"]))),
            ("head", tag("span", esc(f"seq {led['last_seq']}  {led['last_hash']}"), class_="hash")),
        ]
    if status == "tampered":
        items += [
            ("first bad entry", esc(f"seq {led['first_bad_seq']}")),
            ("reason", esc(led["reason"] + (f" ({led['detail']})" if led.get("detail") else ""))),
        ]
    entries = report.get("ledger_entries") or {}
    errors = entries.get("errors") or []
    error_html = (
        tag("h3", "Errors recorded in the ledger")
        + table(
            ["seq", "round", "component", "message"],
            [
                [
                    esc(e["seq"]),
                    esc(num(e.get("round"))),
                    esc(e.get("component")),
                    esc(e.get("message")),
                ]
                for e in errors
            ],
            numeric=(0, 1),
        )
        if errors
        else ""
    )
    note = tag(
        "p",
        esc(
            "Verified when this report was made: every hash and link recomputed, "
            "and every signature checked against the keys listed."
        ),
        class_="muted",
    )
    return tag(
        "section", tag("h2", "Ledger verification") + note + _dl(items) + error_html, id="ledger"
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
        + _participation(report)
        + _utility(report)
        + _manifest(report)
        + _ledger(report)
        + (tag("section", tag("h2", "Notes") + tag("ul", notes)) if notes else "")
    )
    footer = esc(f"fedsafe report ({report['format']}); the same numbers are in {json_name}.")
    return document(title, body, footer=footer)
