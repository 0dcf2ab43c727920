"""A store's engine kept across opens (its compiled statements) never reads a stale file.

As whoever can write the store's folder: a file replaced, rewritten in place or deleted between
two opens is what the next open reads; a forked child never uses its parent's connections.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from fedsafe.common.storage import engine as storage_engine
from fedsafe.common.storage import open_engine, store_url


def _file(path: Path, value: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
        db.execute("DELETE FROM t")
        db.execute("INSERT INTO t VALUES (?)", (value,))
    db.close()


def _read(path: Path) -> str:
    engine = open_engine(store_url(path), create=False, shared=True)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT v FROM t")).scalar_one())
    finally:
        engine.dispose()


def test_the_same_engine_serves_every_open_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _file(path, "a")
    url = store_url(path)
    assert open_engine(url, create=False, shared=True) is open_engine(
        url, create=False, shared=True
    )
    assert open_engine(url, create=False) is not open_engine(url, create=False)


def test_a_file_replaced_between_opens_is_the_file_read(tmp_path: Path) -> None:
    path, other = tmp_path / "store.db", tmp_path / "other.db"
    _file(path, "first")
    assert _read(path) == "first"
    _file(other, "planted")
    os.replace(other, path)  # a new inode under the same name
    assert _read(path) == "planted"


def test_a_file_rewritten_in_place_between_opens_is_the_file_read(tmp_path: Path) -> None:
    path, backup = tmp_path / "store.db", tmp_path / "backup.db"
    _file(path, "old")
    shutil.copy(path, backup)
    _file(path, "new")
    assert _read(path) == "new"
    shutil.copy(backup, path)  # the same inode, rewound
    assert _read(path) == "old"


def test_a_file_deleted_between_opens_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _file(path, "x")
    assert _read(path) == "x"
    path.unlink()
    with pytest.raises(FileNotFoundError):
        _read(path)


def test_a_connection_checked_out_after_a_replace_reconnects(tmp_path: Path) -> None:
    """Within one open too: the pool hands out no connection to a file no longer at the path."""
    path, other = tmp_path / "store.db", tmp_path / "other.db"
    _file(path, "first")
    engine = open_engine(store_url(path), create=False, shared=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t")).scalar_one() == "first"
    _file(other, "second")
    os.replace(other, path)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t")).scalar_one() == "second"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_keeps_none_of_its_parents_engines(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _file(path, "x")
    assert _read(path) == "x"
    assert storage_engine._shared  # noqa: SLF001
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report how many engines it inherited, then read afresh
        try:
            count = len(storage_engine._shared)  # noqa: SLF001
            value = _read(path)
            os.write(write, f"{count}:{value}".encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 100).decode()
    os.close(read)
    assert status == 0 and answer == "0:x"
