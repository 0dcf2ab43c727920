"""Checkpoints as whoever can write the run folder would attack them, and resume as the same run."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save

from fedsafe.common import crypto
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import FedsafeError
from fedsafe.server.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    CheckpointError,
    checkpoint_to_resume,
    load_checkpoint,
    restore_strategy,
    save_checkpoint,
    strategy_state,
)
from fedsafe.server.resume_config import bound_config, changed_keys

Keys = tuple[bytes, bytes]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return crypto.generate_signing_key()


def _cfg(tmp_path: Path, **sections: object) -> ExperimentConfig:
    data: dict[str, object] = {"runs_dir": str(tmp_path), "run_id": "r1", "resume": True}
    return from_dict(ExperimentConfig, data | sections)


def _checkpoint(cfg: ExperimentConfig, *, finished: bool = False) -> Checkpoint:
    return Checkpoint(
        round=2,
        arrays={  # not in sorted order: the model's order must survive
            "fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
            "fc.bias": np.zeros(2, dtype=np.float32),
        },
        strategy={"m_t": {"fc.weight": np.ones((2, 3))}, "v_t": None},
        ledger_head=(7, "ab" * 32),
        recorder={"sites": {"cleveland": {"steps": 3}}, "rounds": [{"loss": float("nan")}]},
        compliance={"decisions": [{"site": "cleveland"}], "attestations": []},
        config=bound_config(cfg),
        finished=finished,
    )


def _save(run: Path, checkpoint: Checkpoint, keys: Keys) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(run, checkpoint, private_pem=keys[0], public_pem=keys[1])


def test_round_trip_keeps_arrays_strategy_and_state(tmp_path: Path, keys: Keys) -> None:
    cfg = _cfg(tmp_path)
    _save(tmp_path / "r1", _checkpoint(cfg), keys)

    loaded = load_checkpoint(tmp_path / "r1", keys[1])

    assert loaded is not None and loaded.round == 2 and loaded.ledger_head == (7, "ab" * 32)
    assert np.array_equal(loaded.arrays["fc.weight"], np.arange(6).reshape(2, 3))
    assert list(loaded.arrays) == ["fc.weight", "fc.bias"]
    assert loaded.strategy["v_t"] is None
    assert np.array_equal(loaded.strategy["m_t"]["fc.weight"], np.ones((2, 3)))  # type: ignore[index]
    assert loaded.compliance["decisions"] == [{"site": "cleveland"}]


class _Strategy:
    def __init__(self) -> None:
        self.current_arrays: dict[str, np.ndarray] | None = {"w": np.zeros(2)}
        self.m_t: dict[str, np.ndarray] | None = None


def test_strategy_state_round_trips_and_refuses_unknown_names() -> None:
    state = strategy_state(_Strategy())
    target = _Strategy()
    target.current_arrays = None

    restore_strategy(target, state)

    assert target.current_arrays is not None and target.m_t is None
    with pytest.raises(CheckpointError, match="unknown strategy state"):
        restore_strategy(target, {"__class__": None})


def test_a_planted_pickle_never_runs(tmp_path: Path, keys: Keys) -> None:
    # Arrange: a pickle whose loading would create a file, planted under both names
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(sentinel),))

    run = tmp_path / "r1"
    run.mkdir()
    (run / "checkpoint.pkl").write_bytes(pickle.dumps(Payload()))
    (run / CHECKPOINT).write_bytes(pickle.dumps(Payload()))

    # Act / Assert
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(run, keys[1])
    assert not sentinel.exists()


def test_an_edited_checkpoint_is_refused(tmp_path: Path, keys: Keys) -> None:
    # Arrange: round and model weights changed, the rest kept (signature and all)
    path = _save(tmp_path / "r1", _checkpoint(_cfg(tmp_path)), keys)
    with safe_open(str(path), framework="numpy") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    state = json.loads(metadata["state"])
    state["round"] = 1
    metadata["state"] = json.dumps(state, sort_keys=True)
    path.write_bytes(save(tensors, metadata=metadata))

    with pytest.raises(CheckpointError, match="not signed by this coordinator's key"):
        load_checkpoint(tmp_path / "r1", keys[1])

    tensors["model/fc.weight"] = tensors["model/fc.weight"] * 100
    path = _save(tmp_path / "r2", _checkpoint(_cfg(tmp_path)), keys)
    with safe_open(str(path), framework="numpy") as f:
        metadata = dict(f.metadata())
    path.write_bytes(save(tensors, metadata=metadata))
    with pytest.raises(CheckpointError, match="not signed"):
        load_checkpoint(tmp_path / "r2", keys[1])


def test_a_checkpoint_signed_by_another_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    forger = crypto.generate_signing_key()
    _save(tmp_path / "r1", _checkpoint(_cfg(tmp_path)), forger)

    with pytest.raises(CheckpointError, match="edited, planted or written by another"):
        load_checkpoint(tmp_path / "r1", keys[1])


def test_an_unsigned_safetensors_file_is_refused(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / CHECKPOINT).write_bytes(save({"model/w": np.zeros(2)}))

    with pytest.raises(CheckpointError, match="not a signed fedsafe checkpoint"):
        load_checkpoint(tmp_path / "r1", keys[1])


@pytest.mark.parametrize(
    ("changed", "key"),
    [
        ({"privacy": {"target_epsilon": 20.0}}, "privacy.target_epsilon: 3.0 -> 20.0"),
        ({"training": {"rounds": 12}}, "training.rounds: 10 -> 12"),
        ({"training": {"local_epochs": 2}}, "training.local_epochs: 1 -> 2"),
        ({"strategy": {"name": "fedprox"}}, "strategy.name"),
        ({"federation": {"caps": {"cleveland": 30.0}}}, "federation.caps.cleveland"),
        ({"compliance": {"purpose": "marketing"}}, "compliance.purpose"),
    ],
)
def test_a_resume_with_a_changed_setting_is_refused_naming_it(
    tmp_path: Path, keys: Keys, changed: dict[str, object], key: str
) -> None:
    _save(tmp_path / "r1", _checkpoint(_cfg(tmp_path)), keys)

    with pytest.raises(FedsafeError, match="a resume is the same run") as info:
        checkpoint_to_resume(_cfg(tmp_path, **changed), tmp_path / "r1", keys[1])

    assert key in str(info.value)


def test_the_same_config_resumes_and_resources_may_differ(tmp_path: Path, keys: Keys) -> None:
    _save(tmp_path / "r1", _checkpoint(_cfg(tmp_path)), keys)
    moved = _cfg(tmp_path, federation={"max_parallel_sites": 1}, training={"device": "cpu"})

    checkpoint = checkpoint_to_resume(moved, tmp_path / "r1", keys[1])

    assert checkpoint is not None and checkpoint.round == 2


def test_a_finished_run_cannot_be_resumed(tmp_path: Path, keys: Keys) -> None:
    cfg = _cfg(tmp_path)
    _save(tmp_path / "r1", _checkpoint(cfg, finished=True), keys)
    for later in (cfg, _cfg(tmp_path, federation={"caps": {"cleveland": 30.0}})):
        with pytest.raises(FedsafeError, match="finished run cannot be resumed"):
            checkpoint_to_resume(later, tmp_path / "r1", keys[1])


def test_changed_keys_lists_added_and_removed_keys() -> None:
    assert changed_keys({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ["a.c: '<absent>' -> 2"]
