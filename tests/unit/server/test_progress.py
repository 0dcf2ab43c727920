"""The round progress bar: with an ETA on a terminal, silent when the output is a log."""

from __future__ import annotations

import io

from rich.console import Console

from fedsafe.common.flower_env import quiet_actor_shutdown
from fedsafe.server.progress import RoundProgress


def test_a_terminal_shows_rounds_done_and_what_is_left() -> None:
    out = io.StringIO()
    bar = RoundProgress(3, console=Console(file=out, force_terminal=True, width=120))
    bar.round_done(1)
    bar.round_done(2)
    bar.close()
    text = out.getvalue()
    assert bar.shown is False and "2/3" in text and "ETA" in text


def test_a_log_gets_no_bar() -> None:
    out = io.StringIO()
    bar = RoundProgress(3, console=Console(file=out, force_terminal=False))
    bar.round_done(1)
    bar.close()
    assert out.getvalue() == "" and not bar.shown


def test_flowers_actor_shutdown_warning_is_dropped_and_nothing_else() -> None:
    import logging

    quiet_actor_shutdown()
    quiet_actor_shutdown()  # idempotent
    flwr_log = logging.getLogger("flwr")
    keep = logging.LogRecord("flwr", logging.WARNING, "x", 1, "Potential overflow", None, None)
    drop = logging.LogRecord(
        "flwr", logging.WARNING, "x", 1, "Manually terminating %s", ("ClientAppActor",), None
    )
    assert flwr_log.filter(keep) and not flwr_log.filter(drop)
