"""A real simulation of the four hospitals, watched: the loopback endpoint is scraped while the
rounds run, alerts reach the ledger and a real webhook, and the run folder still verifies."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.ledger import Ledger
from fedsafe.simulations.cli import main as fedsafe
from fedsafe.simulations.engine import simulate

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # one Ray simulation: about a minute on 2 cores

HOSPITALS = {"cleveland", "hungary", "va_long_beach", "switzerland"}


@dataclass
class Watched:
    run_dir: Path
    summary: dict[str, Any]
    scrapes: list[dict[str, list[tuple[dict[str, str], float]]]]
    hooks: list[dict[str, Any]]
    endpoint: str


@dataclass
class _Scraper:
    """Scrapes the endpoint named in monitor.json every 0.3 s until stopped (bounded)."""

    run_dir: Path
    scrapes: list[dict[str, list[tuple[dict[str, str], float]]]] = field(default_factory=list)
    endpoint: str = ""
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for _ in range(2000):  # ~10 minutes at most
            if self.stop.wait(0.3):
                return
            try:
                state = json.loads((self.run_dir / "monitor.json").read_text())
                self.endpoint = state["endpoint"]
                with urllib.request.urlopen(self.endpoint, timeout=2) as response:
                    text = response.read().decode("utf-8")
            except (OSError, ValueError, KeyError):
                continue  # not up yet, or a file being replaced
            samples: dict[str, list[tuple[dict[str, str], float]]] = {}
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    samples.setdefault(s.name, []).append((s.labels, s.value))
            self.scrapes.append(samples)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    hooks: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            hooks.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    runs = tmp_path_factory.mktemp("runs")
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "watched",
            "runs_dir": str(runs),
            "training": {"rounds": 2},
            "privacy": {"target_epsilon": 8.0},
            "federation": {"fresh_budget": True},
            "monitoring": {
                "enabled": True,
                "port": 0,
                "webhook_url": f"http://127.0.0.1:{receiver.server_address[1]}/alerts",
                # Round 1 takes each site to about 6.4 of its cap of 30 (21 %): alert from 20 %.
                "epsilon_alert_fraction": 0.2,
            },
        },
    )
    run_dir = runs / "watched-run"
    scraper = _Scraper(run_dir)
    thread = threading.Thread(target=scraper.run, daemon=True)
    thread.start()
    try:
        summary = simulate(cfg, run_dir)
    finally:
        scraper.stop.set()
        thread.join(10)
        receiver.shutdown()
        receiver.server_close()
        serving.join(5)
    yield Watched(run_dir, summary, scraper.scrapes, hooks, scraper.endpoint)


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    ((_, value),) = samples[name]
    return value


def test_the_endpoint_was_scraped_while_the_rounds_ran(watched: Watched) -> None:
    running = [s for s in watched.scrapes if s["fedsafe_run_info"][0][0]["status"] == "running"]
    assert running, f"no scrape during the rounds ({len(watched.scrapes)} scrapes)"
    rounds = {_one(s, "fedsafe_round") for s in running}
    assert rounds <= {1.0, 2.0} and 1.0 in rounds
    assert all(_one(s, "fedsafe_rounds_planned") == 2.0 for s in running)
    seen = [s for s in running if s.get("fedsafe_site_epsilon")]
    assert seen, "no scrape showed a site's epsilon"
    last = seen[-1]
    assert {labels["site"] for labels, _ in last["fedsafe_site_epsilon"]} == HOSPITALS
    caps = {labels["site"]: value for labels, value in last["fedsafe_site_epsilon_cap"]}
    assert caps == dict.fromkeys(HOSPITALS, 30.0)
    assert _one(last, "fedsafe_ledger_head_seq") > 0


def test_the_endpoint_is_gone_once_the_run_ended(watched: Watched) -> None:
    port = int(watched.endpoint.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_alerts_are_in_the_ledger_and_reached_the_webhook(watched: Watched) -> None:
    with Ledger.open(watched.run_dir / "ledger.sqlite") as ledger:
        alerts = [e.payload for e in ledger.entries() if e.kind == "alert"]
    assert {(a["rule"], a["site"], a["round"]) for a in alerts} == {
        ("epsilon_near_cap", site, 1) for site in HOSPITALS
    }
    deadline = time.monotonic() + 5
    while len(watched.hooks) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {(h["rule"], h["site"], h["run_id"]) for h in watched.hooks} == {
        ("epsilon_near_cap", site, "watched-run") for site in HOSPITALS
    }


def test_the_watched_run_folder_still_verifies(
    watched: Watched, capsys: pytest.CaptureFixture[str]
) -> None:
    key = watched.run_dir.parent / "coordinator" / "keys" / "server_signing.pub"
    assert fedsafe(["audit", "verify", str(watched.run_dir), "--key", str(key), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]


def test_status_watch_reads_the_finished_run(
    watched: Watched, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["server", "status", "--watch", "--run-dir", str(watched.run_dir), "--count", "1"]
    assert fedsafe(args) == 0
    out = capsys.readouterr().out
    assert "run watched-run (finished): round 2/2" in out and "verified" in out
    for site in HOSPITALS:
        assert site in out
