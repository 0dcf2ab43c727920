"""The coordinator's live view: a loopback Prometheus endpoint, alert rules and a webhook."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from fedsafe.common.errors import ConfigError

__all__ = ["MonitoringConfig"]

_MAX_WEBHOOK_TIMEOUT_S = 30.0


def _is_loopback(host: str) -> bool:
    """An IP literal on the loopback net; a name (even `localhost`) is whatever the resolver
    says, so it is refused rather than trusted."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MonitoringConfig:
    """Off by default. When on, the coordinator serves its run state (round, sites trained,
    refused, excluded and dropped, each site's epsilon against its cap, the ledger head, the
    last error) as Prometheus text on `host:port`, writes `monitor.json` in the run folder for
    `fedsafe server status --watch`, and raises alerts into the ledger and, if set, a webhook.

    The endpoint has no authentication, so it binds loopback only: a non-loopback `host` is
    refused (put a reverse proxy or an SSH tunnel in front of it instead). `port` 0 lets the
    system pick a free port; the one taken is in `monitor.json` and the log.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    webhook_url: str | None = None  # http(s); alerts are POSTed to it as JSON
    webhook_timeout_s: float = 2.0
    epsilon_alert_fraction: float = 0.8  # alert once a site's epsilon passes this share of its cap
    verify_ledger: bool = True  # re-verify the ledger chain at every round's end

    def __post_init__(self) -> None:
        if not _is_loopback(self.host):
            raise ConfigError(
                "monitoring.host",
                self.host,
                "a loopback IP address (127.0.0.1 or ::1): the endpoint is unauthenticated; "
                "reach it from elsewhere through an SSH tunnel or a proxy",
            )
        if isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise ConfigError("monitoring.port", self.port, "an integer in [0, 65535] (0: any)")
        if self.webhook_url is not None:
            parts = urlsplit(self.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    "monitoring.webhook_url",
                    self.webhook_url,
                    "an http:// or https:// URL with a host, or null",
                )
        timeout = self.webhook_timeout_s
        if not (math.isfinite(timeout) and 0 < timeout <= _MAX_WEBHOOK_TIMEOUT_S):
            raise ConfigError(
                "monitoring.webhook_timeout_s",
                timeout,
                f"a finite number in (0, {_MAX_WEBHOOK_TIMEOUT_S:g}] seconds",
            )
        fraction = self.epsilon_alert_fraction
        if not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise ConfigError("monitoring.epsilon_alert_fraction", fraction, "a number in (0, 1]")
