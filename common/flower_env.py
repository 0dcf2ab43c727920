"""Flower runs offline and silent wherever fedsafe starts it: no telemetry, updates or installs."""

from __future__ import annotations

import os

__all__ = ["OFFLINE_FLOWER_ENV", "apply_offline_flower_env"]

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
