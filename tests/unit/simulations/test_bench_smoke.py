"""Every benchmark function runs at a tiny size and yields finite figures (no timing asserted)."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import pytest

from fedsafe.simulations.bench import __main__ as cli
from fedsafe.simulations.bench import crypto_ledger, dp_step, fixed_cost, round_overhead, scale
from fedsafe.simulations.bench.breakdown import breakdown_rows
from fedsafe.simulations.bench.rows import Row, format_table
from fedsafe.simulations.bench.timing import TreeMemory, interleave


def _recorded_run(kind: str, spawn: float) -> dict[str, object]:
    """The shape of a worker's result, as a real simulation writes it."""
    marks = {
        "start": spawn + 0.1,
        "imported": spawn + 2,
        "simulate_call": spawn + 2,
        "ray_init_start": spawn + 2.5,
        "ray_init_end": spawn + 4,
        "actors_start": spawn + 4,
        "actors_end": spawn + 4.1,
        "round1_start": spawn + (8 if kind == "fedsafe" else 3),
    }
    if kind == "fedsafe":
        marks |= {"roll_call_start": spawn + 2.6, "roll_call_end": spawn + 7.9}
    return {"spawn": spawn, "marks": marks, "round_seconds": [5.0, 1.0, 1.2], "wall_s": 12.0}


def test_each_bench_runs_at_a_tiny_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: a real simulation takes a minute, so the simulation benches read recorded-shape
    # worker results; every other bench function runs for real at its smallest size.
    runs = {k: [_recorded_run(k, 100.0), _recorded_run(k, 200.0)] for k in ("baseline", "fedsafe")}
    warnings.simplefilter("ignore")

    # Act
    rows: list[Row] = []
    rows += dp_step.bench_case(dp_step.CASES[0], repeats=1, inner=1)
    rows += crypto_ledger.seal_sign_rows(repeats=1, sizes_mb=(1,))
    rows += crypto_ledger.ledger_rows(repeats=1, verify_entries=1000)
    rows += breakdown_rows(repeats=1)
    rows += round_overhead.rows_from_results(runs, rounds=3)
    rows += fixed_cost.rows_from_results(runs)
    config, label = scale.scale_config(tmp_path / "runs", 10)
    with TreeMemory(os.getpid(), interval_s=0.05) as memory:
        interleave({"a": lambda: None, "b": lambda: None}, repeats=2)
    # the CLI for real, at its quick size (about 3 s): its own rows, printed and written
    code = cli.main(["--quick", "--only", "crypto_ledger", "--out", str(tmp_path / "b.json")])

    # Assert
    modes = {r.name.rsplit(": ", 1)[1] for r in rows if r.bench == "dp_step"}
    assert {"plain torch", *dp_step.MODES} <= modes
    assert all(math.isfinite(r.median) for r in rows if r.n), format_table(rows)
    overhead = next(r for r in rows if r.name.startswith("fedsafe all protections"))
    assert overhead.ratio_median == pytest.approx(1.1 / 1.1) and overhead.met is True
    assert config["strategy"]["fraction_train"] == 1.0 and "iid" in label
    assert memory.peak_pss_kib > 0 and memory.peak_processes >= 1
    written = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert code == 0 and written and {r["bench"] for r in written} == {"crypto_ledger"}
    printed = capsys.readouterr().out
    assert all(r["name"][:43] in printed for r in written)  # every written row is shown
    assert all(math.isfinite(r["median"]) and r["median"] > 0 for r in written)
