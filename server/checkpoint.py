"""A checkpoint after every round: global model, round, strategy state, ledger head, records so far.

One safetensors file (arrays, plus the state as JSON text in its header), signed with the
coordinator's key. Nothing in it executes code when read, and a file someone planted or edited
is refused before any of it is used. Written atomically (temporary file, fsync, rename), so a
kill at any moment leaves either the previous round's checkpoint or this one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from fedsafe.common import crypto
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.errors import FedsafeError, IntegrityError
from fedsafe.common.storage import write_atomic
from fedsafe.server.resume_config import bound_config, bound_config_hash, changed_keys

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "strategy_state",
    "restore_strategy",
    "CHECKPOINT",
    "checkpoint_to_resume",
    "checkpoint_digest",
]

CHECKPOINT = "checkpoint.safetensors"
_FORMAT = "fedsafe-checkpoint-v2"
_DOMAIN = b"fedsafe-checkpoint-v2\x00"
# Flower's FedOpt family keeps its server-optimiser state in these attributes (dict[str, NDArray]).
_STRATEGY_STATE = ("current_arrays", "m_t", "v_t")
_MODEL, _STRATEGY = "model/", "strategy/"


class CheckpointError(FedsafeError):
    """A checkpoint that cannot be used: unreadable, not ours, unsigned or edited."""


@dataclass
class Checkpoint:
    """Everything the coordinator needs to continue after the last completed round.

    ``config`` is the run's bound configuration (``server.resume_config``): a resume with any
    other value is refused. ``finished`` marks the checkpoint written after the last round.
    """

    round: int
    arrays: dict[str, np.ndarray]
    strategy: dict[str, dict[str, np.ndarray] | None]
    ledger_head: tuple[int, str]
    recorder: dict[str, Any]
    compliance: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    finished: bool = False


def strategy_state(strategy: object) -> dict[str, dict[str, np.ndarray] | None]:
    """The server-optimiser arrays a FedOpt strategy holds (empty for FedAvg)."""
    state: dict[str, dict[str, np.ndarray] | None] = {}
    for name in _STRATEGY_STATE:
        if hasattr(strategy, name):
            value = getattr(strategy, name)
            state[name] = None if value is None else {k: np.asarray(v) for k, v in value.items()}
    return state


def restore_strategy(strategy: object, state: dict[str, dict[str, np.ndarray] | None]) -> None:
    for name, value in state.items():
        if name not in _STRATEGY_STATE:
            raise CheckpointError(f"checkpoint names unknown strategy state {name!r}")
        setattr(strategy, name, value)


def _tensors(checkpoint: Checkpoint) -> tuple[dict[str, np.ndarray], dict[str, list[str] | None]]:
    tensors = {_MODEL + k: np.ascontiguousarray(v) for k, v in checkpoint.arrays.items()}
    layout: dict[str, list[str] | None] = {}
    for name, arrays in checkpoint.strategy.items():
        layout[name] = None if arrays is None else list(arrays)
        for key, value in (arrays or {}).items():
            tensors[f"{_STRATEGY}{name}/{key}"] = np.ascontiguousarray(value)
    return tensors, layout


def checkpoint_digest(state_text: str, tensors: dict[str, np.ndarray]) -> bytes:
    """SHA-256 over the state JSON and every array's name, dtype, shape and bytes, in order."""
    h = hashlib.sha256(_DOMAIN)
    h.update(len(state_text.encode()).to_bytes(8, "big") + state_text.encode())
    for name in sorted(tensors):
        value = tensors[name]
        head = json.dumps([name, value.dtype.str, list(value.shape)]).encode()
        h.update(len(head).to_bytes(8, "big") + head + value.tobytes())
    return h.digest()


def save_checkpoint(
    run_dir: Path, checkpoint: Checkpoint, *, private_pem: bytes, public_pem: bytes
) -> Path:
    """Write and sign the checkpoint with the coordinator's key."""
    tensors, layout = _tensors(checkpoint)
    state = {
        "format": _FORMAT,
        "round": checkpoint.round,
        "ledger_head": list(checkpoint.ledger_head),
        "recorder": checkpoint.recorder,
        "compliance": checkpoint.compliance,
        "config": checkpoint.config,
        "finished": checkpoint.finished,
        "strategy": layout,
        "model": list(checkpoint.arrays),  # the model's own order (safetensors sorts names)
    }
    text = json.dumps(state, sort_keys=True)
    signature = crypto.sign(private_pem, checkpoint_digest(text, tensors))
    metadata = {
        "state": text,
        "signer": crypto.public_key_fingerprint(public_pem),
        "signature": signature.hex(),
    }
    return write_atomic(run_dir / CHECKPOINT, save(tensors, metadata=metadata))


def _read(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (OSError, SafetensorError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from None
    return metadata, tensors


def load_checkpoint(run_dir: Path, public_pem: bytes | None) -> Checkpoint | None:
    """The run folder's last checkpoint, verified against the coordinator's own public key.

    None if the run never completed a round. A file not signed by that key (planted, edited,
    or from another coordinator) raises CheckpointError before anything in it is used.
    """
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    if public_pem is None:
        raise CheckpointError(
            f"checkpoint {path} cannot be checked: the coordinator's signing key is missing"
        )
    metadata, tensors = _read(path)
    missing = [k for k in ("state", "signer", "signature") if k not in metadata]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a signed fedsafe checkpoint ({_FORMAT})")
    try:
        signature = bytes.fromhex(metadata["signature"])
        crypto.verify(public_pem, checkpoint_digest(metadata["state"], tensors), signature)
    except (ValueError, IntegrityError):
        raise CheckpointError(
            f"checkpoint {path} is not signed by this coordinator's key "
            f"({crypto.public_key_fingerprint(public_pem)[:16]}...): it was edited, planted or "
            "written by another coordinator; refusing to use it"
        ) from None
    return _decode(path, json.loads(metadata["state"]), tensors)


def _decode(path: Path, state: Any, tensors: dict[str, np.ndarray]) -> Checkpoint:
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"checkpoint {path} is not of format {_FORMAT}")
    strategy: dict[str, dict[str, np.ndarray] | None] = {}
    for name, keys in state["strategy"].items():
        prefix = f"{_STRATEGY}{name}/"
        strategy[name] = None if keys is None else {k: tensors[prefix + k] for k in keys}
    arrays = {k: tensors[_MODEL + k] for k in state["model"]}
    seq, head = state["ledger_head"]
    return Checkpoint(
        round=int(state["round"]),
        arrays=arrays,
        strategy=strategy,
        ledger_head=(int(seq), str(head)),
        recorder=state["recorder"],
        compliance=state["compliance"],
        config=state["config"],
        finished=bool(state["finished"]),
    )


def checkpoint_to_resume(
    cfg: ExperimentConfig, run_dir: Path, public_pem: bytes | None
) -> Checkpoint | None:
    """The checkpoint to continue from; refuses to silently restart, overwrite or alter a run."""
    checkpoint = load_checkpoint(run_dir, public_pem)
    if cfg.resume and checkpoint is None:
        raise FedsafeError(f"resume=true but {run_dir} has no checkpoint: no round completed yet")
    if not cfg.resume and checkpoint is not None:
        raise FedsafeError(
            f"{run_dir} already holds {checkpoint.round} completed round(s); "
            "continue it with resume=true or choose another run_id"
        )
    if checkpoint is None:
        return None
    if checkpoint.finished:
        raise FedsafeError(
            f"run {run_dir.name} finished after round {checkpoint.round}: a finished run cannot "
            "be resumed; start a new run_id"
        )
    changed = changed_keys(checkpoint.config, bound_config(cfg))
    if changed:
        raise FedsafeError(
            f"resume of {run_dir.name} refused: a resume is the same run, but these settings "
            f"differ from the run's: {', '.join(changed)} (run config hash "
            f"{bound_config_hash(checkpoint.config)[:16]}...)"
        )
    if checkpoint.round > cfg.training.rounds:
        raise FedsafeError(
            f"checkpoint is at round {checkpoint.round}, past training.rounds={cfg.training.rounds}"
        )
    return checkpoint
