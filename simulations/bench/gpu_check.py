"""The GPU check: on a CUDA machine, fedsafe's DP step and one simulated round run on the GPU.

`make gpu-check` (or `python -m fedsafe.simulations.bench.gpu_check`) prints, in well under
five minutes on one GPU:
- where it ran (torch, CUDA, the device's name);
- the CNN's DP step (digits, batch 64) on the device: plain torch, fedsafe's fused step and
  Opacus' hooks, each in ms per step with its ratio to plain torch, and the fused step's
  noise-free update against Opacus' (the same mechanism, within float tolerance);
- one simulated round of the digits federation with `training.device=cuda` through the real
  `fedsafe simulate`: every site must train. A site that could not see CUDA refuses the round
  (training.device names a device it lacks) and the run fails, so a passing round is one that
  trained on the GPU.
It exits 0 when every check passed, 1 when one failed, 2 when the device asked for is absent.
`--device cpu` runs the same checks on the CPU (how the tests keep this script working).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedsafe.simulations.bench.dp_step import CASES, make_step, same_update
from fedsafe.simulations.bench.rows import Row, format_table, rows_to_json, summarize
from fedsafe.simulations.bench.timing import interleave

__all__ = ["main", "dp_step_rows", "round_row"]

CNN = next(case for case in CASES if case.model == "cnn")
TOLERANCE = 1e-5  # the fused step's noise-free update against Opacus' (float32 sums)
ROUND_TIMEOUT_S = 240.0


def describe(device: torch.device) -> dict[str, Any]:
    """Where the check runs."""
    found: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": str(device),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        found["name"] = torch.cuda.get_device_name(device)
        found["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return found


def _synced(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """The step, timed to its end on the device (CUDA runs asynchronously)."""
    if device.type != "cuda":
        return step

    def go() -> None:
        step()
        torch.cuda.synchronize(device)

    return go


def dp_step_rows(device: torch.device, *, repeats: int = 9, inner: int = 20) -> list[Row]:
    """The CNN's step on `device`: plain torch, fedsafe's fused DP step, Opacus' hooks."""
    cases = {
        name: _synced(make_step(CNN, mode, device=device)[0], device)
        for name, mode in (("plain", None), ("fused", "fused"), ("opacus hooks", "hooks"))
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in cases.values():
            for _ in range(3):  # warm-up: kernels chosen, buffers allocated
                step()
        samples = interleave(cases, repeats=repeats, inner=inner)
        deviation = same_update(CNN, "fused", device)
    base = samples["plain"]
    lo, med, n = summarize([s * 1e3 for s in base])
    rows = [Row("gpu_check", f"{CNN.name} on {device}: plain torch", "ms/step", lo, med, n)]
    for name in ("fused", "opacus hooks"):
        s = samples[name]
        lo, med, n = summarize([v * 1e3 for v in s])
        extra: dict[str, Any] = {}
        note = ""
        if name == "fused":
            extra = {"max_abs_update_diff_vs_opacus_noise0": deviation}
            note = f"noise-free update matches Opacus to {deviation:.1e} (<= {TOLERANCE:g})"
        rows.append(
            Row(
                "gpu_check",
                f"{CNN.name} on {device}: {name}",
                "ms/step",
                lo,
                med,
                n,
                baseline="plain torch",
                ratio_min=min(s) / min(base),
                ratio_median=sorted(s)[len(s) // 2] / sorted(base)[len(base) // 2],
                met=deviation <= TOLERANCE if name == "fused" else None,
                note=note,
                extra=extra,
            )
        )
    return rows


def round_row(device: torch.device, workdir: Path) -> Row:
    """One round of the digits federation through `fedsafe simulate`, on `device`."""
    runs = workdir / "runs"
    command = [
        sys.executable,
        "-m",
        "fedsafe.simulations.cli",
        "simulate",
        "federation=imaging_digits",
        "training.rounds=1",
        f"training.device={device.type}",
        f"runs_dir={runs}",
        "federation.fresh_budget=true",
    ]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=ROUND_TIMEOUT_S,
        env=env,
        cwd=workdir,
        check=False,
    )
    seconds = time.perf_counter() - start
    summaries = sorted(runs.glob("*/summary.json")) if runs.is_dir() else []
    trained: dict[str, Any] = {}
    if done.returncode == 0 and summaries:
        sites = json.loads(summaries[-1].read_text(encoding="utf-8"))["sites"]
        trained = {name: site["rounds_trained"] for name, site in sites.items()}
    met = bool(trained) and all(rounds == [1] for rounds in trained.values())
    note = (
        f"every site trained round 1 with training.device={device.type}"
        if met
        else f"exit {done.returncode}; sites trained {trained}; "
        f"last output: {(done.stdout + done.stderr)[-1500:]}"
    )
    return Row(
        "gpu_check",
        f"one simulated round, digits CNN, {len(trained)} sites, on {device.type}",
        "s",
        seconds,
        seconds,
        1,
        target="every site trains",
        met=met,
        note=note,
        extra={"rounds_trained": trained},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer timing repeats")
    parser.add_argument("--no-round", action="store_true", help="skip the simulated round")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    where = describe(device)
    print(json.dumps(where, sort_keys=True))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible to torch here "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "run it on a CUDA machine, or with --device cpu",
            file=sys.stderr,
        )
        return 2
    repeats, inner = (5, 10) if args.quick else (9, 20)
    rows = dp_step_rows(device, repeats=repeats, inner=inner)
    if not args.no_round:
        with tempfile.TemporaryDirectory(prefix="fedsafe-gpu-check-") as tmp:
            rows.append(round_row(device, Path(tmp)))
    print(format_table(rows))
    if args.out is not None:
        args.out.write_text(
            json.dumps({"where": where, "rows": rows_to_json(rows)}, indent=2) + "\n",
            encoding="utf-8",
        )
    failed = [row.name for row in rows if row.met is False]
    for name in failed:
        print(f"gpu_check: FAILED: {name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
