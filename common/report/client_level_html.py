"""The report's client-level DP section: one site's whole contribution, per release."""

from __future__ import annotations

from typing import Any

from fedsafe.common.report.fmt import esc, num, table, tag

__all__ = ["client_level_section"]


def client_level_section(report: dict[str, Any]) -> str:
    """Empty unless the run had client-level DP; then its figures from summary and ledger."""
    c = report.get("client_level")
    if not c:
        return ""
    where = (
        "the coordinator" if c.get("mode") == "central" else "the sites, under secure aggregation"
    )
    rows = [
        [
            esc(num(a.get("round"))),
            esc(", ".join(a.get("sites") or [])),
            esc(num((a.get("client_level") or {}).get("noise_std"))),
            esc(num((a.get("client_level") or {}).get("epsilon"))),
        ]
        for a in (report.get("ledger_entries") or {}).get("aggregated") or []
    ]
    intro = (
        f"Client-level DP ({c.get('mode')}): each site's update clipped to L2 norm "
        f"{num(c.get('clipping_norm'))}, Gaussian noise of multiplier "
        f"{num(c.get('noise_multiplier'))} on the sum, added by {where}. After "
        f"{c.get('releases')} release(s): epsilon {num(c.get('epsilon'))} at delta "
        f"{num(c.get('delta'))} ({c.get('accountant')}; {c.get('sampling')}); planned "
        f"{num(c.get('epsilon_planned'))} after {c.get('planned_rounds')} rounds, cap "
        f"{num(c.get('max_epsilon'), none='none')}. This bounds what a released model says "
        "about one site; the per-site figures above bound what it says about one record."
    )
    return tag(
        "section",
        tag("h2", "Client-level privacy")
        + tag("p", esc(intro))
        + table(
            ["round", "sites in the release", "noise std (mean)", "ε after"],
            rows,
            numeric=(0, 2, 3),
        ),
        id="client-level",
    )
