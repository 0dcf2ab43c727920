"""One federated run on the coordinator: initial model, strategy rounds, final model and summary."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from common.config import ExperimentConfig
from common.data import dataset_info
from common.models import model_for
from server.recorder import RunRecorder
from server.strategy import RecordingStrategy, build_strategy

__all__ = ["run_federation", "save_model"]

log = logging.getLogger("fedsafe.server")


def save_model(state: dict[str, torch.Tensor], path: Path) -> str:
    """Save the model and return the SHA-256 of the file's bytes, the hash the ledger quotes."""
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_federation(grid: Grid, cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """Run all rounds; the server sees model shapes and scalar metrics, never a data row."""
    info = dataset_info(cfg.dataset.name, cfg.dataset)
    model = model_for(cfg.model, info, seed=cfg.seed)
    recorder = RunRecorder(run_dir, cfg)
    strategy = RecordingStrategy(build_strategy(cfg.strategy), recorder, min_sites=cfg.strategy.min_sites)
    log.info("run %s: %s, %d rounds, strategy %s, run folder %s", cfg.name, info.description, cfg.training.rounds, cfg.strategy.name, run_dir)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.training.rounds,
        timeout=cfg.strategy.round_timeout_s,
        train_config=ConfigRecord(),
        evaluate_config=ConfigRecord(),
    )
    final = result.arrays if len(result.arrays) else ArrayRecord(model.state_dict())
    path = run_dir / "model.pt"
    sha = save_model(final.to_torch_state_dict(), path)
    log.info("final model %s sha256 %s", path, sha)
    return recorder.finish(model_path=path, model_sha256=sha)
