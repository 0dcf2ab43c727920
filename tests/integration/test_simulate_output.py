"""`fedsafe simulate` as a newcomer sees it: the privacy plan is the first thing printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_nothing_unasked_is_printed_before_the_plan(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedsafe.simulations.cli", "simulate", f"runs_dir={tmp_path}"]
        + [
            "training.rounds=1",
            "federation.sites=[cleveland,hungary]",
            "federation.fresh_budget=true",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # stdout and stderr together, as a terminal shows them: no library chatter first
    before_plan = (done.stderr + done.stdout).split("privacy plan:")[0]
    assert "alembic" not in before_plan and "INFO" not in before_plan, before_plan[-2000:]
    assert done.stdout.lstrip().startswith("privacy plan:")
    assert "pooled" in done.stdout  # the run itself went through to its table
