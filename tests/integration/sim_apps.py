"""Run a ServerApp and a ClientApp (real, or a test's hostile wrapper) in Flower's simulation
engine the way the integration tests need: offline, quiet, two CPUs, one actor per CPU."""

from __future__ import annotations

import logging
import warnings

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedsafe.common.flower_env import apply_offline_flower_env

__all__ = ["run_apps"]


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
