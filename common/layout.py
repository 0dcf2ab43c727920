"""Where a simulation keeps each simulated site's own files (its budget store and keys)."""

from __future__ import annotations

from pathlib import Path

from common.config import ExperimentConfig

__all__ = ["simulated_site_dir", "coordinator_dir"]


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
