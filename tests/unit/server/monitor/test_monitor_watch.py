"""`fedsafe server status --watch`: reads monitor.json as untrusted data, bounded by --count."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from fedsafe.server.deploy.cli import add_server_parser, run_status
from fedsafe.server.deploy.process import DeployError
from fedsafe.server.monitor import RunState
from fedsafe.server.monitor.metrics import MonitorError
from fedsafe.server.monitor.watch import MAX_STATE_BYTES, latest_state_file, read_state, render

ANSI = "\x1b[2J\x1b[31mcleveland"


def _written(run_dir: Path, site: str = "cleveland") -> Path:
    state = RunState("run-7", rounds_planned=5, round_timeout_s=60.0, clock=lambda: 1000.0)
    state.round_started(3)
    state.site_outcome(3, site, "trained", epsilon=2.4, cap=3.0)
    state.ledger(12, "cd" * 32)
    state.ledger_check(None)
    state.alert("epsilon_near_cap")
    run_dir.mkdir(parents=True, exist_ok=True)
    return state.write(run_dir)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["server", "status", *argv])


def test_render_shows_round_sites_epsilon_against_cap_and_the_ledger(tmp_path: Path) -> None:
    text = render(read_state(_written(tmp_path)), now=1004.0)
    assert "run run-7 (running): round 3/5, 4.0 s into the round (timeout 60 s)" in text
    assert "ledger: seq 12 head cdcdcdcdcdcdcdcd... verified" in text
    assert "cleveland" in text and "2.400" in text and "80%" in text
    assert "alerts: epsilon_near_cap 1" in text


def test_a_site_name_with_terminal_escapes_is_printed_escaped(tmp_path: Path) -> None:
    text = render(read_state(_written(tmp_path, site=ANSI)))
    assert "\x1b" not in text and "\\x1b[2J" in text


def test_a_planted_file_that_is_not_the_monitors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(MonitorError, match="not a fedsafe monitor state"):
        read_state(path)
    path.write_bytes(b" " * (MAX_STATE_BYTES + 1))
    with pytest.raises(MonitorError, match="over"):
        read_state(path)
    path.write_bytes(b"\xff{")
    with pytest.raises(MonitorError, match="not valid JSON"):
        read_state(path)


def test_watch_prints_count_times_from_the_run_folder(tmp_path: Path) -> None:
    _written(tmp_path / "run-7")
    out = io.StringIO()
    args = _parse(
        "--watch", "--run-dir", str(tmp_path / "run-7"), "--count", "2", "--interval", "0.01"
    )
    assert run_status(args, out=out) == 0
    assert out.getvalue().count("run run-7 (running)") == 2


def test_watch_json_prints_one_json_document_per_look(tmp_path: Path) -> None:
    _written(tmp_path / "run-7", site=ANSI)
    out = io.StringIO()
    args = _parse("--watch", "--json", "--run-dir", str(tmp_path / "run-7"), "--count", "1")
    assert run_status(args, out=out) == 0
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["sites"][ANSI]["epsilon"] == 2.4 and "\x1b" not in line


def test_watch_before_the_run_wrote_its_state_says_so_and_exits_1(tmp_path: Path) -> None:
    out = io.StringIO()
    args = _parse("--watch", "--run-dir", str(tmp_path), "--count", "1")
    assert run_status(args, out=out) == 1
    assert "no live state yet: cannot read" in out.getvalue()


def test_watch_needs_a_run_folder_or_a_config() -> None:
    with pytest.raises(DeployError, match="--config server.yaml or --run-dir"):
        run_status(_parse("--watch", "--count", "1"), out=io.StringIO())
    with pytest.raises(DeployError, match="status needs --config"):
        run_status(_parse(), out=io.StringIO())


def test_bad_interval_and_count_are_refused(tmp_path: Path) -> None:
    for flags in (["--interval", "0"], ["--count", "0"]):
        args = _parse("--watch", "--run-dir", str(tmp_path), *flags)
        with pytest.raises(MonitorError, match="must be"):
            run_status(args, out=io.StringIO())


def test_the_newest_state_under_runs_dir_is_the_one_watched(tmp_path: Path) -> None:
    import os

    old, new = _written(tmp_path / "old"), _written(tmp_path / "new")
    os.utime(old, (1, 1))
    assert latest_state_file(runs_dir=tmp_path) == new
    with pytest.raises(MonitorError, match="monitoring.enabled"):
        latest_state_file(runs_dir=tmp_path / "empty")
