"""What a simulation asks Ray for: CPUs per site and, where CUDA is present, a share of the GPUs.

Ray hides every GPU from an actor that asked for none (it sets CUDA_VISIBLE_DEVICES to ""), so
`training.device=auto` alone would train on the CPU on a GPU machine: a site must be given a
GPU share for `auto` to find CUDA. Every conflict is refused here, before Ray starts, naming the
setting, rather than as a site's failure in round 1.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fedsafe.common.config import ExperimentConfig
from fedsafe.common.errors import ConfigError

__all__ = ["backend_config", "cuda_devices", "gpus_per_site"]

_RAY_GRAIN = 1e-4  # Ray's smallest fraction of a resource


def cuda_devices() -> int:
    """CUDA devices this process sees (0 on a CPU-only torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpus_per_site(cfg: ExperimentConfig, parallel: int, cuda: int) -> float:
    """The GPUs each site's actor holds: `federation.gpus_per_site` checked against the
    machine, or (auto) a share that lets `parallel` sites train at once, at most one GPU each."""
    device, asked = cfg.training.device, cfg.federation.gpus_per_site
    if device.startswith("cuda") and cuda == 0:
        raise ConfigError(
            "training.device",
            device,
            "a device this machine has: torch sees no CUDA device here; use auto or cpu",
        )
    if asked is None:
        if device == "cpu" or cuda == 0:
            return 0.0
        share = min(1.0, cuda / parallel)
        return max(_RAY_GRAIN, math.floor(share / _RAY_GRAIN) * _RAY_GRAIN)
    if device == "cpu" and asked > 0:
        raise ConfigError(
            "federation.gpus_per_site",
            asked,
            "0 (or null) with training.device=cpu: the sites would hold GPUs they never use",
        )
    if device.startswith("cuda") and asked == 0:
        raise ConfigError(
            "federation.gpus_per_site",
            asked,
            f"more than 0 with training.device={device}: Ray hides the GPUs from a site given none",
        )
    if asked > cuda:
        raise ConfigError(
            "federation.gpus_per_site",
            asked,
            f"at most the {cuda} CUDA device(s) this machine has (Ray could not place a site)",
        )
    if asked > 1 and not float(asked).is_integer():
        raise ConfigError(
            "federation.gpus_per_site", asked, "a fraction below 1 or a whole number (Ray's rule)"
        )
    return float(asked)


def backend_config(
    cfg: ExperimentConfig, n_sites: int, *, cuda: int | None = None
) -> dict[str, Any]:
    """Flower's Ray backend config for `n_sites` sites; `cuda` is the machine's CUDA device
    count (looked up when None)."""
    parallel = max(1, min(cfg.federation.max_parallel_sites, n_sites))
    if cuda is None:  # a CPU run never touches the CUDA driver
        cuda = 0 if cfg.training.device == "cpu" else cuda_devices()
    devices = cuda
    gpus = gpus_per_site(cfg, parallel, devices)
    return {
        "client_resources": {"num_cpus": cfg.federation.cpus_per_site, "num_gpus": gpus},
        "init_args": {
            "num_cpus": parallel * cfg.federation.cpus_per_site,
            "num_gpus": devices if gpus > 0 else 0,
            "include_dashboard": False,
            "log_to_driver": True,
            "logging_level": logging.ERROR,
        },
    }
