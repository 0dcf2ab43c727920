"""A Hydra sweep (`fedsafe simulate -m`, what `make sweep` runs) trains in every job.

A job's folder name is its run id, which every site checks. The folder used to be named after
the overrides (`0-privacy=eps8,...`), a name every site refused, so each job "finished" with no
site taking part; this runs a real two-job sweep and reads both jobs' summaries and the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sim_apps import fedsafe_cli

from fedsafe.common.names import is_valid_name

pytestmark = pytest.mark.slow


def test_every_job_of_a_sweep_trains_and_the_table_reads_them(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = fedsafe_cli(
        tmp_path,
        "simulate",
        "-m",
        "privacy=eps8,off",
        f"runs_dir={tmp_path}",
        "training.rounds=1",
        "federation.sites=[cleveland,hungary]",
        "federation.fresh_budget=true",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 2
    for path in summaries:
        assert is_valid_name(path.parent.name), path.parent.name
        summary = json.loads(path.read_text())
        assert summary["rounds_completed"] == 1 and not summary["stopped_early"]
    table = fedsafe_cli(tmp_path, "sweep-table", str(sweep)).stdout
    assert "epsilon 8" in table and "\noff" in table
