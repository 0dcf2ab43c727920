"""The run state as Prometheus text, served on loopback from a registry of this run's own.

A private `CollectorRegistry` per run (never the process-wide default) keeps two runs in one
process (a sweep, the tests) from mixing their numbers; the collector reads one snapshot per
scrape, so every metric in a scrape describes the same instant. prometheus_client escapes
label values (backslash, quote, newline), so a peer-sent site name cannot forge a line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from fedsafe.common.errors import FedsafeError
from fedsafe.server.monitor.state import OUTCOMES, RunState

__all__ = ["MetricsServer", "MonitorError", "StateCollector", "registry_for"]

log = logging.getLogger("fedsafe.server")


class MonitorError(FedsafeError):
    """The monitor could not start (its port is taken, or its address is not loopback)."""


class StateCollector(Collector):
    """Turns a `RunState` snapshot into Prometheus metric families at each scrape."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily]:
        s = self.state.snapshot()
        info = InfoMetricFamily("fedsafe_run", "The run this coordinator is running")
        info.add_metric([], {"run_id": s["run_id"], "status": s["status"]})
        yield info
        yield _gauge("fedsafe_round", "Current (or last) round number", s["round"])
        yield _gauge(
            "fedsafe_rounds_planned", "Rounds the run was configured for", s["rounds_planned"]
        )
        yield _gauge("fedsafe_rounds_completed", "Rounds finished so far", s["rounds_completed"])
        yield _gauge(
            "fedsafe_round_timeout_seconds", "strategy.round_timeout_s", s["round_timeout_s"]
        )
        if s["round_elapsed_s"] is not None:
            yield _gauge(
                "fedsafe_round_elapsed_seconds",
                "Seconds into the current round",
                s["round_elapsed_s"],
            )
        if s["last_round_seconds"] is not None:
            yield _gauge(
                "fedsafe_last_round_seconds",
                "Duration of the last finished round",
                s["last_round_seconds"],
            )
        this_round = GaugeMetricFamily(
            "fedsafe_round_sites", "Sites per outcome in the current round", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            this_round.add_metric([outcome], s["this_round"][outcome])
        yield this_round
        yield from _site_families(s["sites"])
        ledger = s["ledger"]
        yield _gauge("fedsafe_ledger_head_seq", "Sequence number of the ledger head", ledger["seq"])
        if ledger["head_hash"]:
            head = InfoMetricFamily("fedsafe_ledger_head", "Hash of the ledger head")
            head.add_metric([], {"hash": ledger["head_hash"]})
            yield head
        if ledger["verified"] is not None:
            yield _gauge(
                "fedsafe_ledger_verified",
                "1 if the last ledger check passed, else 0",
                int(ledger["verified"]),
            )
        errors = CounterMetricFamily("fedsafe_errors", "Errors the ledger recorded in this run")
        errors.add_metric([], s["errors"])
        yield errors
        if s["last_error"] is not None:
            last = InfoMetricFamily("fedsafe_last_error", "The last error the ledger recorded")
            round_text = "" if s["last_error_round"] is None else str(s["last_error_round"])
            last.add_metric([], {"message": s["last_error"], "round": round_text})
            yield last
        alerts = CounterMetricFamily("fedsafe_alerts", "Alerts raised, by rule", labels=["rule"])
        for rule, count in s["alerts"].items():
            alerts.add_metric([rule], count)
        yield alerts
        failures = CounterMetricFamily(
            "fedsafe_webhook_failures", "Alerts the webhook did not take"
        )
        failures.add_metric([], s["webhook_failures"])
        yield failures


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _site_families(
    sites: dict[str, dict[str, object]],
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    rounds = CounterMetricFamily(
        "fedsafe_site_rounds", "Rounds per site and outcome", labels=["site", "outcome"]
    )
    epsilon = GaugeMetricFamily(
        "fedsafe_site_epsilon", "Site's cumulative epsilon, as it attested", labels=["site"]
    )
    cap = GaugeMetricFamily(
        "fedsafe_site_epsilon_cap", "Site's cap on its epsilon", labels=["site"]
    )
    used = GaugeMetricFamily("fedsafe_site_epsilon_cap_fraction", "epsilon / cap", labels=["site"])
    for name, site in sites.items():
        counts = site["rounds"]
        assert isinstance(counts, dict)
        for outcome in OUTCOMES:
            rounds.add_metric([name, outcome], counts[outcome])
        for family, key in ((epsilon, "epsilon"), (cap, "cap"), (used, "cap_fraction")):
            value = site[key]
            if isinstance(value, int | float):
                family.add_metric([name], value)
    yield from (rounds, epsilon, cap, used)


def registry_for(state: RunState) -> CollectorRegistry:
    """A registry of this run's own holding only its state collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state))
    return registry


class MetricsServer:
    """prometheus_client's HTTP server on a loopback address, in its own thread, stoppable."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd, self._thread = httpd, thread

    @classmethod
    def start(cls, state: RunState, *, host: str, port: int) -> MetricsServer:
        """Serve `state` on host:port (0: any free port); MonitorError if it cannot bind."""
        try:
            httpd, thread = start_http_server(port, addr=host, registry=registry_for(state))
        except OSError as err:
            raise MonitorError(
                f"monitoring: cannot serve metrics on {host}:{port} ({err}); set "
                "monitoring.port to a free port, or 0 for any"
            ) from None
        server = cls(httpd, thread)
        log.info("monitoring: Prometheus metrics on %s (loopback only)", server.url)
        return server

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/metrics"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and release the port (bounded wait for the serving thread)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout_s)
