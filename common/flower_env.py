"""Flower runs offline and silent wherever fedsafe starts it: no telemetry, updates or installs."""

from __future__ import annotations

import logging
import os

__all__ = ["OFFLINE_FLOWER_ENV", "apply_offline_flower_env", "quiet_actor_shutdown"]

OFFLINE_FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}


def apply_offline_flower_env() -> None:
    """Force the variables before flwr is imported; a user's setting cannot re-enable them."""
    os.environ.update(OFFLINE_FLOWER_ENV)


def _not_shutdown_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Manually terminating")


def quiet_actor_shutdown() -> None:
    """Drop Flower's "Manually terminating ClientAppActor" warning (one per simulated actor,
    after the last round, at WARNING level and in colour): it says nothing went wrong."""
    flwr_log = logging.getLogger("flwr")
    if _not_shutdown_noise not in flwr_log.filters:
        flwr_log.addFilter(_not_shutdown_noise)
