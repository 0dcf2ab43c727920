"""Run a ServerApp and a ClientApp (real, or a test's hostile wrapper) in Flower's simulation
engine the way the integration tests need: offline, quiet, two CPUs, one actor per CPU; and
the `fedsafe` command itself, as a user runs it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedsafe.common.flower_env import apply_offline_flower_env

__all__ = ["fedsafe_cli", "run_apps"]


def run_apps(server_app: ServerApp, client_app: ClientApp, *, sites: int) -> None:
    apply_offline_flower_env()
    from flwr.simulation import run_simulation

    from fedsafe.simulations.engine import _quiet_flower

    _quiet_flower()
    backend = {
        "client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "include_dashboard": False, "logging_level": logging.ERROR},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=sites,
            backend_config=backend,  # type: ignore[arg-type]
        )


def fedsafe_cli(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`fedsafe ARGS...` in a fresh process (telemetry off), from `cwd`; never raises on exit."""
    return subprocess.run(
        [sys.executable, "-m", "fedsafe.simulations.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
        cwd=cwd,
        check=False,
    )
