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
    create_engine,
    inspect,
    select,
)
from sqlalchemy import exc as sa_exc

from fedsafe.client.budget.records import BudgetStoreError
from fedsafe.common.files import private_file
from fedsafe.common.sqlite_setup import configure_sqlite, transaction

__all__ = [
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
# Versions this fedsafe opens: older ones are migrated by the site (under its signed head).
MIGRATABLE = ("2",)

metadata = MetaData()
meta_table = Table(
    "budget_meta",
    metadata,
    Column("key", String(40), primary_key=True),
    Column("value", Text, nullable=False),
)
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


def schema_version(conn: Connection) -> str | None:
    row = conn.execute(
        select(meta_table.c.value).where(meta_table.c.key == "schema_version")
    ).first()
    return None if row is None else str(row[0])


def migrate(conn: Connection) -> bool:
    """Bring a version 2 store to version 3 inside the caller's write transaction.

    Version 3 adds the records table (empty: data sets charged before it are matched by
    fingerprint only, as before). Returns whether anything changed.
    """
    if schema_version(conn) == str(SCHEMA_VERSION):
        return False
    records_table.create(conn, checkfirst=True)
    conn.execute(
        meta_table.update()
        .where(meta_table.c.key == "schema_version")
        .values(value=str(SCHEMA_VERSION))
    )
    return True


def _check_version(engine: Engine, path: Path) -> None:
    with engine.connect() as conn:
        found = schema_version(conn)
    if found not in (str(SCHEMA_VERSION), *MIGRATABLE):
        raise BudgetStoreError(
            f"budget store {path} has schema version {found or '1 (no version table)'}; this "
            f"fedsafe reads versions {', '.join(MIGRATABLE)} (migrated on the site's next "
            f"write) and {SCHEMA_VERSION} (charges bound to their unit, data fingerprint and "
            "a signed head). Keep the old file as a record and start a new store with "
            "`fedsafe site acknowledge`"
        )


def _create(engine: Engine) -> None:
    metadata.create_all(engine, checkfirst=True)
    with transaction(engine, write=True) as conn:
        have = {r.key for r in conn.execute(select(meta_table.c.key))}
        for key, value in (
            ("schema_version", str(SCHEMA_VERSION)),
            ("store_id", uuid.uuid4().hex),
        ):
            if key not in have:
                conn.execute(meta_table.insert().values(key=key, value=value))


def open_engine(path: Path, *, create: bool) -> Engine:
    """An engine on the store at `path`, its schema checked (and made, with `create`).

    `create=False` is for readers (reports): a missing file is an error naming the path, so
    a typo never shows an empty, fresh budget. The file is readable by its owner only.
    """
    path = Path(path)
    if not create and not path.is_file():
        raise BudgetStoreError(
            f"no budget store at {path}: the site creates it on its first private round; "
            "check the site config's budget store path"
        )
    if create:
        private_file(path)  # 0600: the charge history is the site's alone
    engine = create_engine(f"sqlite:///{path.resolve()}", connect_args={"timeout": 30})
    configure_sqlite(engine)
    try:
        names = set(inspect(engine).get_table_names())
        if create and not names:
            _create(engine)
        elif "budget_charges" in names and "budget_meta" not in names:
            raise BudgetStoreError(
                f"budget store {path} has schema version 1 (no version table); this fedsafe "
                f"reads version {SCHEMA_VERSION} only. Keep the old file as a record and start a "
                "new store with `fedsafe site acknowledge`"
            )
        else:
            missing = _TABLES - names - _ADDED_IN_3
            if missing:
                raise BudgetStoreError(
                    f"{path} is not a fedsafe budget store (missing tables {sorted(missing)})"
                )
            _check_version(engine, path)
    except sa_exc.SQLAlchemyError as err:
        engine.dispose()
        raise BudgetStoreError(f"cannot open budget store at {path}: {err}") from err
    except BudgetStoreError:
        engine.dispose()
        raise
    return engine
