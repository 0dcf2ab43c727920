"""The deploy bench's figures from recorded-shape results, and the fork/import probes for real."""

from __future__ import annotations

import math

from fedsafe.simulations.bench.deploy_rounds import _SERVED, rows_from
from fedsafe.simulations.bench.worker_modes import fork_seconds


def _result(isolation: str, round_s: list[float], app: float) -> dict[str, object]:
    served = {
        kind: [{"total": app + 0.05, "pull": 0.02, "app": app, "push": 0.03}] * 3
        for kind in ("train", "evaluate")
    }
    return {"isolation": isolation, "completed": True, "wall_s": 1.0, "round_s": round_s,
            "served": served if isolation == "process" else {}}  # fmt: skip


def test_deploy_rows_give_per_round_per_message_and_the_floor() -> None:
    stock = _result("subprocess", [60.0, 44.0, 46.0], 0.0)
    worker = _result("process", [20.0, 7.0, 9.0], 1.0)

    rows = {r.name: r for r in rows_from(stock, worker)}

    fast = rows["per round, fedsafe worker (rounds 2..)"]
    assert (fast.median, fast.ratio_median, fast.met) == (8.0, 45.0 / 8.0, True)
    assert rows["per message, worker (half a round)"].median == 4.0
    own = rows["worker's own share (pull+push+poll/2)"].median
    assert math.isclose(own, 0.05 + 0.1)
    assert math.isclose(rows["Flower polling floor per message (measured)"].median, 3.0 - own)


def test_the_worker_log_line_is_what_the_bench_parses() -> None:
    line = "served train in 2.345 s (pull 0.012, app 2.300, push 0.033; 4 so far)"
    assert _SERVED.search(line).groups() == ("train", "2.345", "0.012", "2.300", "0.033")


def test_fork_probe_runs() -> None:
    times = fork_seconds(2, torch_op=True)
    assert len(times) == 2 and all(0 < t < 60 for t in times)
