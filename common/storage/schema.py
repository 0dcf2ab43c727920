"""Each store's schema version: stamped at creation, checked at every open, migrated forward.

A store file outlives the fedsafe that wrote it (a site upgrades, an auditor opens an old
ledger). Reading a layout this code does not know could misread a charge or a consent row, so
a version this fedsafe cannot read is refused with an error naming the store, the file, the
version found and the versions it reads; an older version with a registered migration is
brought forward inside the writer's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, Text, select

from fedsafe.common.errors import FedsafeError
from fedsafe.common.storage.sqlite import table_names, transaction

__all__ = ["Migration", "StoreSchema", "StoreVersionError", "meta_table"]

# One step: brings a store from version N to N + 1 inside the caller's write transaction.
Migration = Callable[[Connection], None]
_KEY = "schema_version"


class StoreVersionError(FedsafeError):
    """A store's schema version is one this fedsafe cannot read (newer, unknown or unmarked)."""

    def __init__(
        self, store: str, where: str, found: str | None, readable: str, advice: str
    ) -> None:
        self.store, self.where, self.found = store, where, found
        shown = "none (no version recorded)" if found is None else repr(found)
        super().__init__(
            f"{store} {where} has schema version {shown}; this fedsafe reads {readable}. "
            f"Keep the file as it is (it is a record) and {advice}"
        )


def meta_table(metadata: MetaData, name: str) -> Table:
    """The key/value table a store keeps its version (and other identity) in."""
    return Table(
        name,
        metadata,
        Column("key", String(40), primary_key=True),
        Column("value", Text, nullable=False),
    )


@dataclass(frozen=True)
class StoreSchema:
    """The version a store's code writes, and the migrations that bring older files to it.

    ``migrations[n]`` takes a store from version n to n + 1. A file from before stores carried
    a version is recognised by its tables: ``unmarked`` pairs a table with the version its
    presence means, first match wins (a file matching none is refused).
    """

    store: str
    version: int
    meta: Table
    migrations: Mapping[int, Migration] = field(default_factory=dict)
    unmarked: tuple[tuple[str, int], ...] = ()
    advice: str = "open it with the fedsafe that wrote it"

    def readable(self) -> tuple[int, ...]:
        """Every version this code opens: its own and those a chain of migrations reaches."""
        versions = [self.version]
        while versions[-1] - 1 in self.migrations:
            versions.append(versions[-1] - 1)
        return tuple(sorted(versions))

    def found(self, conn: Connection) -> str | None:
        """The version recorded in the file; for an unversioned legacy file, `unmarked`."""
        names = table_names(conn)
        if self.meta.name not in names:
            implied = (version for table, version in self.unmarked if table in names)
            found = next(implied, None)
            return None if found is None else str(found)
        row = conn.execute(select(self.meta.c.value).where(self.meta.c.key == _KEY)).first()
        return None if row is None else str(row[0])

    def check(self, conn: Connection, where: str) -> int:
        """The file's version if this code reads it, else StoreVersionError naming it."""
        found = self.found(conn)
        readable = self.readable()
        # ASCII digits only: int() also reads other scripts' digits and fails on some of them
        number = found is not None and found.isascii() and found.isdecimal()
        if found is None or not number or int(found) not in readable:
            listed = ", ".join(str(v) for v in readable)
            raise StoreVersionError(self.store, where, found, f"version(s) {listed}", self.advice)
        return int(found)

    def stamp(self, conn: Connection) -> None:
        """Record this code's version in a new (or just migrated) store."""
        self.meta.create(conn, checkfirst=True)
        current = conn.execute(select(self.meta.c.key).where(self.meta.c.key == _KEY)).first()
        if current is None:
            conn.execute(self.meta.insert().values(key=_KEY, value=str(self.version)))
        else:
            conn.execute(
                self.meta.update().where(self.meta.c.key == _KEY).values(value=str(self.version))
            )

    def upgrade(self, conn: Connection, where: str) -> bool:
        """Migrate the store to this code's version in the caller's write transaction.

        Returns whether anything changed. A version it cannot read is refused first.
        """
        found = self.check(conn, where)
        if found == self.version and self._stamped(conn):
            return False
        for step in range(found, self.version):
            self.migrations[step](conn)
        self.stamp(conn)
        return True

    def prepare(self, engine: Engine, where: str, tables: MetaData) -> None:
        """Open a store: create and stamp it when it is not there, else check it and migrate it.

        A database may hold other stores' tables (one PostgreSQL database for the ledger and
        the consent registry), so "not there" means none of this store's own tables. Reads first
        and writes only when something must change: opening a current store (an auditor
        verifying a ledger, an unversioned ledger of the current layout) never writes.
        """
        mine = set(tables.tables) | {table for table, _ in self.unmarked} | {self.meta.name}
        data = set(tables.tables) - {self.meta.name}
        with transaction(engine, write=False) as conn:
            names = table_names(conn)
            exists = not names.isdisjoint(mine)
            if exists and self.check(conn, where) == self.version and data <= names:
                return
        with transaction(engine, write=True) as conn:
            if conn.dialect.name == "postgresql":  # one creator or migrator at a time
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.store,))
            if table_names(conn).isdisjoint(mine):
                tables.create_all(conn, checkfirst=True)
                self.stamp(conn)
                return
            self.upgrade(conn, where)
            tables.create_all(conn, checkfirst=True)  # tables the file lacked (checkfirst)

    def _stamped(self, conn: Connection) -> bool:
        return self.meta.name in table_names(conn)
