"""Start a Flower process with a bounded readiness wait, and stop it with its whole process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from fedsafe.common.errors import FedsafeError
from fedsafe.common.flower_env import OFFLINE_FLOWER_ENV

__all__ = [
    "DeployError",
    "ManagedProcess",
    "flower_bin",
    "flower_env",
    "wait_for_port",
    "descendants",
    "free_port",
]


class DeployError(FedsafeError):
    """A Flower process did not start, did not answer in time or a Flower CLI call failed."""


def flower_bin(name: str) -> str:
    """Path of a Flower executable in this Python's environment (where flwr is installed).

    Flower starts its own helpers (`flower-superexec`, `flwr-serverapp`, `flwr-clientapp`)
    by bare name, so the same folder also goes first on the children's PATH.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    raise DeployError(f"Flower executable '{name}' not found next to {sys.executable}")


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Flower process fedsafe starts: offline, own FLWR_HOME, venv PATH."""
    env = dict(os.environ)
    env.update(OFFLINE_FLOWER_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on `host` (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free a moment ago: all are held open until all are chosen, so
    the OS cannot hand the same port out twice (two `free_port()` calls can collide)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def wait_for_port(
    address: str, *, timeout_s: float, process: subprocess.Popen | None = None
) -> None:
    """Block until `host:port` accepts TCP connections; DeployError after `timeout_s`.

    Fails early when `process` exits first, so a SuperLink that could not bind reports
    at once instead of after the whole timeout.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DeployError(
                f"process {process.pid} exited ({process.returncode}) before {address} opened"
            )
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise DeployError(f"{address} did not accept connections within {timeout_s:g} s")


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (Linux /proc), children first; [] elsewhere."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    frontier = [pid]
    while frontier:
        nxt = [c for p in frontier for c in children.get(p, [])]
        out.extend(nxt)
        frontier = nxt
    return out


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class ManagedProcess:
    """One child process (SuperLink, SuperNode) whose stop() also ends what it started.

    Flower starts `flower-superexec` in a new session and the ServerApp/ClientApp from
    there, so a process-group kill would miss them: stop() collects the whole tree by
    parent id first, then sends SIGTERM, waits, and SIGKILLs whatever is left.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the tree, wait up to `timeout_s`, SIGKILL what remains; returns the exit code."""
        tree = descendants(self.pid)
        _signal_all([self.pid, *tree], signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        deadline = time.monotonic() + 5
        tree = [p for p in {*tree, *descendants(self.pid)} if _alive(p)]
        while tree and time.monotonic() < deadline:
            time.sleep(0.1)
            tree = [p for p in tree if _alive(p)]
        _signal_all(tree, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
        return self.process.returncode
