"""Whole-file writes that a reader never sees half done, and that survive a crash once returned.

One recipe for every file fedsafe replaces (key files, the budget store's signed head, the
ledger witness, checkpoints, the update cache, reports, a site file): a temporary file in the
same folder, its mode set before the first byte, fsync, rename over the old file, fsync the
folder. A failure at any step leaves the old file as it was and no temporary behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["PRIVATE_MODE", "PUBLIC_MODE", "write_atomic"]

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(
    path: Path, data: bytes | str, *, mode: int = PRIVATE_MODE, sync_folder: bool = True
) -> Path:
    """Replace ``path`` with ``data`` atomically and durably (the file and its folder are
    fsynced: a returned write survives power loss), the file mode ``mode`` from its first byte.

    With ``sync_folder=False`` the folder is not fsynced: after a power loss ``path`` holds the
    old content or the new, each whole, but the new one may be lost. Only for a write whose
    loss the reader already recovers from (the budget head's settle: the head before it names
    the same state as pending).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_folder:
        _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (the folder entry), where the platform allows it."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
