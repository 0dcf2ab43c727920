"""The SQLite settings every fedsafe store needs: durable commits and writers that lock first.

pysqlite's implicit BEGIN is deferred, so two processes could both read the old state (a
budget's spend, a ledger's head) and both write on top of it. A connection marked
`execution_options(fedsafe_write=True)` takes the write lock up front with BEGIN IMMEDIATE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event, inspect

__all__ = ["WRITE_OPTION", "configure_sqlite", "table_names", "transaction"]

WRITE_OPTION = "fedsafe_write"


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def configure_sqlite(engine: Engine) -> None:
    """WAL journal, synchronous=FULL (a commit survives power loss), BEGIN IMMEDIATE for writers.

    Idempotent: an engine configured twice (opened by the storage layer, then handed to a
    store) must not issue BEGIN twice.
    """
    if not event.contains(engine, "connect", _on_connect):
        event.listen(engine, "connect", _on_connect)
    if not event.contains(engine, "begin", _on_begin):
        event.listen(engine, "begin", _on_begin)


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction on `engine`; a writer takes the write lock first (see above)."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: write})
        with conn.begin():
            yield conn


# What SQLAlchemy's SQLite reflection asks for the main schema's tables, without building an
# inspector (a store checks its tables on every open, several times per round).
_SQLITE_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite~_%' ESCAPE '~'"
)


def table_names(conn: Connection) -> set[str]:
    """The tables in the database `conn` is on (SQLite's own internal tables left out)."""
    if conn.dialect.name == "sqlite":
        return {str(row[0]) for row in conn.exec_driver_sql(_SQLITE_TABLES)}
    return set(inspect(conn).get_table_names())
