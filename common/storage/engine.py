"""Where a store lives: its URL, and an engine with the settings every fedsafe store needs.

A plain path is a SQLite file (a folder means ``<folder>/<default_name>``); anything with
``://`` is an SQLAlchemy URL as given (PostgreSQL for a shared ledger); ``sqlite://`` is an
in-memory store shared by every thread, for simulations.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.pool import StaticPool

from fedsafe.common.storage.sqlite import configure_sqlite

__all__ = [
    "is_memory",
    "is_sqlite",
    "open_engine",
    "private_file",
    "sqlite_path",
    "store_url",
]


def store_url(url_or_path: str | os.PathLike[str], *, default_name: str | None = None) -> str:
    """The store's URL: as given when it has ``://``, else the SQLite file at that path."""
    text = os.fspath(url_or_path)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if default_name is not None and path.is_dir():
        path = path / default_name
    return f"sqlite:///{path.resolve()}"


_MEMORY = (None, "", ":memory:")


def _sqlite_url(url: str) -> URL | None:
    """The parsed URL when it is a SQLite one (any driver), else None."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    return parsed if parsed.get_backend_name() == "sqlite" else None


def is_sqlite(url: str) -> bool:
    """Any SQLite URL, whatever its driver (`sqlite://`, `sqlite+pysqlite://`, ...)."""
    return _sqlite_url(url) is not None


def is_memory(url: str) -> bool:
    """True for an in-memory SQLite URL."""
    parsed = _sqlite_url(url)
    return parsed is not None and parsed.database in _MEMORY


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite file URL; None for memory, a URI form, or another database."""
    parsed = _sqlite_url(url)
    if parsed is None or parsed.database in _MEMORY:
        return None
    database = str(parsed.database)
    if database.startswith("file:") or parsed.query.get("uri") == "true":
        return None  # a SQLite URI (mode=ro, ...): opened as given, no file made or tightened
    return Path(database)


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


# Engines kept for stores opened again and again in one process (a site's budget store, two
# or three times per round): SQLAlchemy's statement cache lives in the engine, so a fresh
# engine per open compiles every statement afresh. Each open still starts on a fresh SQLite
# connection (no page cache or WAL state survives from the last open: a file rewritten in
# place between two opens reads as written). Bounded: a process simulating 1,000 sites
# keeps 64.
_SHARED_MAX = 64
_shared: OrderedDict[str, Engine] = OrderedDict()
_shared_lock = threading.Lock()


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """(process, device, inode) of the file a pooled connection may go on using."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.getpid(), st.st_dev, st.st_ino


def _guard_pool(engine: Engine, path: Path) -> None:
    """A pooled connection is used again only in the process that opened it and only while
    `path` is still the file it opened: a store deleted, replaced or moved between two opens
    is opened afresh by its path, as a fresh engine would (never a handle to the old file)."""

    def on_connect(_dbapi: Any, record: Any) -> None:
        record.info["fedsafe_file"] = _file_identity(path)

    def on_checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        opened = record.info.get("fedsafe_file")
        if opened is None or opened != _file_identity(path):
            raise DisconnectionError(f"{path} is not the file this connection opened")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "checkout", on_checkout)


def _shared_engine(url: str, path: Path) -> Engine:
    """This process's engine on the SQLite file at ``url`` (``path``), made on first use."""
    key = f"{os.getpid()}:{url}"
    with _shared_lock:
        engine = _shared.get(key)
        if engine is not None:
            _shared.move_to_end(key)
            engine.dispose()  # this open starts on a fresh connection, as with a new engine
            return engine
        engine = create_engine(url, connect_args={"timeout": 30})
        configure_sqlite(engine)
        _guard_pool(engine, path)
        _shared[key] = engine
        while len(_shared) > _SHARED_MAX:
            _shared.popitem(last=False)[1].dispose()
        return engine


def _forget_in_child() -> None:
    """A forked child never touches its parent's SQLite connections (SQLite forbids it), nor
    the lock another of its parent's threads may have held at the fork."""
    global _shared_lock
    _shared_lock = threading.Lock()
    for engine in _shared.values():
        engine.dispose(close=False)
    _shared.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def open_engine(
    url: str,
    *,
    create: bool,
    private: bool = True,
    missing: Callable[[Path], Exception] | None = None,
    shared: bool = False,
) -> Engine:
    """An engine on ``url``; for SQLite: WAL, durable commits, writers that lock first.

    With ``create=False`` a missing SQLite file is ``missing(path)`` (a mistyped path must
    never read as an empty store). With ``create`` and ``private`` a new file is mode 0600.
    With ``shared`` a SQLite file's engine (its compiled statements) is reused by later opens
    in this process, each on a fresh connection (see `_shared_engine`); the file checks above
    still run on every open.
    """
    if is_memory(url):
        engine = create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
        configure_sqlite(engine)
        return engine
    if not is_sqlite(url):
        return create_engine(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.is_file():
            raise (missing or _missing)(path)
        if create and private:
            private_file(path)
        elif create:
            path.parent.mkdir(parents=True, exist_ok=True)
    if shared and path is not None:
        return _shared_engine(url, path)
    engine = create_engine(url, connect_args={"timeout": 30})
    configure_sqlite(engine)
    return engine


def _missing(path: Path) -> Exception:
    return FileNotFoundError(f"no store at {path}")
