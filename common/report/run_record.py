"""Run report sections on the record: the run manifest and the ledger verification result."""

from __future__ import annotations

from typing import Any

from fedsafe.common.report.fmt import esc, num, table, tag

__all__ = ["ledger_section", "manifest_section"]


def _dl(items: list[tuple[str, str]]) -> str:
    return tag("dl", "".join(tag("dt", esc(k)) + tag("dd", v) for k, v in items), class_="manifest")


def manifest_section(report: dict[str, Any]) -> str:
    """What ran, why, on what legal basis, from which code and config, producing which model."""
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


def ledger_section(report: dict[str, Any]) -> str:
    """The verification made for this report: status, keys used, head, recorded errors."""
    led = report["ledger"]
    status = led["status"]
    items = [
        ("status", tag("span", esc(status), class_=f"status-{status}")),
        ("result", esc(led["message"])),
    ]
    if led.get("present"):
        used = led["checked_with"]
        folder = [n for n in ("run folder key", "run folder witness") if used.get(n)]
        items += [
            ("auditor's server key", esc(used.get("server key") or "none")),
            ("pinned fingerprint", esc(used.get("fingerprint") or "none")),
            ("auditor's witness", esc(used.get("witness") or "none")),
            ("site keys", esc(", ".join(used.get("site keys") or []) or "none")),
            ("also found in the run folder", esc(", ".join(folder) or "nothing")),
        ]
    if status in ("intact", "unverifiable") and led.get("consistent"):
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
