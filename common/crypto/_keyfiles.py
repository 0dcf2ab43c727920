"""Key-file I/O: private files 0600 in 0700 directories, never silently overwritten."""

from __future__ import annotations

import os
from pathlib import Path

from fedsafe.common.errors import FedsafeError
from fedsafe.common.storage.atomic import PRIVATE_MODE, PUBLIC_MODE, write_atomic

__all__ = [
    "KeyFileError",
    "KeyExistsError",
    "PRIVATE_MODE",
    "DIRECTORY_MODE",
    "ensure_directory",
    "refuse_existing",
    "write_new_private",
    "replace_file",
    "read_key_file",
]

DIRECTORY_MODE = 0o700


class KeyFileError(FedsafeError):
    """A key or certificate file is missing, unreadable or malformed; the message names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


class KeyExistsError(KeyFileError):
    """Refused to overwrite an existing private key (losing it would orphan every enrollment)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path, "private key already exists; refusing to overwrite it (move it away first)"
        )


def ensure_directory(directory: Path) -> Path:
    """Create ``directory`` (and parents) and restrict it to its owner (0700)."""
    directory = Path(directory).expanduser()
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    directory.chmod(DIRECTORY_MODE)
    return directory


def refuse_existing(*paths: Path) -> None:
    """Raise KeyExistsError for the first path that exists, before anything is written."""
    for path in paths:
        if path.exists() or path.is_symlink():
            raise KeyExistsError(path)


def write_new_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600; O_EXCL makes a concurrent writer fail, not clobber."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        raise KeyExistsError(path) from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), PRIVATE_MODE)
        handle.write(data)


def replace_file(path: Path, data: bytes, *, private: bool) -> None:
    """Atomically and durably write ``path``, 0600 if ``private`` else 0644."""
    write_atomic(path, data, mode=PRIVATE_MODE if private else PUBLIC_MODE)


def read_key_file(path: Path) -> bytes:
    """Read a key or certificate file, turning OS errors into a KeyFileError naming the file."""
    path = Path(path).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(path, "file not found") from None
    except IsADirectoryError:
        raise KeyFileError(path, "is a directory, expected a key file") from None
    except OSError as err:
        raise KeyFileError(path, f"cannot read file ({err.strerror or err})") from None
