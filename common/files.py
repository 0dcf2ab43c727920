"""Files only their owner may read: budget stores, consent registries, and their SQLite journals."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_file"]


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if missing, else tighten it to 0600; return it.

    SQLite gives its journal and WAL files the database file's mode, so a store created
    through this stays unreadable to other local users (a budget history and consent records
    are personal to the site or the coordinator).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path
