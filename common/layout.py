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
    """A simulated site's data set label. Only a name: the budget is pinned to the rows'
    fingerprint, so another partition of pooled data under this label is refused until
    acknowledged, never a fresh budget."""
    return f"{cfg.dataset.name}/{site}"
