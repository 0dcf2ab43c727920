"""One round at a time per budget store, across processes: an OS file lock held while training.

Without it two processes serving the same site (two workers, a stale one, stock subprocess
isolation) could both find a round `reserved` and both train it under one charge. The OS drops
the lock when its holder dies, so a crashed round is still replayed by the next process.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedsafe.client.budget.records import BudgetStoreError

__all__ = ["round_lock"]


@contextmanager
def round_lock(store: Path, *, timeout_s: float = 900.0, poll_s: float = 0.05) -> Iterator[None]:
    """Hold `<store>.lock` exclusively; BudgetStoreError after `timeout_s` of waiting."""
    path = Path(f"{store}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BudgetStoreError(
                        f"another process has held {path} for over {timeout_s:.0f} s: a second "
                        "process is serving this site's store; stop it and retry"
                    ) from None
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
