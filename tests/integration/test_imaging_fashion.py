"""federation=imaging is Fashion-MNIST: without the data set it says how to install it and stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_imaging_without_the_data_set_names_the_package_and_exits_non_zero(tmp_path: Path) -> None:
    empty = tmp_path / "no-fashion-mnist"
    empty.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsafe.simulations.cli",
            "simulate",
            "federation=imaging",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FEDSAFE_FASHION_MNIST_DIR": str(empty)},
        cwd=tmp_path,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "make fashion-mnist" in out and "dataset-fashion-mnist" in out
    assert str(empty) in out
    assert not (tmp_path / "run" / "summary.json").exists()
