"""The coordinator's access ledger: every allow and refuse, hash-chained and head-signed."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedsafe.common.crypto.certificates import CertificateIdentity
from fedsafe.common.ledger import Ledger
from fedsafe.common.ledger.records import ACCESS_DECISION, ERROR, Entry

__all__ = ["AccessLog", "Decision", "ALLOWED", "REFUSED", "LEDGER_FILE", "WITNESS_FILE"]

ALLOWED, REFUSED = "allowed", "refused"
LEDGER_FILE = "ledger.sqlite"
WITNESS_FILE = "ledger.witness.json"  # where `fedsafe audit verify DIR` looks for it
_TEXT_LIMIT = 500
# Unauthenticated TLS refusals are logged too, but at most this many a minute, so a party
# that cannot even present a certificate cannot grow the ledger without bound.
_TLS_PER_MINUTE = 30


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 3] + "..."


@dataclass(frozen=True)
class Decision:
    """One access decision: who (certificate), what (action, role, target), and the outcome."""

    action: str
    role: str | None
    decision: str
    peer: str
    reason: str
    target: str = ""
    identity: CertificateIdentity | None = None

    def payload(self) -> dict[str, object]:
        """The ledger payload (keys documented in common/ledger/records.py)."""
        return {
            "action": self.action,
            "role": self.role,
            "decision": self.decision,
            "subject": self.identity.subject if self.identity else None,
            "fingerprint": self.identity.fingerprint if self.identity else None,
            "peer": self.peer,
            "target": _clip(self.target),
            "reason": _clip(self.reason),
        }


class AccessLog:
    """Appends each decision and signs the new head at once, so the ledger verifies at every
    moment (`fedsafe audit verify DIR --key server_signing.pub`) and a witness file beside it
    reveals truncation. Thread-safe: the admin endpoint serves requests on threads."""

    def __init__(
        self,
        directory: Path,
        *,
        signing_key_pem: bytes,
        signing_pub_pem: bytes,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ledger = Ledger.open(self.directory / LEDGER_FILE, clock=clock)
        self._key, self._pub = signing_key_pem, signing_pub_pem
        self._clock = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tls_times: deque[float] = deque()
        self._tls_suppressed = 0

    @property
    def ledger_path(self) -> Path:
        """The SQLite file holding the chain."""
        return self.directory / LEDGER_FILE

    def record(self, decision: Decision) -> Entry:
        """Append ``decision`` and a signed head; returns the decision's entry."""
        return self._append(ACCESS_DECISION, decision.payload())

    def record_failure(self, action: str, message: str, *, target: str = "") -> Entry:
        """An allowed action that then failed: an ``error`` entry naming it."""
        return self._append(
            ERROR, {"component": f"access:{action}", "message": _clip(message), "target": target}
        )

    def record_tls_refusal(self, peer: str, reason: str) -> Entry | None:
        """A handshake the federation CA did not vouch for; rate-limited (None when skipped)."""
        now = self._monotonic()
        with self._lock:
            while self._tls_times and now - self._tls_times[0] > 60.0:
                self._tls_times.popleft()
            if len(self._tls_times) >= _TLS_PER_MINUTE:
                self._tls_suppressed += 1
                return None
            self._tls_times.append(now)
            suppressed, self._tls_suppressed = self._tls_suppressed, 0
        payload = Decision("connect", None, REFUSED, peer, f"TLS handshake refused: {reason}")
        data = payload.payload()
        if suppressed:
            data["suppressed_before"] = suppressed
        return self._append(ACCESS_DECISION, data)

    def _append(self, kind: str, payload: dict[str, object]) -> Entry:
        with self._lock:
            at = self._clock()
            entry = self._ledger.append(kind, payload, at_time=at)
            self._ledger.sign_head(
                self._key,
                public_pem=self._pub,
                witness_path=self.directory / WITNESS_FILE,
                at_time=at,
            )
            return entry

    def entries(self) -> list[Entry]:
        """Every entry, in order (tests and `status`)."""
        return list(self._ledger.entries())

    def close(self) -> None:
        """Release the database."""
        self._ledger.close()
