"""A real loopback webhook receiver, and a monitor wired to a test federation's coordinator."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

from fedsafe.common.config import ExperimentConfig, MonitoringConfig, from_dict
from fedsafe.server.monitor import Monitor, ObservedRecorder, RunState

__all__ = [
    "Federation",
    "Receiver",
    "Site",
    "monitored",
    "one_round_epsilon",
    "receiver",
    "state_file",
]


def _server_conftest() -> ModuleType:
    """tests/unit/server/conftest.py, by its path: `from conftest import` names whichever
    conftest.py pytest imported last, and a folder below tests/unit/server may hold another."""
    name = "fedsafe_tests_server_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parents[1] / "conftest.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# The in-process sites; the `federation` fixture (pytest's copy of that conftest) runs them.
Federation = _server_conftest().Federation
Site = _server_conftest().Site
one_round_epsilon = _server_conftest().one_round_epsilon


class Receiver:
    """What a webhook receiver got; `mode` is how it answers: ok, error, hang or redirect."""

    def __init__(self, mode: str, redirect_to: str | None = None) -> None:
        self.mode, self.redirect_to = mode, redirect_to
        self.bodies: list[dict[str, Any]] = []
        self.release = threading.Event()  # a hanging receiver answers once this is set
        self.url = ""


@contextmanager
def receiver(mode: str = "ok", redirect_to: str | None = None) -> Iterator[Receiver]:
    got = Receiver(mode, redirect_to)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length", "0"))
            got.bodies.append(json.loads(self.rfile.read(length)))
            if got.mode == "hang":
                got.release.wait(10.0)
            if got.mode == "redirect":
                self.send_response(302)
                self.send_header("Location", got.redirect_to or "/")
            else:
                self.send_response(500 if got.mode == "error" else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token-123"
    try:
        yield got
    finally:
        got.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5.0)


def monitored(
    fed: Federation,
    *,
    caps: dict[str, float] | None = None,
    round_timeout_s: float = 600.0,
    watchdog_interval_s: float = 0.5,
    **settings: Any,
) -> Monitor:
    """Observe `fed`'s real strategy: its recorder becomes an ObservedRecorder of a monitor
    on the federation's own ledger (started: endpoint up)."""
    cfg = MonitoringConfig(enabled=True, **settings)
    run_dir = fed.tmp / "run"
    state = RunState("run-hostile", rounds_planned=3, round_timeout_s=round_timeout_s)
    caps = caps or {}
    monitor = Monitor(
        cfg,
        state,
        run_dir=run_dir,
        ledger=fed.compliance.ledger,
        server_public_pem=fed.compliance.coordinator.public,
        witness=fed.compliance.witness,
        cap_for=caps.get,
        watchdog_interval_s=watchdog_interval_s,
    ).start()
    exp = from_dict(ExperimentConfig, {"name": "hostile", "runs_dir": str(fed.tmp)})
    fed.strategy.recorder = ObservedRecorder(run_dir, exp, monitor, fed.compliance.roster)
    return monitor


def state_file(fed: Federation) -> dict[str, Any]:
    return json.loads((Path(fed.tmp) / "run" / "monitor.json").read_text())
