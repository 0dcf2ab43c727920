"""`fedsafe server status --watch`: the live run state from the run folder's monitor.json.

The file is what the coordinator's monitor writes after every event; this reader treats it as
data from whoever could write the folder: its size is bounded, its text is printed with every
control character escaped (a site name must not move the cursor or recolour the terminal).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from fedsafe.server.monitor.metrics import MonitorError
from fedsafe.server.monitor.state import STATE_FILE

__all__ = ["MAX_STATE_BYTES", "latest_state_file", "read_state", "render", "watch"]

MAX_STATE_BYTES = 4 * 1024 * 1024


def latest_state_file(*, run_dir: Path | None = None, runs_dir: Path | None = None) -> Path:
    """`run_dir/monitor.json`, or the newest one under `runs_dir`; MonitorError if none."""
    if run_dir is not None:
        return run_dir / STATE_FILE
    if runs_dir is None:
        raise MonitorError("status --watch needs a run folder (--run-dir) or --config")
    found = sorted(
        (p for p in runs_dir.glob(f"*/{STATE_FILE}") if p.is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise MonitorError(
            f"no {STATE_FILE} under {runs_dir}: is monitoring.enabled true for the run?"
        )
    return found[-1]


def read_state(path: Path) -> dict[str, Any]:
    """The state the monitor last wrote; MonitorError if missing, too large or not its JSON."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except OSError as err:
        raise MonitorError(f"cannot read {path}: {err.strerror or err}") from None
    if len(raw) > MAX_STATE_BYTES:
        raise MonitorError(f"{path} is over {MAX_STATE_BYTES} bytes: not a monitor state file")
    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MonitorError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(state, dict) or state.get("format") != "fedsafe-monitor-v1":
        raise MonitorError(f"{path} is not a fedsafe monitor state (format fedsafe-monitor-v1)")
    return state


def _safe(value: object) -> str:
    """Printable text: control characters (ANSI escapes, newlines) written as \\x.. escapes."""
    text = str(value)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _number(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def render(state: dict[str, Any], *, now: float | None = None) -> str:
    """The state as a few lines of text for a terminal."""
    now = time.time() if now is None else now
    ledger = state.get("ledger") if isinstance(state.get("ledger"), dict) else {}
    assert isinstance(ledger, dict)
    verified = {True: "verified", False: "CHECK FAILED", None: "not checked yet"}
    started = state.get("round_started_at")
    timing = (
        f"{max(0.0, now - started):.1f} s into the round"
        if isinstance(started, int | float)
        else f"last round {_number(state.get('last_round_seconds'), '.1f')} s"
    )
    head = str(ledger.get("head_hash") or "")[:16]
    lines = [
        f"run {_safe(state.get('run_id'))} ({_safe(state.get('status'))}): round "
        f"{_safe(state.get('round'))}/{_safe(state.get('rounds_planned'))}, {timing} "
        f"(timeout {_number(state.get('round_timeout_s'), 'g')} s)",
        f"ledger: seq {_safe(ledger.get('seq'))} head {_safe(head)}... "
        f"{verified.get(ledger.get('verified'), '?')}",
    ]
    if ledger.get("problem"):
        lines.append(f"  {_safe(ledger['problem'])}")
    counts = state.get("this_round") if isinstance(state.get("this_round"), dict) else {}
    assert isinstance(counts, dict)
    lines.append(
        "this round: " + ", ".join(f"{_safe(k)} {_safe(v)}" for k, v in sorted(counts.items()))
    )
    sites = state.get("sites") if isinstance(state.get("sites"), dict) else {}
    assert isinstance(sites, dict)
    lines.append(f"  {'site':<24} {'last':<9} {'epsilon':>8} {'cap':>8} {'used':>6}")
    for name, site in sorted(sites.items()):
        if not isinstance(site, dict):
            continue
        used = site.get("cap_fraction")
        lines.append(
            f"  {_safe(name)[:24]:<24} {_safe(site.get('status'))[:9]:<9} "
            f"{_number(site.get('epsilon'), '8.3f'):>8} {_number(site.get('cap'), '8.3g'):>8} "
            f"{_number(used, '6.0%') if isinstance(used, int | float) else '-':>6}"
        )
    alerts = state.get("alerts") if isinstance(state.get("alerts"), dict) else {}
    assert isinstance(alerts, dict)
    if alerts:
        lines.append("alerts: " + ", ".join(f"{_safe(k)} {_safe(v)}" for k, v in alerts.items()))
    if state.get("last_error"):
        lines.append(
            f"last error (round {_safe(state.get('last_error_round'))}): "
            f"{_safe(state['last_error'])}"
        )
    if state.get("endpoint"):
        lines.append(f"metrics: {_safe(state['endpoint'])}")
    return "\n".join(lines)


def watch(
    find: Callable[[], Path],
    *,
    interval_s: float,
    count: int | None,
    out: TextIO,
    as_json: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the state every `interval_s` seconds, `count` times (None: until interrupted).

    Returns 0, or 1 when the state could not be read at the last look. A run that has not
    written its state yet is reported and looked for again, not an error that ends the watch.
    """
    if not interval_s > 0:
        raise MonitorError(f"--interval must be > 0 seconds, got {interval_s}")
    if count is not None and count < 1:
        raise MonitorError(f"--count must be >= 1, got {count}")
    shown, code = 0, 0
    try:
        while count is None or shown < count:
            if shown:
                sleep(interval_s)
            try:
                state = read_state(find())
                text = json.dumps(state, sort_keys=True) if as_json else render(state)
                code = 0
            except MonitorError as err:
                text, code = f"no live state yet: {err}", 1
            stamp = "" if as_json else f"--- {time.strftime('%H:%M:%S')}\n"
            print(f"{stamp}{text}", file=out, flush=True)
            shown += 1
    except KeyboardInterrupt:  # Ctrl-C is how an unbounded watch ends
        pass
    return code
