"""The alert rules: which run events an operator must hear of, as plain records.

Each rule is a pure function of what the coordinator just saw, so a test pins it without a
run; the monitor writes what they return to the ledger and the webhook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flwr.common.constant import ErrorCode

from fedsafe.server.monitor.state import bounded_text
from fedsafe.server.strategy import MALFORMED_CODE, SILENT_CODE

__all__ = [
    "RULES",
    "Alert",
    "DROP_CODES",
    "epsilon_near_cap",
    "ledger_check_failed",
    "outcome_of",
    "round_overtime",
    "site_failure",
]

RULES = (
    "epsilon_near_cap",
    "site_dropped",
    "site_refused",
    "ledger_check_failed",
    "round_overtime",
)
# Replies the coordinator did not get or could not count: the site is dropped, not refusing.
DROP_CODES = frozenset(
    {SILENT_CODE, MALFORMED_CODE, ErrorCode.NODE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE}
)


@dataclass(frozen=True)
class Alert:
    """One alert: its rule, how bad, what happened, and where."""

    rule: str
    severity: str  # "warning" | "critical"
    message: str
    round: int | None = None
    site: str | None = None

    def payload(self) -> dict[str, Any]:
        """The ledger entry's payload (canonical JSON: no None-valued keys)."""
        body: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity,
            "message": bounded_text(self.message),
        }
        if self.round is not None:
            body["round"] = self.round
        if self.site is not None:
            body["site"] = bounded_text(self.site, 64)
        return body


def outcome_of(code: int) -> str:
    """'dropped' for silence, a lost node or a reply the coordinator refused; else 'refused'."""
    return "dropped" if code in DROP_CODES else "refused"


def epsilon_near_cap(
    server_round: int, site: str, epsilon: float | None, cap: float | None, *, fraction: float
) -> Alert | None:
    """A site past `fraction` of its cap (one more round may exhaust it)."""
    if epsilon is None or cap is None or not (math.isfinite(epsilon) and cap > 0):
        return None
    if epsilon < fraction * cap:
        return None
    severity = "critical" if epsilon >= cap else "warning"
    return Alert(
        "epsilon_near_cap",
        severity,
        f"site {site}: epsilon {epsilon:.4g} is {epsilon / cap:.0%} of its cap {cap:g}",
        server_round,
        site,
    )


def site_failure(server_round: int, site: str, code: int, reason: str) -> Alert:
    """A site that did not take part: dropped (silent, lost, bad reply) or refused."""
    if outcome_of(code) == "dropped":
        return Alert(
            "site_dropped", "warning", f"site {site} dropped: {reason}", server_round, site
        )
    return Alert("site_refused", "warning", f"site {site} refused: {reason}", server_round, site)


def ledger_check_failed(server_round: int | None, problem: str) -> Alert:
    """The run's own ledger no longer verifies: someone edited or cut it."""
    return Alert("ledger_check_failed", "critical", f"ledger check failed: {problem}", server_round)


def round_overtime(server_round: int, elapsed_s: float, timeout_s: float) -> Alert | None:
    """A round running (or that ran) longer than strategy.round_timeout_s."""
    if elapsed_s <= timeout_s:
        return None
    return Alert(
        "round_overtime",
        "warning",
        f"round {server_round} has run {elapsed_s:.1f} s, over strategy.round_timeout_s="
        f"{timeout_s:g}",
        server_round,
    )
