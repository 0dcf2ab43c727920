"""Where a run's folder is: named by its run id (resumable) or by its name and start time."""

from __future__ import annotations

import time
from pathlib import Path

from fedsafe.common.config import ExperimentConfig

__all__ = ["new_run_dir"]


def new_run_dir(cfg: ExperimentConfig) -> Path:
    """`runs/<run_id>/` when given (a resumable, named run), else `runs/<name>-<timestamp>/`."""
    if cfg.run_id:
        return Path(cfg.runs_dir) / cfg.run_id
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.runs_dir) / f"{cfg.name}-{stamp}"
