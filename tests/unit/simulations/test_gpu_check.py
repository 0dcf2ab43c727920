"""The prepared GPU check: run on the CPU here (the same checks, `--device cpu`), and refusing
to report a CUDA figure where there is no CUDA device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedsafe.simulations.bench import gpu_check

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


@no_cuda
def test_asking_for_cuda_without_it_exits_2_and_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert gpu_check.main(["--device", "cuda", "--no-round"]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err


@no_cuda
def test_a_round_whose_sites_cannot_use_the_device_fails_the_check(tmp_path: Path) -> None:
    """The round's verdict comes from the run itself: told cuda on a machine without it, the
    run refuses (training.device) and the row is not met."""
    row = gpu_check.round_row(torch.device("cuda"), tmp_path)
    assert row.met is False
    assert "training.device" in row.note


@pytest.mark.slow
def test_the_whole_check_passes_on_the_cpu_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["where"]["device"] == "cpu"
    rows = {row["name"]: row for row in figures["rows"]}
    fused = rows["cnn digits 8x8 b64 on cpu: fused"]
    assert fused["met"] is True and fused["ratio_median"] > 0
    assert fused["extra"]["max_abs_update_diff_vs_opacus_noise0"] <= gpu_check.TOLERANCE
    (round_row,) = (row for name, row in rows.items() if name.startswith("one simulated round"))
    assert round_row["met"] is True
    trained = round_row["extra"]["rounds_trained"]
    assert len(trained) == 4 and all(rounds == [1] for rounds in trained.values()), trained
