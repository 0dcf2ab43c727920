"""The run's live state: written by the coordinator's thread, read by the endpoint and the file.

Everything a reader sees is a snapshot (plain JSON data) taken under one lock, so a scrape in
the middle of a round never sees half an update. Site names come from peers (a refusal's
reason may name one), so they are cut to a bounded length and the number of sites tracked is
bounded: a hostile peer cannot grow the state, the metrics or the file without limit.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_SITES",
    "MAX_TEXT",
    "OUTCOMES",
    "OVERFLOW_SITE",
    "STATE_FILE",
    "RunState",
    "SiteState",
    "bounded_text",
]

STATE_FILE = "monitor.json"
OUTCOMES = ("trained", "refused", "excluded", "dropped")
MAX_SITES = 512
MAX_TEXT = 240
OVERFLOW_SITE = "_other"  # where sites past MAX_SITES are counted


def bounded_text(value: object, limit: int = MAX_TEXT) -> str:
    """At most `limit` characters of `value` as text (an error or a peer-sent name)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class SiteState:
    """One site as the coordinator last saw it."""

    status: str = "unknown"  # the outcome of its last round: one of OUTCOMES
    last_round: int = 0
    rounds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    epsilon: float | None = None
    cap: float | None = None

    def cap_fraction(self) -> float | None:
        """epsilon / cap, or None when either is unknown (no DP, no report yet)."""
        if self.epsilon is None or not self.cap or not math.isfinite(self.epsilon):
            return None
        return self.epsilon / self.cap


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class RunState:
    """Thread-safe live state of one coordinator run."""

    def __init__(
        self,
        run_id: str,
        *,
        rounds_planned: int,
        round_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.run_id = run_id
        self.rounds_planned = rounds_planned
        self.round_timeout_s = round_timeout_s
        self.status = "starting"
        self.endpoint: str | None = None
        self.round = 0
        self.round_started_at: float | None = None  # wall clock; None between rounds
        self.last_round_seconds: float | None = None
        self.rounds_completed = 0
        self.this_round: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.sites: dict[str, SiteState] = {}
        self.ledger_seq = 0
        self.ledger_hash: str | None = None
        self.ledger_verified: bool | None = None  # None: not checked yet
        self.ledger_problem: str | None = None
        self.last_error: str | None = None
        self.last_error_round: int | None = None
        self.errors = 0
        self.alerts: dict[str, int] = {}
        self.webhook_failures = 0

    # --- writers (the coordinator's thread) ---------------------------------------------

    def _site(self, name: str) -> SiteState:
        name = bounded_text(name, 64)
        if name not in self.sites and len(self.sites) >= MAX_SITES:
            name = OVERFLOW_SITE
        return self.sites.setdefault(name, SiteState())

    def round_started(self, server_round: int) -> None:
        with self._lock:
            self.status = "running"
            self.round = server_round
            self.round_started_at = self._clock()
            self.this_round = dict.fromkeys(OUTCOMES, 0)

    def site_outcome(
        self,
        server_round: int,
        site: str,
        outcome: str,
        *,
        epsilon: float | None = None,
        cap: float | None = None,
    ) -> SiteState:
        """Count one site's outcome this round; returns a copy of the site's state."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r}; known: {', '.join(OUTCOMES)}")
        with self._lock:
            entry = self._site(site)
            entry.status, entry.last_round = outcome, server_round
            entry.rounds[outcome] += 1
            self.this_round[outcome] += 1
            if _finite(epsilon) is not None:
                entry.epsilon = epsilon
            if _finite(cap) is not None:
                entry.cap = cap
            return SiteState(**asdict(entry))

    def round_finished(self, server_round: int, seconds: float) -> None:
        with self._lock:
            self.round = server_round
            self.round_started_at = None
            self.last_round_seconds = seconds
            self.rounds_completed += 1

    def ledger(self, seq: int, head_hash: str | None) -> None:
        with self._lock:
            self.ledger_seq, self.ledger_hash = seq, head_hash

    def ledger_check(self, problem: str | None) -> None:
        with self._lock:
            self.ledger_verified = problem is None
            self.ledger_problem = bounded_text(problem) if problem is not None else None

    def error(self, message: str, server_round: int | None) -> None:
        with self._lock:
            self.errors += 1
            self.last_error, self.last_error_round = bounded_text(message), server_round

    def alert(self, rule: str) -> None:
        with self._lock:
            self.alerts[rule] = self.alerts.get(rule, 0) + 1

    def webhook_failed(self) -> None:
        with self._lock:
            self.webhook_failures += 1

    def set_status(self, status: str, *, endpoint: str | None = None) -> None:
        with self._lock:
            self.status = status
            self.endpoint = endpoint if endpoint is not None else self.endpoint

    # --- readers (any thread) ----------------------------------------------------------

    def round_elapsed(self) -> float | None:
        """Seconds since the current round started, or None between rounds."""
        with self._lock:
            started = self.round_started_at
        return None if started is None else max(0.0, self._clock() - started)

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain JSON data, consistent at one instant."""
        with self._lock:
            now = self._clock()
            sites = {
                name: {**asdict(s), "cap_fraction": s.cap_fraction()}
                for name, s in sorted(self.sites.items())
            }
            started = self.round_started_at
            return {
                "format": "fedsafe-monitor-v1",
                "run_id": self.run_id,
                "status": self.status,
                "endpoint": self.endpoint,
                "updated_at": now,
                "round": self.round,
                "rounds_planned": self.rounds_planned,
                "rounds_completed": self.rounds_completed,
                "round_timeout_s": self.round_timeout_s,
                "round_started_at": started,
                "round_elapsed_s": None if started is None else max(0.0, now - started),
                "last_round_seconds": self.last_round_seconds,
                "this_round": dict(self.this_round),
                "sites": sites,
                "ledger": {
                    "seq": self.ledger_seq,
                    "head_hash": self.ledger_hash,
                    "verified": self.ledger_verified,
                    "problem": self.ledger_problem,
                },
                "last_error": self.last_error,
                "last_error_round": self.last_error_round,
                "errors": self.errors,
                "alerts": dict(sorted(self.alerts.items())),
                "webhook_failures": self.webhook_failures,
            }

    def write(self, run_dir: Path) -> Path:
        """Write the snapshot to `run_dir/monitor.json` atomically (a reader never sees half)."""
        path = run_dir / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.snapshot(), sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path
