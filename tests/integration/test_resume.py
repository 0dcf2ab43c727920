"""Kill the coordinator mid-run for real, resume it: every round once, the chain intact, no double charge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.budget import BudgetStore
from common.config import ExperimentConfig, from_dict
from common.ledger import Ledger, verify_ledger
from server.checkpoint import CHECKPOINT, load_checkpoint
from simulations.engine import simulate

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROUNDS = 4


def _server_public(runs: Path) -> bytes:
    """The simulated coordinator's own key, which signs every checkpoint."""
    return (runs / "coordinator" / "keys" / "server_signing.pub").read_bytes()


def _kill_after_round(runs: Path, run_id: str, round_: int, timeout_s: float = 240) -> None:
    """Run the simulation as its own process group; SIGKILL all of it once `round_` is checkpointed."""
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "simulate",
        f"runs_dir={runs}",
        f"run_id={run_id}",
        f"training.rounds={ROUNDS}",
        "federation.fresh_budget=true",
    ]
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


def test_a_killed_coordinator_resumes_without_double_charges(tmp_path: Path) -> None:
    runs, run_id = tmp_path / "runs", "crash"
    _kill_after_round(runs, run_id, 2)
    killed_at = load_checkpoint(runs / run_id, _server_public(runs)).round  # type: ignore[union-attr]
    assert 2 <= killed_at < ROUNDS

    cfg = from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(runs),
            "run_id": run_id,
            "resume": True,
            "training": {"rounds": ROUNDS},
            "federation": {"fresh_budget": True},
        },
    )
    summary = simulate(cfg, runs / run_id)

    assert summary["rounds_completed"] == ROUNDS
    for name, site in summary["sites"].items():
        assert site["rounds_trained"] == list(range(1, ROUNDS + 1)), name
        store = BudgetStore.open(runs / run_id / "sites" / name / "budget.sqlite")
        rounds = [c.round for c in store.charges(f"heart_disease/{name}") if c.run_id == run_id]
        store.close()
        assert sorted(rounds) == sorted(set(rounds)), (
            f"{name} was charged twice for a round: {rounds}"
        )
        assert set(range(1, ROUNDS + 1)) <= set(rounds), name
    result = verify_ledger(
        runs / run_id / "ledger.sqlite",
        server_public_pem=(runs / run_id / "keys" / "server_signing.pub").read_bytes(),
        witness=runs / run_id / "ledger.witness.json",
    )
    assert result.signed_heads >= ROUNDS
    with Ledger.open(runs / run_id / "ledger.sqlite") as ledger:
        resumed = [e.payload for e in ledger.entries() if e.kind == "run_resumed"]
    assert resumed == [
        {
            "run_id": run_id,
            "from_round": killed_at + 1,
            "checkpoint_head": resumed[0]["checkpoint_head"],
        }
    ]
