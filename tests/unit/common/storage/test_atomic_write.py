"""`write_atomic`: a reader sees the old file or the new one, never part of either."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedsafe.common.storage import write_atomic
from fedsafe.common.storage.atomic import PUBLIC_MODE


def test_the_new_content_replaces_the_old_with_the_mode_asked(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "head.json"
    write_atomic(path, "old")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(path, b"new", mode=PUBLIC_MODE)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == PUBLIC_MODE
    assert [p.name for p in path.parent.iterdir()] == ["head.json"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "key.pem"
    write_atomic(path, b"old")

    def broken(_src: object, _dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_the_file_is_private_from_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mode is set before data is written: no window in which others can read a secret."""
    seen: list[int] = []
    real_fdopen = os.fdopen

    def spying_fdopen(fd: int, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        handle = real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]
        real_write = handle.write

        def write(data: bytes) -> int:
            seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
            return int(real_write(data))

        handle.write = write
        return handle

    monkeypatch.setattr(os, "fdopen", spying_fdopen)
    write_atomic(tmp_path / "secret", b"x" * 32)
    assert seen == [0o600]


def test_ports_asked_for_together_are_distinct() -> None:
    """Two `free_port()` calls can return the same port (a flaky deployment test did)."""
    from fedsafe.server.deploy.process import free_ports

    assert len(set(free_ports(64))) == 64
