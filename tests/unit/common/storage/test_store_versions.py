"""Every store carries a schema version, and a version this fedsafe cannot read is refused.

Played as whoever can write the store file (a newer fedsafe, an operator editing by hand, a
restored backup): the file is stamped with a version the code does not know, and opening it
must fail with an error naming the store, the file and the version, and leave the file exactly
as it was. Files from before stores were versioned open as the version their tables imply.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, inspect

from fedsafe.client.budget import BudgetStore, BudgetStoreError
from fedsafe.client.budget.schema import BUDGET_SCHEMA
from fedsafe.common.errors import ConsentError, LedgerError
from fedsafe.common.ledger import ERROR, Ledger, entry_hash
from fedsafe.common.ledger.store import LEDGER_SCHEMA
from fedsafe.common.storage import StoreSchema, StoreVersionError, transaction
from fedsafe.common.storage.schema import meta_table
from fedsafe.server.consent import ConsentRegistry
from fedsafe.server.consent.store import CONSENT_SCHEMA


def _make_ledger(path: Path) -> None:
    with Ledger.open(path) as ledger:
        ledger.append(ERROR, {"note": "kept"})


def _make_consent(path: Path) -> None:
    ConsentRegistry.open(path).close()


def _make_budget(path: Path) -> None:
    BudgetStore.open(path).close()


STORES: list[tuple[str, str, Callable[[Path], None], Callable[[Path], object], type]] = [
    ("ledger", "ledger_meta", _make_ledger, Ledger.open, LedgerError),
    ("consent registry", "consent_meta", _make_consent, ConsentRegistry.open, ConsentError),
    (
        "budget store",
        "budget_meta",
        _make_budget,
        lambda p: BudgetStore.open(p, create=False),
        BudgetStoreError,
    ),
]
IDS = [s[0] for s in STORES]


def _version(path: Path, table: str) -> str:
    with sqlite3.connect(path) as db:
        (value,) = db.execute(f"SELECT value FROM {table} WHERE key = 'schema_version'").fetchone()
    return str(value)


def _contents(path: Path) -> list[str]:
    """Every table and row, as SQL (the header may change: SQLite's journal mode, not data)."""
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


@pytest.mark.parametrize(("store", "table", "make", "_open", "_error"), STORES, ids=IDS)
def test_a_new_store_is_stamped_with_its_version(
    tmp_path: Path,
    store: str,
    table: str,
    make: Callable[[Path], None],
    _open: object,
    _error: type,
) -> None:
    path = tmp_path / "store.db"
    make(path)
    expected = {"ledger": LEDGER_SCHEMA, "consent registry": CONSENT_SCHEMA}.get(
        store, BUDGET_SCHEMA
    )
    assert _version(path, table) == str(expected.version)


@pytest.mark.parametrize(("store", "table", "make", "open_", "error"), STORES, ids=IDS)
@pytest.mark.parametrize("planted", ["99", "0", "two", "\u00b2", "\u0661", None])
def test_a_version_this_fedsafe_cannot_read_is_refused_and_the_file_kept(
    tmp_path: Path,
    store: str,
    table: str,
    make: Callable[[Path], None],
    open_: Callable[[Path], object],
    error: type,
    planted: str | None,
) -> None:
    path = tmp_path / "store.db"
    make(path)
    with sqlite3.connect(path) as db:
        if planted is None:
            db.execute(f"DELETE FROM {table} WHERE key = 'schema_version'")
        else:
            db.execute(f"UPDATE {table} SET value = ? WHERE key = 'schema_version'", (planted,))
    db.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=DELETE")  # so a refused open cannot hide in the WAL
    db.close()
    before = _contents(path)
    with pytest.raises(error) as caught:
        open_(path)
    message = str(caught.value)
    assert store in message and str(path) in message
    assert (repr(planted) if planted is not None else "no version recorded") in message
    assert "reads version" in message
    assert _contents(path) == before  # no table or row already stored is touched


def test_a_ledger_from_before_versions_opens_as_version_1_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    _make_ledger(path)
    with Ledger.open(path) as ledger:
        (entry,) = list(ledger)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE ledger_meta")  # what a ledger written before versioning looks like
    db.close()
    with Ledger.open(path) as ledger:
        assert list(ledger) == [entry]  # same entry, same hash chain
        assert entry_hash(1, entry.time, entry.kind, entry.payload, entry.prev_hash) == entry.hash
        ledger.append(ERROR, {"note": "after"})  # and it is written to as before
    # Read as version 1 by its layout, it is left unstamped: opening it never writes.
    assert "ledger_meta" not in inspect(create_engine(f"sqlite:///{path}")).get_table_names()


def test_a_consent_file_of_version_1_is_migrated_and_stamped(tmp_path: Path) -> None:
    path = tmp_path / "consent.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE consent_records (record_id VARCHAR(128) PRIMARY KEY, site TEXT, "
            "dataset TEXT, purposes TEXT, legal_basis TEXT, data_categories TEXT, "
            "jurisdiction TEXT, valid_from TEXT, valid_until TEXT, granted_at TEXT, "
            "signature TEXT, signer TEXT)"
        )
    db.close()
    ConsentRegistry.open(path).close()
    assert _version(path, "consent_meta") == "2"
    assert {"site_consent_records", "site_consent_withdrawals"} <= set(
        inspect(create_engine(f"sqlite:///{path}")).get_table_names()
    )


def test_a_budget_store_of_version_1_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    _make_budget(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE budget_meta")  # version 1 had no version table
    db.close()
    with pytest.raises(BudgetStoreError, match="no version recorded.*site acknowledge"):
        BudgetStore.open(path, create=False)


def test_opening_a_current_ledger_takes_no_write_lock(tmp_path: Path) -> None:
    """An auditor verifying a ledger while the coordinator writes must not queue behind it."""
    path = tmp_path / "ledger.db"
    _make_ledger(path)
    writer = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the coordinator holds the write lock
    try:
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
        reader = Ledger(engine)  # would raise "database is locked" if it tried to write
        assert len(reader) == 1
        reader.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def _schema(version: int, steps: list[int]) -> tuple[StoreSchema, MetaData]:
    tables = MetaData()
    migrations = {n: (lambda conn, n=n: steps.append(n)) for n in range(1, version)}
    return StoreSchema("test store", version, meta_table(tables, "t_meta"), migrations), tables


def test_migrations_run_in_order_once_and_the_version_is_stamped(tmp_path: Path) -> None:
    steps: list[int] = []
    old, tables = _schema(1, steps)
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    old.prepare(engine, "s.db", tables)
    new, tables = _schema(4, steps)
    assert new.readable() == (1, 2, 3, 4)
    new.prepare(engine, "s.db", tables)
    new.prepare(engine, "s.db", tables)  # current now: nothing runs again
    assert steps == [1, 2, 3]
    with transaction(engine, write=False) as conn:
        assert new.found(conn) == "4"


def test_a_version_below_the_oldest_migration_is_refused(tmp_path: Path) -> None:
    steps: list[int] = []
    old, tables = _schema(1, steps)
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    old.prepare(engine, "s.db", tables)
    gap = StoreSchema("test store", 3, meta_table(MetaData(), "t_meta"), {2: steps.append})
    with pytest.raises(StoreVersionError, match=r"version '1'.*reads version\(s\) 2, 3"):
        gap.prepare(engine, "s.db", MetaData())
    assert steps == []


def test_a_ledger_and_a_consent_registry_can_share_one_database(tmp_path: Path) -> None:
    """One PostgreSQL database (here one SQLite file) for both coordinator stores: neither
    store's tables make the other look like an unversioned file of its own kind."""
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    ConsentRegistry.open(url).close()
    _make_ledger(Path(url.removeprefix("sqlite:///")))
    ConsentRegistry.open(url).close()
    with Ledger.open(url) as ledger:
        assert len(ledger) == 1
    assert _version(tmp_path / "coordinator.db", "ledger_meta") == "1"
    assert _version(tmp_path / "coordinator.db", "consent_meta") == "2"


def test_an_unversioned_current_ledger_opens_read_only(tmp_path: Path) -> None:
    """An auditor with a read-only copy of a ledger written before versioning can open it."""
    path = tmp_path / "ledger.db"
    _make_ledger(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE ledger_meta")
    db.close()
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with Ledger(engine) as ledger:
        assert [e.payload for e in ledger] == [{"note": "kept"}]
    assert "ledger_meta" not in inspect(create_engine(f"sqlite:///{path}")).get_table_names()
