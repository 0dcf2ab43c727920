"""Where a simulation keeps each simulated site's own files (its budget store and keys)."""

from __future__ import annotations

from pathlib import Path

from common.config import ExperimentConfig

__all__ = ["simulated_site_dir", "coordinator_dir", "dataset_id_for"]


def simulated_site_dir(cfg: ExperimentConfig, site: str, run_id: str) -> Path:
    """`<runs_dir>/sites/<site>`: kept across runs, so budgets accumulate; inside the run
    folder instead when `federation.fresh_budget` asks for new stores."""
    base = Path(cfg.runs_dir)
    if cfg.federation.fresh_budget:
        base = base / run_id
    return base / "sites" / site


def coordinator_dir(cfg: ExperimentConfig) -> Path:
    """`<runs_dir>/coordinator`: the simulated coordinator's long-lived keys."""
    return Path(cfg.runs_dir) / "coordinator"


def dataset_id_for(cfg: ExperimentConfig, site: str) -> str:
    """A simulated site's budget key: its rows. Another split of pooled data is other rows."""
    d = cfg.dataset
    if d.partition == "natural":
        return f"{d.name}/{site}"
    return f"{d.name}/{d.partition}-n{d.num_sites}-a{d.alpha:g}-s{d.seed}/{site}"
