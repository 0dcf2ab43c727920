"""Interleaved timing (A B A B ...) and process-tree memory sampling from /proc."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["interleave", "ratio", "TreeMemory", "tree_pids"]


def interleave(
    cases: Mapping[str, Callable[[], object]], *, repeats: int, inner: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each case, measured in turns (rotating who goes first).

    Interleaving spreads the noise of a shared machine (other jobs, turbo, caches) over all
    cases alike, so ratios stay meaningful even when absolute figures wander.
    """
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            fn = cases[name]
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) / inner)
    return samples


def ratio(a: list[float], b: list[float]) -> tuple[float, float]:
    """(min a / min b, median a / median b)."""
    import statistics

    return min(a) / min(b), statistics.median(a) / statistics.median(b)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (Ray's GCS, raylet and worker processes included)."""
    children = _children_map()
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB; PSS shares common pages (torch's libraries) fairly between processes."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class TreeMemory:
    """Samples the summed RSS and PSS of a process tree in a thread; keeps the peaks."""

    def __init__(self, root: int, interval_s: float = 0.5) -> None:
        self.root = root
        self.interval_s = interval_s
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        pids = tree_pids(self.root)
        rss = pss = 0
        for pid in pids:
            r, p = _memory_kib(pid)
            rss, pss = rss + r, pss + p
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_pss_kib = max(self.peak_pss_kib, pss)
        self.peak_processes = max(self.peak_processes, len(pids))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_pss_gib(self) -> float:
        return self.peak_pss_kib / 2**20

    @property
    def peak_rss_gib(self) -> float:
        return self.peak_rss_kib / 2**20
