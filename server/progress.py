"""A progress bar of rounds, with an ETA, on an interactive terminal only.

The one log line per round stays (it is what a log file and CI keep); on a terminal the bar
adds where the run is and how long is left. It never prints when the output is not a TTY.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["RoundProgress"]


class RoundProgress:
    """Rounds done out of planned; `console` defaults to stderr, shown only if it is a TTY."""

    def __init__(self, total: int, *, done: int = 0, console: Console | None = None) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self._progress: Progress | None = None
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("[bold]rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("rounds", total=total, completed=done)
        self._progress.start()

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def round_done(self, server_round: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=server_round)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
