"""Where a store lives: its URL, and an engine with the settings every fedsafe store needs.

A plain path is a SQLite file (a folder means ``<folder>/<default_name>``); anything with
``://`` is an SQLAlchemy URL as given (PostgreSQL for a shared ledger); ``sqlite://`` is an
in-memory store shared by every thread, for simulations.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from fedsafe.common.storage.sqlite import configure_sqlite

__all__ = ["is_memory", "is_sqlite", "open_engine", "private_file", "sqlite_path", "store_url"]


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


def open_engine(
    url: str,
    *,
    create: bool,
    private: bool = True,
    missing: Callable[[Path], Exception] | None = None,
) -> Engine:
    """An engine on ``url``; for SQLite: WAL, durable commits, writers that lock first.

    With ``create=False`` a missing SQLite file is ``missing(path)`` (a mistyped path must
    never read as an empty store). With ``create`` and ``private`` a new file is mode 0600.
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
    engine = create_engine(url, connect_args={"timeout": 30})
    configure_sqlite(engine)
    return engine


def _missing(path: Path) -> Exception:
    return FileNotFoundError(f"no store at {path}")
