"""One run's monitor: live state, alert rules, the ledger check, the endpoint and the webhook.

Events come from the coordinator's thread (the recorder calls them); the endpoint, the
webhook sender and the round watchdog run in threads of their own and only read the state or
queue alerts. The ledger is written on the coordinator's thread only, when a round closes and
before its head is signed, so `fedsafe audit verify` keeps passing on the run folder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedsafe.common.config import MonitoringConfig
from fedsafe.common.ledger import Ledger, records, verify_ledger
from fedsafe.server.monitor import alerts
from fedsafe.server.monitor.alerts import Alert
from fedsafe.server.monitor.metrics import MetricsServer
from fedsafe.server.monitor.state import RunState
from fedsafe.server.monitor.webhook import WebhookSender

__all__ = ["Monitor"]

log = logging.getLogger("fedsafe.server")


class Monitor:
    """Watches one run; every public method is safe to call and never raises into the run."""

    def __init__(
        self,
        cfg: MonitoringConfig,
        state: RunState,
        *,
        run_dir: Path,
        ledger: Ledger,
        server_public_pem: bytes | None = None,
        witness: Path | None = None,
        cap_for: Callable[[str], float | None] = lambda _site: None,
        watchdog_interval_s: float = 0.5,
    ) -> None:
        self.cfg, self.state, self.run_dir = cfg, state, run_dir
        self._ledger, self._public, self._witness = ledger, server_public_pem, witness
        self._cap_for = cap_for
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []  # alerts the ledger has yet to get
        self._failures: list[str] = []  # webhook failures the ledger has yet to get
        self._near_cap: set[str] = set()
        self._overtime_round: int | None = None
        self._ledger_problem: str | None = None
        self._seen_seq = 0
        self._witnessed = False
        self._server: MetricsServer | None = None
        self._webhook: WebhookSender | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._interval = watchdog_interval_s

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Monitor:
        """Serve the endpoint, start the webhook sender and the round watchdog."""
        self._server = MetricsServer.start(self.state, host=self.cfg.host, port=self.cfg.port)
        if self.cfg.webhook_url is not None:
            self._webhook = WebhookSender(
                self.cfg.webhook_url,
                timeout_s=self.cfg.webhook_timeout_s,
                on_failure=self._webhook_failed,
            )
        self._watchdog = threading.Thread(target=self._watch, name="fedsafe-watchdog", daemon=True)
        self._watchdog.start()
        self.state.set_status("starting", endpoint=self._server.url)
        self._refresh()
        return self

    @property
    def url(self) -> str | None:
        return self._server.url if self._server is not None else None

    def close(self, status: str = "finished") -> None:
        """Stop the watchdog, the sender (bounded wait) and the endpoint; write the last state.
        A second call does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(5.0)
        if self._webhook is not None and not self._webhook.close(self.cfg.webhook_timeout_s + 1):
            log.warning("monitoring: the webhook did not take the last alerts in time")
        self._guard(self._refresh)
        self.state.set_status(status)
        self._guard(self._write_state)
        if self._server is not None:
            self._server.stop()
            self._server = None

    # --- events from the coordinator's thread ---------------------------------------------

    def round_started(self, server_round: int) -> None:
        self.state.round_started(server_round)
        self._guard(self._refresh)
        self._guard(self._write_state)

    def site_trained(self, server_round: int, site: str, epsilon: float | None) -> None:
        cap = self._guard(lambda: self._cap_for(site))
        entry = self.state.site_outcome(server_round, site, "trained", epsilon=epsilon, cap=cap)
        if site not in self._near_cap:
            fraction = self.cfg.epsilon_alert_fraction
            alert = alerts.epsilon_near_cap(
                server_round, site, entry.epsilon, entry.cap, fraction=fraction
            )
            if alert is not None:
                self._near_cap.add(site)
                self._raise(alert)
        self._guard(self._write_state)

    def site_failed(self, server_round: int, site: str, code: int, reason: str) -> None:
        self.state.site_outcome(server_round, site, alerts.outcome_of(code))
        self._raise(alerts.site_failure(server_round, site, code, reason))
        self._guard(self._write_state)

    def site_excluded(self, server_round: int, site: str) -> None:
        self.state.site_outcome(server_round, site, "excluded")
        self._guard(self._write_state)

    def round_finished(self, server_round: int, seconds: float) -> None:
        """Close the round: overtime, the ledger check, then alerts into the ledger."""
        self.state.round_finished(server_round, seconds)
        with self._lock:
            late = self._overtime_round != server_round
            self._overtime_round = server_round
        if late:
            overtime = alerts.round_overtime(server_round, seconds, self.state.round_timeout_s)
            if overtime is not None:
                self._raise(overtime)
        if self.cfg.verify_ledger:
            self._guard(lambda: self._check_ledger(server_round))
        self.flush(server_round)
        self._guard(self._refresh)
        self._guard(self._write_state)

    def flush(self, server_round: int | None = None) -> None:
        """Write pending alerts (and a webhook failure summary) to the ledger, in one batch."""
        with self._lock:
            pending, self._pending = self._pending, []
            failures, self._failures = self._failures, []
        items = [(records.ALERT, payload) for payload in pending]
        if failures:
            message = f"{len(failures)} webhook delivery failure(s); last: {failures[-1]}"
            error: dict[str, Any] = {"component": "monitor", "message": message[:400]}
            if server_round is not None:
                error["round"] = server_round
            items.append((records.ERROR, error))
        if items:
            self._guard(lambda: self._ledger.append_many(items))

    # --- internals ------------------------------------------------------------------------

    def _guard(self, action: Callable[[], Any]) -> Any:
        """Run `action`; a monitoring failure is logged, never raised into the run."""
        try:
            return action()
        except Exception:  # noqa: BLE001 - the monitor observes; it must not end the run
            log.exception("monitoring: %s failed", getattr(action, "__name__", "an action"))
            return None

    def _raise(self, alert: Alert) -> None:
        """Count, log and queue `alert` for the ledger; hand it to the webhook now."""
        payload = alert.payload()
        self.state.alert(alert.rule)
        log.warning("ALERT %s (%s): %s", alert.rule, alert.severity, payload["message"])
        with self._lock:
            self._pending.append(payload)
        if self._webhook is not None:
            self._webhook.send({"run_id": self.state.run_id, **payload})

    def _webhook_failed(self, message: str) -> None:
        self.state.webhook_failed()
        with self._lock:
            self._failures.append(message)

    def _watch(self) -> None:
        """Raise round_overtime while a round is still running past its timeout."""
        while not self._stop.wait(self._interval):
            elapsed = self.state.round_elapsed()
            if elapsed is None:
                continue
            server_round = self.state.round
            alert = alerts.round_overtime(server_round, elapsed, self.state.round_timeout_s)
            with self._lock:
                if alert is None or self._overtime_round == server_round:
                    continue
                self._overtime_round = server_round
            self._raise(alert)

    def _check_ledger(self, server_round: int) -> None:
        """Verify the chain, head signatures and witness so far; alert when it stops verifying."""
        witness = self._witness if self._witness is not None and self._witness.exists() else None
        problem: str | None = None
        if self._witnessed and witness is None:
            problem = f"the witness {self._witness} is gone (a cut ledger would pass without it)"
        try:
            verify_ledger(
                self._ledger,
                server_public_pem=self._public,
                witness=witness,
                require_signed_tail=False,  # this round's entries are signed after this check
            )
        except Exception as err:  # noqa: BLE001 - any failure to verify is the alert
            problem = f"{type(err).__name__}: {err}"
        self._witnessed = self._witnessed or witness is not None
        self.state.ledger_check(problem)
        if problem is not None and problem != self._ledger_problem:
            self._raise(alerts.ledger_check_failed(server_round, problem))
        self._ledger_problem = problem

    def _refresh(self) -> None:
        """The ledger head, and the last error it recorded since the previous look."""
        head = self._ledger.head()
        if head is None:
            return
        for entry in self._ledger.entries(since_seq=self._seen_seq):
            if entry.kind == records.ERROR:
                at = entry.payload.get("round")
                message = str(entry.payload.get("message", ""))
                self.state.error(message, at if isinstance(at, int) else None)
            self._seen_seq = entry.seq
        self.state.ledger(head.seq, head.hash)

    def _write_state(self) -> None:
        self.state.write(self.run_dir)
