"""The SQLite settings every fedsafe store needs: durable commits and writers that lock first.

pysqlite's implicit BEGIN is deferred, so two processes could both read the old state (a
budget's spend, a ledger's head) and both write on top of it. A connection marked
`execution_options(fedsafe_write=True)` takes the write lock up front with BEGIN IMMEDIATE.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, event

__all__ = ["WRITE_OPTION", "configure_sqlite"]

WRITE_OPTION = "fedsafe_write"


def configure_sqlite(engine: Engine) -> None:
    """WAL journal, synchronous=FULL (a commit survives power loss), BEGIN IMMEDIATE for writers."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
