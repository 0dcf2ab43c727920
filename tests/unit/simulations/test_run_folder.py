"""A rejected config, or a name that would leave runs/, never creates a folder (nor does Hydra)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


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
        [sys.executable, "-m", "simulations.cli", "simulate", f"runs_dir={runs}", override],
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
