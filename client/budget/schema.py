"""The budget store's tables, its schema version and the SQLite settings every writer needs."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy import exc as sa_exc

from fedsafe.client.budget.records import BudgetStoreError
from fedsafe.common.storage import (
    StoreSchema,
    StoreVersionError,
    store_url,
    table_names,
    transaction,
)
from fedsafe.common.storage import open_engine as open_store_engine
from fedsafe.common.storage.schema import meta_table as key_value_table

__all__ = [
    "BUDGET_SCHEMA",
    "SCHEMA_VERSION",
    "metadata",
    "meta_table",
    "datasets_table",
    "charges_table",
    "refusals_table",
    "acks_table",
    "releases_table",
    "records_table",
    "open_engine",
    "store_id",
]

SCHEMA_VERSION = 3

metadata = MetaData()
meta_table = key_value_table(metadata, "budget_meta")
# One row per data set: its label, the fingerprint of its rows and the unit pinned at its
# first charge. A label is only a name; the rows are the identity.
datasets_table = Table(
    "budget_datasets",
    metadata,
    Column("dataset_id", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=True, unique=True),
    Column("delta", Float, nullable=False),
    Column("accountant", String(16), nullable=False),
    Column("time", String(40), nullable=False),
)
charges_table = Table(
    "budget_charges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(200), nullable=False, index=True),
    Column("run_id", String(200), nullable=False),
    Column("round", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("noise_multiplier", Float, nullable=False),
    Column("sample_rate", Float, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("planned_steps", Integer, nullable=False),
    Column("delta", Float, nullable=False),
    Column("accountant", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("purpose", String(200), nullable=True),
    # What the charge was made for (config digest, input model digest, randomness): a replay
    # must match it exactly.
    Column("binding", Text, nullable=True),
    Column("time", String(40), nullable=False),
    Column("completed_time", String(40), nullable=True),
    # The last guard against a double charge, should a writer ever bypass BEGIN IMMEDIATE.
    UniqueConstraint("dataset_id", "run_id", "round", "kind", name="uq_budget_charge_round"),
)
refusals_table = Table(
    "budget_refusals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(200), nullable=False, index=True),
    Column("run_id", String(200), nullable=False),
    Column("round", Integer, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("spent_epsilon", Float, nullable=True),
    Column("round_epsilon_cost", Float, nullable=True),
    Column("cap", Float, nullable=False),
    Column("message", Text, nullable=False),
    # Charges that existed when the refusal happened: places it in the dataset's history.
    Column("after_charge_id", Integer, nullable=False),
    Column("time", String(40), nullable=False),
)
acks_table = Table(
    "budget_acknowledgements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", String(40), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("dataset_id", String(200), nullable=True),
    Column("detail", Text, nullable=False),
    Column("reason", Text, nullable=False),
)
# What left the site besides DP updates (evaluation metrics), under which release policy.
releases_table = Table(
    "budget_releases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(200), nullable=False),
    Column("run_id", String(200), nullable=False),
    Column("round", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("model_digest", String(64), nullable=False),
    Column("released", Text, nullable=False),
    Column("time", String(40), nullable=False),
    UniqueConstraint("dataset_id", "run_id", "round", "kind", name="uq_budget_release_round"),
)
# The records each data set holds, as sorted 64-bit content hashes (never the rows): a data
# set under a new name that shares any record with one already accounted is refused.
records_table = Table(
    "budget_dataset_records",
    metadata,
    Column("dataset_id", String(200), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("hashes", LargeBinary, nullable=False),
)
_TABLES = {t.name for t in metadata.sorted_tables}
# Tables that version 2 stores lack (added by the migration to version 3).
_ADDED_IN_3 = {records_table.name}


def store_id(conn: Connection) -> str:
    """The store's random identity, written once when it was created."""
    row = conn.execute(select(meta_table.c.value).where(meta_table.c.key == "store_id")).first()
    if row is None:
        raise BudgetStoreError("budget store has no store_id (not created by fedsafe)")
    return str(row[0])


def _add_records_table(conn: Connection) -> None:
    """Migration 2 -> 3: the records table (empty: data sets charged before it are matched by
    fingerprint only, as before)."""
    records_table.create(conn, checkfirst=True)


# Version 3: charges bound to their unit, data fingerprint and a signed head. A version 2 store
# is read as it is and migrated by the site on its next write, under its signed head. A store
# from before versioning (version 1) is refused: its charges carry no unit.
BUDGET_SCHEMA = StoreSchema(
    store="budget store",
    version=SCHEMA_VERSION,
    meta=meta_table,
    migrations={2: _add_records_table},
    advice="start a new store with `fedsafe site acknowledge`",
)


def schema_version(conn: Connection) -> str | None:
    """The version recorded in the store (None: not a versioned fedsafe store)."""
    return BUDGET_SCHEMA.found(conn)


def migrate(conn: Connection, path: Path) -> bool:
    """Bring an older store to this version inside the caller's write transaction."""
    return BUDGET_SCHEMA.upgrade(conn, str(path))


def _create(engine: Engine) -> None:
    """Tables, identity and version in one write transaction: a second process creating the
    same store at once waits for the lock, then finds it made (never half made)."""
    with transaction(engine, write=True) as conn:
        metadata.create_all(conn, checkfirst=True)
        have = {r.key for r in conn.execute(select(meta_table.c.key))}
        if "store_id" not in have:
            conn.execute(meta_table.insert().values(key="store_id", value=uuid.uuid4().hex))
        if "schema_version" not in have:
            BUDGET_SCHEMA.stamp(conn)


def _check(conn: Connection, names: set[str], path: Path) -> None:
    missing = _TABLES - names - _ADDED_IN_3
    legacy = charges_table.name in names and meta_table.name not in names  # version 1
    if missing and not legacy:
        raise BudgetStoreError(
            f"{path} is not a fedsafe budget store (missing tables {sorted(missing)})"
        )
    try:
        BUDGET_SCHEMA.check(conn, str(path))
    except StoreVersionError as err:
        raise BudgetStoreError(str(err)) from None


def open_engine(path: Path, *, create: bool) -> Engine:
    """An engine on the store at `path`, its schema checked (and made, with `create`).

    `create=False` is for readers (reports): a missing file is an error naming the path, so
    a typo never shows an empty, fresh budget. The file is readable by its owner only.
    """
    path = Path(path)
    engine = open_store_engine(
        store_url(path),
        create=create,
        shared=True,
        missing=lambda p: BudgetStoreError(
            f"no budget store at {p}: the site creates it on its first private round; "
            "check the site config's budget store path"
        ),
    )
    try:
        with engine.connect() as conn:  # its tables and version, read once
            names = table_names(conn)
            if names or not create:
                _check(conn, names, path)
        if create and not names:
            _create(engine)
    except sa_exc.SQLAlchemyError as err:
        engine.dispose()
        raise BudgetStoreError(f"cannot open budget store at {path}: {err}") from err
    except BudgetStoreError:
        engine.dispose()
        raise
    return engine
