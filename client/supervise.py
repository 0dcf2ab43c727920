"""Run a site's SuperNode and its worker together: restart a dead worker, stop both on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from fedsafe.common.errors import FedsafeError
from fedsafe.common.storage import write_atomic

__all__ = ["write_secret", "Supervisor", "BACKOFF_S", "worker_command"]

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # delay before restart k; the last one repeats
_STABLE_S = 60.0  # a worker up this long resets the backoff
_GIVE_UP_AFTER = 5  # consecutive workers that die within _QUICK_S of starting: stop everything
_QUICK_S = 10.0


def write_secret(path: Path) -> Path:
    """A fresh 32-byte SuperExec secret, mode 0600 from its first byte, in a 0700 folder.

    A new one at every start: a process that read an old one can no longer claim tasks.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    return write_atomic(path, secrets.token_hex(32).encode("ascii"))  # 0600 from its first byte


def worker_command(site_yaml: Path, runtime_api: str, secret: Path) -> list[str]:
    """The worker, run by this same Python (the installed fedsafe, never the FAB's code).

    `-P`: the current folder is not put on sys.path, so a `client/` folder lying where
    the admin started the site cannot stand in for the installed package.
    """
    return [
        sys.executable,
        "-P",
        "-m",
        "fedsafe.client.worker",
        "--config",
        str(site_yaml),
        "--runtime-api",
        runtime_api,
        "--secret-file",
        str(secret),
    ]


def _wait_for_port(address: str, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.2)
    return False


class _Stop(Exception):
    """SIGTERM or SIGINT: stop the worker and the SuperNode."""


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


@dataclass
class Supervisor:
    """The SuperNode runs as long as it likes; the worker is kept alive beside it."""

    supernode: Sequence[str]
    worker: Sequence[str]
    env: Mapping[str, str]
    runtime_api: str
    out: TextIO
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 20.0
    backoff_s: Sequence[float] = BACKOFF_S

    def _say(self, text: str) -> None:
        print(f"[fedsafe site] {text}", file=self.out, flush=True)

    def _spawn(self, command: Sequence[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(command), env=dict(self.env), stdin=subprocess.DEVNULL)

    def _stop(self, process: subprocess.Popen[bytes] | None, name: str) -> None:
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self._say(f"{name} pid {process.pid} ignored SIGTERM for {self.stop_timeout_s:g} s")
            process.kill()
            process.wait(timeout=10)

    def run(self) -> int:
        """Until SIGTERM (0), the SuperNode exiting (its code) or a worker that keeps dying."""
        previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        node = worker = None
        try:
            node = self._spawn(self.supernode)
            self._say(f"SuperNode pid {node.pid}; Runtime API {self.runtime_api} (loopback)")
            if not _wait_for_port(self.runtime_api, node, self.start_timeout_s):
                self._say(f"the SuperNode's Runtime API did not open ({node.poll()})")
                return 1 if node.poll() in (None, 0) else int(node.returncode)
            restarts = quick = 0
            while True:
                worker = self._spawn(self.worker)
                started = time.monotonic()
                self._say(f"site worker pid {worker.pid} started")
                while node.poll() is None and worker.poll() is None:
                    time.sleep(0.2)
                if node.poll() is not None:
                    self._say(f"SuperNode exited with {node.returncode}; stopping the worker")
                    return int(node.returncode or 1)
                lived = time.monotonic() - started
                restarts = 0 if lived >= _STABLE_S else restarts
                quick = quick + 1 if lived < _QUICK_S else 0
                if quick >= _GIVE_UP_AFTER:
                    self._say(f"site worker died {quick} times within {_QUICK_S:g} s; giving up")
                    return 1
                delay = self.backoff_s[min(restarts, len(self.backoff_s) - 1)]
                restarts += 1
                self._say(
                    f"site worker pid {worker.pid} exited with {worker.returncode} after "
                    f"{lived:.1f} s; restart {restarts} in {delay:g} s"
                )
                time.sleep(delay)
        except _Stop:
            self._say("stopping: site worker, then SuperNode")
            return 0
        except OSError as err:
            raise FedsafeError(f"could not start a site process: {err}") from None
        finally:
            for sig in previous:  # a second Ctrl-C must not orphan the children
                signal.signal(sig, signal.SIG_IGN)
            self._stop(worker, "site worker")
            self._stop(node, "SuperNode")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
