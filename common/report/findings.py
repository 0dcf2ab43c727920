"""The summary at the top of a run report: what a data protection officer must see first."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["NEAR_CAP", "findings", "site_findings", "worst_first"]

NEAR_CAP = 0.8  # a site at or above this fraction of its cap is flagged at the top
_SAME = 1e-9  # tolerance when comparing one number from two sources
_ORDER = {"bad": 0, "warn": 1, "info": 2, "ok": 3}


def worst_first(items: list[dict[str, str]]) -> list[dict[str, str]]:
    """Problems first, then what needs attention, notes, and what is fine (stable within)."""
    return sorted(items, key=lambda f: _ORDER.get(f["level"], 9))


def _differs(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and not math.isclose(a, b, rel_tol=_SAME, abs_tol=_SAME)


def _finding(level: str, text: str) -> dict[str, str]:
    return {"level": level, "text": text}


def _ledger_finding(ledger: dict[str, Any]) -> dict[str, str]:
    """The ledger's state, first: every ledger-derived figure depends on it."""
    status = ledger["status"]
    if status == "tampered":
        bad = ledger.get("first_bad_entry") or {}
        kind = f" ({bad['kind']} at {bad['time']})" if bad else ""
        detail = f" ({ledger['detail']})" if ledger.get("detail") else ""
        return _finding(
            "bad",
            f"LEDGER TAMPERED: first bad entry is seq {ledger['first_bad_seq']}{kind}: "
            f"{ledger['reason']}{detail}. Ledger-derived figures below cannot be trusted.",
        )
    if status == "missing":
        return _finding(
            "bad",
            f"LEDGER MISSING: {ledger['message']}. Nothing in this report can be checked "
            "against it.",
        )
    if status == "unverifiable":
        return _finding("bad", f"Ledger unverifiable: {ledger['message']}.")
    if status == "intact":
        used = ledger["checked_with"]
        scope = ", ".join(
            text
            for text, on in (
                ("the auditor's server key", used.get("server key")),
                ("the pinned fingerprint", used.get("fingerprint")),
                (f"{len(used.get('site keys') or [])} site keys", used.get("site keys")),
                ("the auditor's witness", used.get("witness")),
            )
            if on
        )
        return _finding("ok", f"Ledger intact: {ledger['message']} ({scope}).")
    return _finding(
        "warn",
        "No ledger in this run folder: the manifest comes from summary.json, which is not "
        "tamper-evident.",
    )


def _site_findings_of_run(name: str, site: dict[str, Any]) -> list[dict[str, str]]:
    """One site in a run: its cap, its refusals and exclusions, its noise, its epsilon."""
    out: list[dict[str, str]] = []
    frac = site["cap_fraction"]
    spend = f"epsilon {site['final_epsilon']:.3f} of {site['cap']:g} ({frac:.0%})" if frac else ""
    if frac is not None and frac >= 1:
        out.append(_finding("bad", f"{name} reached its privacy cap: {spend}."))
    elif frac is not None and frac >= NEAR_CAP:
        out.append(_finding("warn", f"{name} is near its privacy cap: {spend}."))
    if site["refusals"]:
        own = sorted({r["round"] for r in site["refusals"] if r.get("round") is not None})
        out.append(
            _finding(
                "warn",
                f"{name} refused {len(site['refusals'])} round(s) under its own policy: "
                f"round(s) {', '.join(map(str, own)) or 'unknown'}.",
            )
        )
    for c in site["consent_refusals"]:
        out.append(
            _finding(
                "warn",
                f"{name} was excluded from round {c.get('round')}: consent "
                f"{c.get('decision')} ({c.get('reason')}).",
            )
        )
    if site.get("randomness") not in (None, "os-csprng"):
        out.append(
            _finding(
                "bad",
                f"NOT PRIVATE: {name} drew its DP noise from '{site['randomness']}' (a "
                "test-only reproducible source): its updates carry no differential-privacy "
                "guarantee.",
            )
        )
    if _differs(site["final_epsilon"], site["attested_final_epsilon"]):
        out.append(
            _finding(
                "bad",
                f"{name}: summary.json says epsilon {site['final_epsilon']:.6g}, the site "
                f"attested {site['attested_final_epsilon']:.6g} in the ledger.",
            )
        )
    return out


def _federation_findings(
    report: dict[str, Any], so_far: list[dict[str, str]]
) -> list[dict[str, str]]:
    """Across sites: release policies, refusals at all, caps at all."""
    out: list[dict[str, str]] = []
    sites = report["sites"]
    policies = {n: s.get("release_policy") for n, s in sites.items()}
    if any(policies.values()):
        shown = ", ".join(f"{n} {p or 'unknown'}" for n, p in sorted(policies.items()))
        out.append(
            _finding(
                "info",
                f"Evaluation metrics released under each site's own policy: {shown} (exact "
                "and rounded are disclosures a site chose; dp is charged to its budget; off "
                "sends none).",
            )
        )
    if sites and not any(s["refusals"] or s["consent_refusals"] for s in sites.values()):
        out.append(_finding("ok", "No site refused a round."))
    caps = [s["cap"] for s in sites.values() if s["cap"] is not None]
    if sites and not caps:
        out.append(
            _finding(
                "info",
                "summary.json records no per-site epsilon cap: closeness to a cap cannot be "
                "judged here.",
            )
        )
    elif caps and not any(f["level"] in ("bad", "warn") and "cap" in f["text"] for f in so_far):
        out.append(_finding("ok", f"No site reached {NEAR_CAP:.0%} of its cap."))
    return out


def _run_findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """The run as a whole: dropouts, the model file against its recorded hash, an early stop."""
    out: list[dict[str, str]] = []
    dropped = report["participation"]["dropouts"]
    if dropped:
        out.append(_finding("warn", f"{len(dropped)} dropout(s) recorded in the ledger."))
    manifest = report["manifest"]
    recorded, on_disk = manifest.get("final_model_sha256"), manifest.get("model_file_sha256")
    if recorded and on_disk and recorded != on_disk:
        out.append(
            _finding(
                "bad",
                "The model file in this folder does not match the final model hash on record.",
            )
        )
    stop = report["run"].get("stopped_early")
    if stop:
        out.append(
            _finding(
                "warn",
                f"Training stopped early in round {stop.get('round')}: {stop.get('reason')}",
            )
        )
    return out


def findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """The summary at the top: each finding has a level (bad, warn, ok, info) and a sentence."""
    out = [_ledger_finding(report["ledger"])]
    if not report["privacy"].get("enabled", True):
        out.append(
            _finding(
                "bad",
                "Differential privacy was OFF in this run: the sites' updates carry no formal "
                "privacy guarantee.",
            )
        )
    for name, site in report["sites"].items():
        out += _site_findings_of_run(name, site)
    out += _federation_findings(report, out)
    out += _run_findings(report)
    return worst_first(out)


def site_findings(report: dict[str, Any]) -> list[dict[str, str]]:
    """Top of a site report: per dataset, how close to the cap, refusals, unfinished rounds."""
    out: list[dict[str, str]] = []
    if not report["datasets"]:
        out.append({"level": "info", "text": "The store holds no charges or refusals yet."})
    for ds in report["datasets"]:
        name, eps, cap = ds["dataset_id"], ds["epsilon"], ds["cap"]
        frac = ds["cap_fraction"]
        eps_text = eps if isinstance(eps, str) else f"{eps:.3f}"
        if isinstance(frac, float) and frac >= 1:
            out.append(
                {
                    "level": "bad",
                    "text": f"{name}: epsilon {eps_text} has reached the "
                    f"cap {cap:g} ({frac:.0%}); further rounds will be refused.",
                }
            )
        elif isinstance(frac, float) and frac >= NEAR_CAP:
            out.append(
                {
                    "level": "warn",
                    "text": f"{name}: epsilon {eps_text} is near the cap {cap:g} ({frac:.0%}).",
                }
            )
        elif isinstance(frac, float):
            out.append(
                {
                    "level": "ok",
                    "text": f"{name}: epsilon {eps_text} of cap {cap:g} "
                    f"({frac:.0%}) over {len(ds['runs'])} run(s).",
                }
            )
        else:
            out.append(
                {
                    "level": "info",
                    "text": f"{name}: epsilon {eps_text} over "
                    f"{len(ds['runs'])} run(s); no cap known to this report (pass --cap).",
                }
            )
        if ds["refusals"]:
            out.append({"level": "warn", "text": f"{name}: {ds['refusals']} round(s) refused."})
        if ds["reserved"]:
            out.append(
                {
                    "level": "warn",
                    "text": f"{name}: {ds['reserved']} round(s) still "
                    "'reserved' (a crash mid-round), counted at their planned steps.",
                }
            )
    return worst_first(out)
