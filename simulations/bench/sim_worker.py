"""One simulation in its own process (fedsafe or the bare baseline), with phase timestamps.

Run by the benchmarks as `python -m simulations.bench.sim_worker SPEC.json`; writes the
result JSON named in the spec. Timestamps are wall-clock (time.time) so the parent's spawn
time and this process's phases share one clock.
"""

from __future__ import annotations

import time

T_START = time.time()  # before any heavy import: interpreter start-up ends here

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

__all__ = ["main"]

MARKS: dict[str, float] = {"start": T_START}


def _mark(name: str) -> None:
    MARKS.setdefault(name, time.time())


def _wrap(owner: Any, attr: str, before: str | None, after: str | None) -> None:
    """Note the wall time of the first call's start and end of `owner.attr`."""
    original: Callable[..., Any] = getattr(owner, attr)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            _mark(before)
        try:
            return original(*args, **kwargs)
        finally:
            if after:
                _mark(after)

    setattr(owner, attr, wrapped)


def _instrument_flower() -> None:
    from flwr.server.superlink.fleet.vce.backend import raybackend

    _wrap(raybackend.RayBackend, "init_ray", "ray_init_start", "ray_init_end")
    _wrap(raybackend.RayBackend, "build", "actors_start", "actors_end")


def _run_fedsafe(cfg: Any, run_dir: Path) -> dict[str, Any]:
    import fedsafe.server.run_steps as steps  # the module that calls the roll call
    from fedsafe.server.recorder import RunRecorder
    from fedsafe.simulations.engine import simulate

    _wrap(steps, "wait_for_sites", "server_main_start", None)
    _wrap(steps, "roll_call", "roll_call_start", "roll_call_end")
    _wrap(RunRecorder, "round_started", "round1_start", None)
    _mark("imported")
    _mark("simulate_call")
    summary = simulate(cfg, run_dir)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = [x["seconds"] for x in lines if x.get("phase") == "global"]
    return {
        "round_seconds": seconds,
        "rounds_completed": summary["rounds_completed"],
        "accuracy": summary["global"]["accuracy"],
    }


def _run_baseline(cfg: Any, run_dir: Path) -> dict[str, Any]:
    from flwr.simulation import run_simulation

    from fedsafe.common.data import site_names
    from fedsafe.simulations.bench.baseline_app import build_baseline_apps
    from fedsafe.simulations.resources import backend_config  # as simulations/engine.py asks

    _mark("imported")
    _mark("simulate_call")
    server, client, strategy = build_baseline_apps(cfg)
    _wrap(strategy, "configure_train", "round1_start", None)
    n = len(site_names(cfg.dataset))
    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=n,
        backend_config=backend_config(cfg, n),
    )  # type: ignore[arg-type]
    rounds = sorted(strategy.round_end)
    seconds = [strategy.round_end[r] - strategy.round_start[r] for r in rounds]
    return {"round_seconds": seconds, "rounds_completed": len(rounds)}


def main(spec_path: str) -> None:
    """Read the spec, run one simulation, write timestamps, round times and peak memory."""
    spec = json.loads(Path(spec_path).read_text())
    for key in ("FLWR_TELEMETRY_ENABLED", "RAY_USAGE_STATS_ENABLED"):
        os.environ.setdefault(key, "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    warnings.simplefilter("ignore")
    import flwr.simulation  # noqa: F401
    import opacus  # noqa: F401
    import torch  # noqa: F401

    from fedsafe.common.config import ExperimentConfig, from_dict

    _instrument_flower()
    cfg = from_dict(ExperimentConfig, spec["config"])
    run_dir = Path(spec["run_dir"])
    profile = spec.get("profile")
    runner = _run_fedsafe if spec["kind"] == "fedsafe" else _run_baseline
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(runner, cfg, run_dir)
        profiler.dump_stats(profile)
    else:
        result = runner(cfg, run_dir)
    _mark("end")
    import resource

    result["marks"] = MARKS
    result["self_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    Path(spec["out"]).write_text(json.dumps(result, indent=2))
    sys.stdout.flush()
    os._exit(0)  # Ray's atexit hooks can hang a driver on a loaded machine; all is written


if __name__ == "__main__":
    main(sys.argv[1])
