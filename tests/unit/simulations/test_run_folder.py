"""A rejected config, or a name that would leave runs/, never creates a folder (nor does Hydra)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedsafe.common.config import ExperimentConfig


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run_id=../escape", "config key 'run_id'"),
        ("privacy.delta=2", "config key 'privacy.delta' (from command-line override"),
        (
            "federation.sites=[cleveland,atlantis]",
            "'federation.sites=[cleveland,atlantis]'): got 'atlantis'",
        ),
    ],
)
def test_rejected_config_leaves_no_folder(tmp_path: Path, override: str, message: str) -> None:
    runs = tmp_path / "inner" / "runs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}

    done = subprocess.run(
        [sys.executable, "-m", "fedsafe.simulations.cli", "simulate", f"runs_dir={runs}", override],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )

    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # not runs/, not ../escape


def test_a_refused_resume_leaves_the_finished_run_folder_untouched(tmp_path: Path) -> None:
    # Arrange: a finished run, its checkpoint signed by the simulated coordinator's key
    from fedsafe.common.crypto.pki import init_server_signing_key
    from fedsafe.common.layout import coordinator_keys_dir
    from fedsafe.server.checkpoint import Checkpoint, save_checkpoint
    from fedsafe.server.resume_config import bound_config

    runs = tmp_path / "runs"
    cfg = ExperimentConfig(runs_dir=str(runs), run_id="done")
    keys = coordinator_keys_dir(cfg)
    init_server_signing_key(keys)
    (runs / "done").mkdir(parents=True)
    checkpoint = Checkpoint(2, {}, {}, (1, "0" * 64), {}, {}, bound_config(cfg), finished=True)
    save_checkpoint(
        runs / "done",
        checkpoint,
        private_pem=(keys / "server_signing.key").read_bytes(),
        public_pem=(keys / "server_signing.pub").read_bytes(),
    )
    before = sorted(p.name for p in (runs / "done").iterdir())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}

    # Act
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsafe.simulations.cli",
            "simulate",
            f"runs_dir={runs}",
            "run_id=done",
        ]
        + ["resume=true", "training.rounds=3"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )

    # Assert
    assert done.returncode == 2, done.stderr[-2000:]
    assert "a finished run cannot be resumed" in done.stderr
    assert sorted(p.name for p in (runs / "done").iterdir()) == before  # no .hydra, no run.log
