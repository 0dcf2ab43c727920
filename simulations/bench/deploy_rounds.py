"""Deployed rounds, stock Flower SuperNode vs fedsafe's site worker: same run, 3 sites, TLS + auth.

Stock (`site start --isolation subprocess`) starts one `flwr-clientapp` process per message;
the worker imports once. A round is two message exchanges per site (train, evaluate), so a
message's round trip is half a round. The worker logs the time its ClientApp took; what
remains of a message is Flower's fixed polling (SuperNode idle poll 3 s, reply wait 0.5 s,
Grid poll 3 s), the floor no site-side change can remove, plus the worker's own pull, push
and claim poll.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedsafe.server.deploy.flower import project_root
from fedsafe.server.deploy.process import ManagedProcess, flower_env
from fedsafe.simulations.bench.deploy_kits import Deployment, make_deployment
from fedsafe.simulations.bench.rows import Row, summarize

__all__ = ["run", "run_mode", "FLOWER_POLLS_S"]

FLOWER_POLLS_S = {"supernode_idle_poll": 3.0, "supernode_reply_wait": 0.5, "grid_poll": 3.0}
_SERVED = re.compile(r"served (\w+) in ([\d.]+) s \(pull ([\d.]+), app ([\d.]+), push ([\d.]+);")
_FEDSAFE = [sys.executable, "-m", "fedsafe.simulations.cli"]


def run_mode(dep: Deployment, isolation: str, *, timeout_s: float) -> dict[str, Any]:
    """Coordinator + 3 sites until the run finishes; per-round seconds and the worker's timings."""
    logs = dep.root / "logs"
    env = flower_env(dep.root / "cli-flwr-home")
    started: list[ManagedProcess] = []

    def start(name: str, *args: str) -> ManagedProcess:
        proc = ManagedProcess(
            name, [*_FEDSAFE, *args], env=env, cwd=project_root(), log_path=logs / f"{name}.log"
        )
        started.append(proc)
        return proc

    t0 = time.monotonic()
    try:
        server = start(
            "coordinator", "server", "start", "--config", str(dep.server_yaml),
            "--exit-after-run", "--run-timeout", str(timeout_s),
        )  # fmt: skip
        ready = time.monotonic() + 300
        while "submitted run" not in _text(server) and server.running():
            if time.monotonic() > ready:
                raise RuntimeError(f"the coordinator did not start: {_text(server)[-2000:]}")
            time.sleep(0.5)
        for site, path in dep.site_yaml.items():
            start(site, "site", "start", "--config", str(path), "--isolation", isolation)
        deadline = time.monotonic() + timeout_s + 120
        while server.running() and time.monotonic() < deadline:
            time.sleep(1.0)
        wall = time.monotonic() - t0
    finally:
        for proc in reversed(started):
            proc.stop(timeout_s=20)
    (metrics,) = (dep.workdir / "runs").glob("*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    served: dict[str, list[dict[str, float]]] = {}
    for site in dep.site_yaml:
        for match in _SERVED.finditer((logs / f"{site}.log").read_text(errors="replace")):
            kind, total, pull, app, push = match.groups()
            served.setdefault(kind, []).append(
                {"total": float(total), "pull": float(pull), "app": float(app), "push": float(push)}
            )
    return {
        "isolation": isolation,
        "completed": server.process.returncode == 0,
        "wall_s": wall,
        "round_s": [r["seconds"] for r in rows if r.get("phase") == "global"],
        "served": served,
    }


def _text(proc: ManagedProcess) -> str:
    path = proc.log_path
    return path.read_text(errors="replace") if path is not None and path.exists() else ""


def _steady(result: dict[str, Any]) -> list[float]:
    rounds = result["round_s"]
    return rounds[1:] if len(rounds) > 1 else rounds  # round 1 pays the start-up


def rows_from(stock: dict[str, Any], worker: dict[str, Any], poll_s: float = 0.2) -> list[Row]:
    """Per round, per message, and the floor (the worker's per-message time minus its own work)."""
    rows: list[Row] = []
    s_lo, s_med, s_n = summarize(_steady(stock))
    w_lo, w_med, w_n = summarize(_steady(worker))
    note = "" if stock["completed"] and worker["completed"] else "a run did not complete"
    rows.append(Row("deploy", "per round, stock SuperNode (rounds 2..)", "s", s_lo, s_med, s_n))
    rows.append(
        Row(
            "deploy", "per round, fedsafe worker (rounds 2..)", "s", w_lo, w_med, w_n,
            baseline="per round, stock SuperNode", ratio_min=s_lo / w_lo if w_lo else None,
            ratio_median=s_med / w_med if w_med else None, target=">= 5x faster",
            met=bool(w_med and s_med / w_med >= 5), note=note,
        )
    )  # fmt: skip
    rows.append(Row("deploy", "per message, stock (half a round)", "s", s_lo / 2, s_med / 2, s_n))
    rows.append(Row("deploy", "per message, worker (half a round)", "s", w_lo / 2, w_med / 2, w_n))
    served = [s for kind in ("train", "evaluate") for s in worker["served"].get(kind, [])]
    if served:
        app = {k: statistics.median(s["app"] for s in worker["served"].get(k, [])) for k in
               ("train", "evaluate") if worker["served"].get(k)}  # fmt: skip
        own = statistics.median(s["pull"] + s["push"] for s in served) + poll_s / 2
        per_message = w_med / 2
        residual = per_message - statistics.mean(app.values())
        floor = residual - own
        rows.append(Row("deploy", "worker: ClientApp time per message", "s",
                        min(app.values()), statistics.mean(app.values()), len(served)))  # fmt: skip
        rows.append(Row("deploy", "worker's own share (pull+push+poll/2)", "s", own, own, 1))
        rows.append(
            Row(
                "deploy", "Flower polling floor per message (measured)", "s", floor, floor, 1,
                note=f"Flower's fixed polls: {FLOWER_POLLS_S}",
            )
        )  # fmt: skip
        rows.append(
            Row(
                "deploy", "worker overhead above the floor", "s", own, own, 1,
                target="<= 1 s", met=own <= 1.0,
            )
        )  # fmt: skip
    return rows


def run(*, quick: bool) -> list[Row]:
    """Both modes on fresh, identical deployments (fresh budget stores), worker first."""
    rounds = 3 if quick else 5
    timeout = 900.0 if quick else 1800.0
    with tempfile.TemporaryDirectory(prefix="fedsafe-bench-deploy-") as tmp:
        results = {}
        for isolation in ("process", "subprocess"):
            dep = make_deployment(Path(tmp) / isolation, rounds=rounds)
            results[isolation] = run_mode(dep, isolation, timeout_s=timeout)
            print(f"[bench] deploy {isolation}: {results[isolation]['round_s']}", file=sys.stderr)
        rows = rows_from(results["subprocess"], results["process"])
        from fedsafe.simulations.bench.worker_modes import run as worker_modes

        rows += worker_modes(quick=quick, site_yaml=dep.site_yaml["site-a"])
    return rows
