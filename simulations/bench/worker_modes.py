"""What the site worker saves and what fork-per-message would cost: imports, fork, site load."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fedsafe.simulations.bench.rows import Row, summarize

__all__ = ["run", "import_seconds", "fork_seconds"]

_IMPORT = "import time; t = time.perf_counter(); import client.app; print(time.perf_counter() - t)"


def import_seconds(repeats: int) -> list[float]:
    """A fresh interpreter importing fedsafe's ClientApp (flwr, torch, opacus): stock pays it
    for every message, the worker once."""
    out = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", _IMPORT], capture_output=True, text=True, check=True, timeout=300
        )
        out.append(float(done.stdout.strip().splitlines()[-1]))
    return out


def fork_seconds(repeats: int, *, torch_op: bool) -> list[float]:
    """fork() of a process holding the imports, until the child (optionally after a first
    torch op, which initialises its thread pool again) has exited."""
    import torch

    import fedsafe.client.app  # noqa: F401 - the state a forked child would inherit

    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # child
            if torch_op:
                torch.ones(64, 64) @ torch.ones(64, 64)
            os._exit(0)
        os.waitpid(pid, 0)
        out.append(time.perf_counter() - start)
    return out


def site_load_seconds(site_yaml: Path, repeats: int) -> list[float]:
    """Reading site.yaml, the data file (schema-checked) and the keys, as each message does."""
    from fedsafe.client.site import deployed_site
    from fedsafe.common.config import ExperimentConfig

    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        deployed_site(site_yaml, ExperimentConfig())
        out.append(time.perf_counter() - start)
    return out


def run(*, quick: bool, site_yaml: Path | None = None) -> list[Row]:
    """Rows for the note's in-process vs fork-per-message choice."""
    n = 3 if quick else 10
    rows = []
    lo, med, k = summarize(import_seconds(2 if quick else 5))
    rows.append(Row("worker_modes", "fresh process: import fedsafe ClientApp", "s", lo, med, k))
    for torch_op in (False, True):
        lo, med, k = summarize(fork_seconds(n, torch_op=torch_op))
        what = "fork + first torch op + exit" if torch_op else "fork + exit (imports held)"
        rows.append(Row("worker_modes", what, "s", lo, med, k))
    if site_yaml is not None:
        lo, med, k = summarize(site_load_seconds(site_yaml, n))
        rows.append(Row("worker_modes", "load site.yaml + data + keys", "s", lo, med, k))
    return rows
