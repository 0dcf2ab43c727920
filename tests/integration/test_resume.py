"""Kill the coordinator mid-run, resume it: each round once, chain intact, no double pay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsafe.client.budget import BudgetStore
from fedsafe.common.ledger import Ledger, verify_ledger
from fedsafe.server.checkpoint import CHECKPOINT, load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROUNDS = 4


def _server_public(runs: Path) -> bytes:
    """The simulated coordinator's own key, which signs every checkpoint."""
    return (runs / "coordinator" / "keys" / "server_signing.pub").read_bytes()


def _command(runs: Path, run_id: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedsafe.simulations.cli",
        "simulate",
        f"runs_dir={runs}",
        f"run_id={run_id}",
        f"training.rounds={ROUNDS}",
        "federation.fresh_budget=true",
        *extra,
    ]


def _simulate(runs: Path, run_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """The operator's `fedsafe simulate ...`, to the end (bounded)."""
    return subprocess.run(
        _command(runs, run_id, *extra), capture_output=True, text=True, timeout=600
    )


def _kill_after_round(
    runs: Path, run_id: str, round_: int, *extra: str, timeout_s: float = 240
) -> None:
    """Run the simulation as its own process group; SIGKILL it all once `round_` is checkpointed."""
    cmd = _command(runs, run_id, *extra)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            checkpoint = (
                load_checkpoint(runs / run_id, _server_public(runs))
                if (runs / run_id / CHECKPOINT).exists()
                else None
            )
            if checkpoint is not None and checkpoint.round >= round_:
                return
            if proc.poll() is not None:
                pytest.fail(f"the simulation ended (code {proc.returncode}) before round {round_}")
            time.sleep(0.2)
        pytest.fail(f"no checkpoint of round {round_} within {timeout_s} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# Every way of moving updates resumes the same way: one coordinator loop, one checkpoint.
MODES = {
    "sealed": (),
    "secure-aggregation": ("security.secure_aggregation=true", "strategy.min_sites=3"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_killed_coordinator_resumes_without_double_charges(tmp_path: Path, mode: str) -> None:
    runs, run_id, extra = tmp_path / "runs", "crash", MODES[mode]
    _kill_after_round(runs, run_id, 2, *extra)
    killed_at = load_checkpoint(runs / run_id, _server_public(runs)).round  # type: ignore[union-attr]
    assert 2 <= killed_at < ROUNDS

    # A resume that changes what the run computes is refused, naming the key, before Ray.
    changed = _simulate(runs, run_id, *extra, "resume=true", "training.local_epochs=2")
    assert changed.returncode == 2, changed.stderr[-2000:]
    assert "training.local_epochs: 1 -> 2" in changed.stderr

    # The same command line as the killed run, plus resume=true: the same run continues.
    done = _simulate(runs, run_id, *extra, "resume=true")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((runs / run_id / "summary.json").read_text(encoding="utf-8"))

    # Under secure aggregation the interrupted round is abandoned (a site never contributes
    # to one round's sum twice) and the run goes on with the next round number.
    secure = mode == "secure-aggregation"
    abandoned = {killed_at + 1} if secure else set()
    expected = [r for r in range(1, ROUNDS + 1) if r not in abandoned]
    assert summary["rounds_completed"] == len(expected)
    for name, site in summary["sites"].items():
        assert site["rounds_trained"] == expected, name
        store = BudgetStore.open(runs / run_id / "sites" / name / "budget.sqlite")
        rounds = [c.round for c in store.charges(f"heart_disease/{name}") if c.run_id == run_id]
        store.close()
        assert sorted(rounds) == sorted(set(rounds)), (
            f"{name} was charged twice for a round: {rounds}"
        )
        assert set(expected) <= set(rounds), name
    result = verify_ledger(
        runs / run_id / "ledger.sqlite",
        server_public_pem=_server_public(runs),  # the coordinator's own, not the folder's
        witness=runs / run_id / "ledger.witness.json",
    )
    assert result.signed_heads >= ROUNDS
    with Ledger.open(runs / run_id / "ledger.sqlite") as ledger:
        entries = list(ledger.entries())
    started = next(e.payload for e in entries if e.kind == "run_started")
    assert started["secure_aggregation"] is (mode == "secure-aggregation")
    aggregated = [e.payload for e in entries if e.kind == "round_aggregated"]
    assert set(expected) <= {p["round"] for p in aggregated}
    assert all(("protocol" in p) is secure for p in aggregated)
    resumed = [e.payload for e in entries if e.kind == "run_resumed"]
    assert resumed == [
        {
            "run_id": run_id,
            "from_round": killed_at + 1 + len(abandoned),
            "checkpoint_head": resumed[0]["checkpoint_head"],
            "config_hash": started["bound_config_hash"],  # the same run's settings
            **({"abandoned_round": killed_at + 1} if secure else {}),
        }
    ]
