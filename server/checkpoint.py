"""A checkpoint after every round: global model, round, strategy state, ledger head, records so far.

Written atomically (temporary file, fsync, rename), so a kill at any moment leaves either the
previous round's checkpoint or this one, never half of one.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import ExperimentConfig
from common.errors import FedsafeError

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "strategy_state",
    "restore_strategy",
    "CHECKPOINT",
    "checkpoint_to_resume",
]

CHECKPOINT = "checkpoint.pkl"
_FORMAT = 1
# Flower's FedOpt family keeps its server-optimiser state in these attributes.
_STRATEGY_STATE = ("current_arrays", "m_t", "v_t")


@dataclass
class Checkpoint:
    """Everything the coordinator needs to continue after the last completed round."""

    round: int
    arrays: dict[str, np.ndarray]
    strategy: dict[str, Any]
    ledger_head: tuple[int, str]
    recorder: dict[str, Any]
    compliance: dict[str, Any] = field(default_factory=dict)
    format: int = _FORMAT


def strategy_state(strategy: object) -> dict[str, Any]:
    return {name: getattr(strategy, name) for name in _STRATEGY_STATE if hasattr(strategy, name)}


def restore_strategy(strategy: object, state: dict[str, Any]) -> None:
    for name, value in state.items():
        setattr(strategy, name, value)


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(checkpoint, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The last checkpoint of the run folder, or None if the run never completed a round.

    The file is the coordinator's own (pickle): it is only ever read from its own run folder.
    """
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        with path.open("rb") as f:
            checkpoint = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as err:
        raise FedsafeError(f"checkpoint {path} cannot be read: {err}") from None
    if not isinstance(checkpoint, Checkpoint) or checkpoint.format != _FORMAT:
        raise FedsafeError(f"checkpoint {path} is not a fedsafe checkpoint of format {_FORMAT}")
    return checkpoint


def checkpoint_to_resume(cfg: ExperimentConfig, run_dir: Path) -> Checkpoint | None:
    """The checkpoint to continue from; refuses to silently restart or overwrite a run."""
    checkpoint = load_checkpoint(run_dir)
    if cfg.resume and checkpoint is None:
        raise FedsafeError(f"resume=true but {run_dir} has no checkpoint: no round completed yet")
    if not cfg.resume and checkpoint is not None:
        raise FedsafeError(
            f"{run_dir} already holds {checkpoint.round} completed round(s); "
            "continue it with resume=true or choose another run_id"
        )
    if checkpoint is not None and checkpoint.round > cfg.training.rounds:
        raise FedsafeError(
            f"checkpoint is at round {checkpoint.round}, past training.rounds={cfg.training.rounds}"
        )
    return checkpoint
