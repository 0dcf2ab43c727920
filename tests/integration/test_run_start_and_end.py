"""`fedsafe simulate` at the two ends of a run, through the real command: sites that are slow to
start are waited for (bounded, with a message); a run in which no site trained is an error with
a non-zero exit, kept in the signed ledger, and never a summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sim_apps import fedsafe_cli

from fedsafe.client.app import SLOW_START_ENV
from fedsafe.common.ledger import Ledger
from fedsafe.simulations.cli import main as fedsafe

pytestmark = pytest.mark.slow

SITES = ("cleveland", "hungary", "switzerland", "va_long_beach")


def _only_run(runs: Path) -> Path:
    folders = [p for p in runs.iterdir() if p.is_dir() and p.name.startswith("heart-")]
    assert len(folders) == 1, folders
    return folders[0]


def test_sites_slower_to_start_than_the_roll_call_timeout_still_take_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: every site's first answer takes 3 s (the real ClientApp's test hook), three
    # times the roll call's timeout
    monkeypatch.setenv(SLOW_START_ENV, "3")
    runs = tmp_path / "runs"
    # Act
    done = fedsafe_cli(
        tmp_path,
        "simulate",
        f"runs_dir={runs}",
        "training.rounds=1",
        "federation.fresh_budget=true",
        "++compliance.roll_call_timeout_s=1",
        "++compliance.start_patience_s=120",
    )
    # Assert: the wait was announced, every site trained, and the shutdown stayed quiet
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown[-3000:]
    assert "have not answered yet (still starting?)" in shown, shown[-3000:]
    summary = json.loads((_only_run(runs) / "summary.json").read_text())
    for site in SITES:
        assert summary["sites"][site]["rounds_trained"] == [1], site
    assert "Manually terminating" not in shown


def test_a_run_in_which_no_site_trained_fails_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: no site consented to the run's purpose, so each is excluded every round
    runs = tmp_path / "runs"
    # Act
    done = fedsafe_cli(
        tmp_path,
        "simulate",
        f"runs_dir={runs}",
        "training.rounds=2",
        "federation.fresh_budget=true",
        "compliance.purpose=marketing",
    )
    # Assert: a non-zero exit naming why, no summary, and the failure in the signed ledger
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "fedsafe: error: no site trained in run heart-" in done.stderr
    assert "all 4 site(s) refused or excluded" in done.stderr
    assert "purpose 'marketing' not covered" in done.stderr
    assert "pooled" not in done.stdout and "report:" not in done.stdout
    run_dir = _only_run(runs)
    assert not (run_dir / "summary.json").exists()
    with Ledger.open(run_dir / "ledger.sqlite") as ledger:
        entries = list(ledger.entries())
    errors = [e.payload["message"] for e in entries if e.kind == "error"]
    assert any("NoSiteTrainedError: no site trained" in m for m in errors), errors
    assert entries[-1].kind == "head_signed"
    key = runs / "coordinator" / "keys" / "server_signing.pub"
    assert fedsafe(["audit", "verify", str(run_dir), "--key", str(key), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]
