"""federation=imaging is Fashion-MNIST: without the data set it says how to install it and stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fedsafe.common.data.images import fashion_mnist_dir
from fedsafe.simulations.engine import simulate
from fedsafe.simulations.run import config_from_hydra


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


@pytest.mark.heavy
@pytest.mark.skipif(
    not (fashion_mnist_dir() / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (make fashion-mnist); .ci/run installs it",
)
def test_dp_scattering_features_learn_fashion_mnist_in_three_rounds(tmp_path: Path) -> None:
    """A short real run at epsilon 3: fails if DP training or the features broke (chance is 0.1)."""
    with initialize_config_module(config_module="fedsafe.conf", version_base="1.3"):
        cfg = config_from_hydra(
            compose(
                config_name="config",
                overrides=[
                    "federation=imaging",
                    "dataset.partition=iid",
                    "training.rounds=3",
                    f"runs_dir={tmp_path}",
                    "federation.fresh_budget=true",
                ],
            )
        )
    summary = simulate(cfg, tmp_path / "run")
    assert all(s["rounds_trained"] == [1, 2, 3] for s in summary["sites"].values())
    assert all(0 < s["epsilon"] <= 3.0 for s in summary["sites"].values())
    assert summary["global"]["accuracy"] >= 0.75
