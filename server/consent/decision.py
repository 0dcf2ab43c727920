"""What the registry answers: a site's consent decision for a round, and a stored entry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fedsafe.common.consent import SignedConsent, Withdrawal

__all__ = ["ConsentDecision", "ConsentEntry", "aware"]


@dataclass(frozen=True)
class ConsentDecision:
    """Whether ``site`` may take part this round, and a reason a compliance officer can read.

    ``code`` is the machine-readable reason: granted, no_record, invalid_signature,
    not_yet_valid, expired, withdrawn, purpose, jurisdiction. ``legal_basis`` is the decided
    record's, read from its signed text (None where there is no record or its signature
    fails: an unverified basis is never recorded as the one relied on).
    """

    site: str
    allowed: bool
    reason: str
    record_id: str | None
    code: str = ""
    legal_basis: str | None = None

    def ledger_payload(self, round_number: int) -> dict[str, Any]:
        """Payload of a ``consent_decision`` ledger entry (see common.ledger.records)."""
        if self.allowed:
            decision = "granted"
        elif self.code == "withdrawn":
            decision = "withdrawn"
        else:
            decision = "refused"
        return {
            "site": self.site,
            "round": round_number,
            "decision": decision,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ConsentEntry:
    """A stored grant and, if the site withdrew it, the withdrawal (as stored, not re-verified)."""

    signed: SignedConsent
    withdrawal: Withdrawal | None


def aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (naive datetimes are ambiguous)")
    return value.astimezone(UTC)
