"""A real site process killed with SIGKILL between rounds and mid-round keeps its spend."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsafe.client.budget import BudgetStore
from fedsafe.client.policy import SitePolicy
from fedsafe.common.privacy.accountants import Charge, epsilon_for

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 90.0
PLANNED = Charge(1.5, 0.05, 10)

# The child reserves a round, waits for "go", completes it with fewer steps on odd rounds,
# and waits again: the parent chooses exactly where the kill lands.
CHILD = """
import sys
from pathlib import Path
from fedsafe.client.budget import BudgetStore
from fedsafe.client.policy import SitePolicy
from fedsafe.common.privacy.accountants import Charge

store = BudgetStore.open(Path(sys.argv[1]))
policy = SitePolicy(max_epsilon=50.0)
for rnd in range(1, 100):
    res = store.reserve(dataset_id="ds", run_id="run-a", round=rnd,
                        charge=Charge(1.5, 0.05, 10), policy=policy, purpose=None)
    print(f"reserved {rnd} {res.epsilon_after!r}", flush=True)
    sys.stdin.readline()
    res = store.complete(res, steps_taken=7 if rnd % 2 else 10)
    print(f"completed {rnd} {res.epsilon_after!r}", flush=True)
    sys.stdin.readline()
"""


class Child:
    """A site process driven line by line, every wait bounded."""

    def __init__(self, store_path: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(store_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, prefix: str) -> float:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.kill()
                pytest.fail(f"child did not say {prefix!r} within {TIMEOUT_S} s")
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                pytest.fail(f"child exited before {prefix!r}: {err[-2000:]}")
            if line.startswith(prefix):
                return float(line.split()[-1])

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT_S)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _drive(child: Child, rounds: int) -> float:
    reported = 0.0
    for rnd in range(1, rounds + 1):
        child.expect(f"reserved {rnd} ")
        child.go()
        reported = child.expect(f"completed {rnd} ")
        if rnd < rounds:
            child.go()
    return reported


@pytest.mark.slow
def test_sigkill_between_rounds_keeps_the_spend(tmp_path: Path) -> None:
    path = tmp_path / "site" / "budget.db"
    child = Child(path)
    reported = _drive(child, rounds=3)

    child.kill()  # between rounds 3 and 4
    assert child.proc.returncode == -signal.SIGKILL

    with BudgetStore.open(path) as store:
        history = store.history("ds")
        spent = store.spent("ds", delta=1e-5, accountant="rdp")
        assert history == [Charge(1.5, 0.05, 7), Charge(1.5, 0.05, 10), Charge(1.5, 0.05, 7)]
        assert [r.status for r in store.charges("ds")] == ["completed"] * 3
        assert spent == epsilon_for(history, delta=1e-5) == reported


@pytest.mark.slow
def test_sigkill_mid_round_over_counts_and_resume_does_not_double_charge(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    child = Child(path)
    _drive(child, rounds=2)
    child.go()
    during = child.expect("reserved 3 ")

    child.kill()  # after reserving round 3, before completing it

    with BudgetStore.open(path) as store:
        history = store.history("ds")
        assert history[-1] == PLANNED  # the full planned steps: over-counted, never under
        assert store.charges("ds")[-1].status == "reserved"
        assert store.spent("ds", delta=1e-5, accountant="rdp") == epsilon_for(history, delta=1e-5)
        assert store.spent("ds", delta=1e-5, accountant="rdp") == during

        resumed = store.reserve(
            dataset_id="ds",
            run_id="run-a",
            round=3,
            charge=PLANNED,
            policy=SitePolicy(max_epsilon=50.0),
            purpose=None,
        )
        assert resumed.replayed and resumed.status == "reserved"
        assert store.history("ds") == history
        store.complete(resumed, steps_taken=4)
        assert store.history("ds")[-1] == Charge(1.5, 0.05, 4)
        assert store.spent("ds", delta=1e-5, accountant="rdp") < during
