"""`flwr run .` works as a Flower user expects: Flower's own local SuperLink, fedsafe's apps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedsafe.common.flower_env import OFFLINE_FLOWER_ENV

pytestmark = [pytest.mark.slow, pytest.mark.heavy]
ROOT = Path(__file__).resolve().parents[2]


def _stop_local_superlink(flwr_home: Path) -> None:
    """Flower leaves its managed SuperLink running; stop the one started with our FLWR_HOME."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"flower-superlink" in cmdline and f"FLWR_HOME={flwr_home}".encode() in environ:
            os.kill(int(proc.name), signal.SIGTERM)


def test_flwr_run_dot_trains_with_the_same_apps(tmp_path: Path) -> None:
    flwr_home = tmp_path / "flwr-home"
    runs = tmp_path / "runs"
    env = (
        os.environ
        | OFFLINE_FLOWER_ENV
        | {
            "FLWR_HOME": str(flwr_home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
    )
    run_config = f'runs_dir="{runs}" training.rounds=2 experiment.name="flwr"'
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    flwr = str(Path(sys.executable).parent / "flwr")
    try:
        done = subprocess.run(
            [
                flwr,
                "run",
                ".",
                "--federation-config",
                "num-supernodes=4",
                "--run-config",
                run_config,
                "--stream",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
    finally:
        _stop_local_superlink(flwr_home)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (ROOT / "pyproject.toml").read_bytes() == pyproject  # Flower did not rewrite it
    (run_dir,) = [p for p in runs.iterdir() if p.name.startswith("flwr-")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    assert set(summary["sites"]) == {"cleveland", "hungary", "va_long_beach", "switzerland"}
    assert all(s["epsilon"] > 0 for s in summary["sites"].values())
    assert (run_dir / "ledger.sqlite").exists()
