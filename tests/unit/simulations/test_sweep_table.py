"""`fedsafe sweep-table`: known-answer means and spreads, and runs that must not be averaged."""

from __future__ import annotations

import argparse
import io
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from fedsafe.simulations.sweep_table import collect, format_tables, run_sweep_table


def _summary(acc: float, *, eps: float | None, gap: float = 0.1, **extra: Any) -> dict[str, Any]:
    return {
        "privacy": {"enabled": eps is not None, "target_epsilon": eps, "noise_multiplier": None},
        "config": {"federation": {"name": "hospitals"}, "dataset": {"protocol": "fedsafe"}},
        "rounds_completed": 10,
        "stopped_early": None,
        "global": {"accuracy": acc, "balanced-accuracy": acc - 0.05, "auroc": 0.8},
        "fairness": {"worst": acc - gap, "gap": gap, "mean": acc},
        **extra,
    }


def _write(root: Path, name: str, summary: dict[str, Any]) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "summary.json").write_text(json.dumps(summary))


def test_each_privacy_setting_is_a_row_with_mean_and_spread(tmp_path: Path) -> None:
    for i, acc in enumerate((0.70, 0.74, 0.78)):
        _write(tmp_path, f"eps3-{i}", _summary(acc, eps=3.0))
    _write(tmp_path, "off-0", _summary(0.80, eps=None))
    table = format_tables(collect(tmp_path)[0])
    lines = table.splitlines()
    assert lines[0] == "hospitals"
    off = next(line for line in lines if line.startswith("off"))
    eps3 = next(line for line in lines if line.startswith("epsilon 3"))
    assert lines.index(off) < lines.index(eps3)  # off first, then by epsilon
    spread = statistics.stdev([0.70, 0.74, 0.78])
    assert f"0.740 ± {spread:.3f}" in eps3 and " 3 " in eps3
    assert "0.800" in off


def test_a_run_that_stopped_early_is_listed_not_averaged(tmp_path: Path) -> None:
    _write(tmp_path, "ok", _summary(0.70, eps=3.0))
    _write(tmp_path, "stopped", _summary(0.10, eps=3.0, stopped_early={"round": 1}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    groups, left_out = collect(tmp_path)
    assert len(groups["hospitals"]["epsilon 3"]) == 1
    assert any("stopped" in line for line in left_out)
    assert any("broken" in line and "unreadable" in line for line in left_out)


def test_a_benchmark_protocol_is_its_own_table(tmp_path: Path) -> None:
    flamby = _summary(0.75, eps=3.0)
    flamby["config"]["dataset"]["protocol"] = "flamby"
    _write(tmp_path, "a", flamby)
    _write(tmp_path, "b", _summary(0.78, eps=3.0))
    assert set(collect(tmp_path)[0]) == {"hospitals", "hospitals (flamby protocol)"}


def test_an_empty_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_sweep_table(argparse.Namespace(folder=tmp_path), out=io.StringIO()) == 2
    assert "no finished run" in capsys.readouterr().err
