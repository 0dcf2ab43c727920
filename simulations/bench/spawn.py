"""Start a simulation worker process, sample its process tree's memory, collect its result."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fedsafe.simulations.bench.timing import TreeMemory

__all__ = ["run_worker"]


def run_worker(
    kind: str,
    config: dict[str, Any],
    workdir: Path,
    tag: str,
    *,
    timeout_s: float = 1800,
    profile: bool = False,
) -> dict[str, Any]:
    """Run one simulation (`kind` "fedsafe" or "baseline") in a fresh Python process.

    Returns the worker's result plus `spawn` (wall time just before the process started),
    `wall_s`, peak summed RSS/PSS of the whole process tree (Ray included) and, on failure,
    `error` with the log's tail.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out, log = workdir / f"{tag}.result.json", workdir / f"{tag}.log"
    spec = {
        "kind": kind,
        "config": config,
        "run_dir": str(workdir / tag),
        "out": str(out),
        "profile": str(workdir / f"{tag}.prof") if profile else None,
    }
    spec_path = workdir / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_DEDUP_LOGS": "0"}
    spawn = time.time()
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedsafe.simulations.bench.sim_worker", str(spec_path)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        with TreeMemory(proc.pid) as memory:
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                rc = proc.wait()
    wall = time.time() - spawn
    _reap_session(proc.pid)
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    result.update(
        spawn=spawn,
        wall_s=wall,
        rc=rc,
        peak_rss_gib=memory.peak_rss_gib,
        peak_pss_gib=memory.peak_pss_gib,
        peak_processes=memory.peak_processes,
        log=str(log),
    )
    if rc != 0 or not out.exists():
        result["error"] = log.read_text(errors="replace")[-1500:]
    return result


def _reap_session(sid: int) -> None:
    """Ray's daemons (GCS, raylet) outlive a driver that exits hard: end this run's session."""
    try:
        os.killpg(sid, 15)
    except ProcessLookupError:
        return
    time.sleep(1.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, 9)
