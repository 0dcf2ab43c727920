"""`fedsafe simulate` as a newcomer sees it: the privacy plan is the first thing printed, and
no library chatter follows the last round."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_apps import fedsafe_cli

pytestmark = pytest.mark.slow


def test_nothing_unasked_is_printed_before_the_plan(tmp_path: Path) -> None:
    done = fedsafe_cli(
        tmp_path,
        "simulate",
        f"runs_dir={tmp_path}",
        "training.rounds=1",
        "federation.sites=[cleveland,hungary]",
        "federation.fresh_budget=true",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # stdout and stderr together, as a terminal shows them: no library chatter first
    before_plan = (done.stderr + done.stdout).split("privacy plan:")[0]
    assert "alembic" not in before_plan and "INFO" not in before_plan, before_plan[-2000:]
    assert done.stdout.lstrip().startswith("privacy plan:")
    assert "pooled" in done.stdout  # the run itself went through to its table
    # Ray's actor shutdown ("Manually terminating ClientAppActor", in colour) says nothing wrong
    shown = done.stderr + done.stdout
    assert "Manually terminating" not in shown
    # nor Flower's own INFO records (its logger is created at import, DEBUG, with a handler)
    assert "alembic" not in shown and "Starting RecordingStrategy" not in shown, shown[-2000:]
