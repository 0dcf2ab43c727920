"""Where the consent registry keeps its rows: tables, URLs, the engine and row conversions.

Storage only: what a row means (and whether its signature holds) is decided by the registry.
"""

from __future__ import annotations

import json
import os
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    select,
)

from fedsafe.common.consent import ConsentRecord, SignedConsent, Withdrawal, parse_time
from fedsafe.common.errors import ConsentError
from fedsafe.common.storage import StoreSchema, store_url
from fedsafe.common.storage import open_engine as open_store_engine
from fedsafe.common.storage.schema import meta_table

__all__ = [
    "CONSENT_SCHEMA",
    "DEFAULT_FILENAME",
    "consent_tables",
    "copy_legacy_rows",
    "open_engine",
    "registry_url",
]

DEFAULT_FILENAME = "consent.db"

consent_tables = MetaData()
# v2 tables: keyed by (site, record_id). Rows of the v1 tables (keyed by record_id alone) are
# copied in once when a v2 registry is first opened on an old file; signatures are re-checked
# at every decision as always.
_LEGACY = {
    "site_consent_records": "consent_records",
    "site_consent_withdrawals": "consent_withdrawals",
}
_records = Table(
    "site_consent_records",
    consent_tables,
    # A record id is the site's own name for its grant: (site, record_id) is the key, so one
    # site can never take, shadow or block another site's id by registering it first.
    Column("site", String(128), primary_key=True),
    Column("record_id", String(128), primary_key=True),
    Column("dataset", String(256), nullable=False),
    Column("purposes", Text, nullable=False),  # JSON list, in the order the site signed
    Column("legal_basis", Text, nullable=False),
    Column("data_categories", Text, nullable=False),  # JSON list
    Column("jurisdiction", String(64), nullable=False),
    Column("valid_from", String(32), nullable=False),  # format_time: fixed width, sortable
    Column("valid_until", String(32), nullable=True),
    Column("granted_at", String(32), nullable=False),
    Column("signature", String(256), nullable=False),  # hex
    Column("signer", String(64), nullable=False),  # public_key_fingerprint of the site key
)
_withdrawals = Table(
    "site_consent_withdrawals",
    consent_tables,
    Column("site", String(128), primary_key=True),
    Column("record_id", String(128), primary_key=True),
    Column("withdrawn_at", String(32), nullable=False),
    Column("signature", String(256), nullable=False),
)


def registry_url(url_or_path: str | os.PathLike[str]) -> str:
    """URL as given; a directory means ``<dir>/consent.db``; any other path a SQLite file."""
    return store_url(url_or_path, default_name=DEFAULT_FILENAME)


def copy_legacy_rows(conn: Connection) -> None:
    """Migration 1 -> 2: the v2 tables, filled with a v1 registry's rows (other key)."""
    names = set(inspect(conn).get_table_names())
    consent_tables.create_all(conn, checkfirst=True)
    for table in (_records, _withdrawals):
        legacy = _LEGACY[table.name]
        if legacy not in names:
            continue
        columns = [c.name for c in table.columns]
        old = Table(legacy, MetaData(), autoload_with=conn)
        rows = conn.execute(select(*(old.c[name] for name in columns))).all()
        if rows:
            conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


# Version 2: rows keyed by (site, record_id). A file from before versioning is version 2 if it
# has the v2 tables, version 1 if it has only the v1 tables (migrated on open).
CONSENT_SCHEMA = StoreSchema(
    store="consent registry",
    version=2,
    meta=meta_table(consent_tables, "consent_meta"),
    migrations={1: copy_legacy_rows},
    unmarked=((_records.name, 2), ("consent_records", 1)),
)


def _record_row(signed: SignedConsent) -> dict[str, Any]:
    data = signed.record.to_dict()
    data["purposes"] = json.dumps(data["purposes"])
    data["data_categories"] = json.dumps(data["data_categories"])
    data["signature"] = signed.signature.hex()
    data["signer"] = signed.signer
    return data


def _row_to_signed(row: Any) -> SignedConsent:
    """Rebuild exactly what was stored; a row edited out of shape raises ValueError/TypeError."""
    record = ConsentRecord.from_dict(
        {
            "record_id": row.record_id,
            "site": row.site,
            "dataset": row.dataset,
            "purposes": json.loads(row.purposes),
            "legal_basis": row.legal_basis,
            "data_categories": json.loads(row.data_categories),
            "jurisdiction": row.jurisdiction,
            "valid_from": row.valid_from,
            "valid_until": row.valid_until,
            "granted_at": row.granted_at,
        }
    )
    return SignedConsent(record, bytes.fromhex(row.signature), row.signer)


def _row_to_withdrawal(row: Any) -> Withdrawal:
    return Withdrawal(
        row.record_id,
        row.site,
        parse_time(row.withdrawn_at, field="withdrawn_at"),
        bytes.fromhex(row.signature),
    )


def open_engine(url_or_path: str | os.PathLike[str], *, create: bool) -> Engine:
    """An engine on the registry: SQLAlchemy URL, SQLite file, or a folder (gets consent.db).

    ``sqlite://`` is an in-memory registry shared by all threads, for simulations. With
    ``create=False`` a missing SQLite file is an error instead of a new empty registry,
    so a mistyped path is not mistaken for "no consent". A new file is 0600 (consent records);
    SQLite runs in WAL so `fedsafe consent grant` writes while a running server reads.
    """
    return open_store_engine(
        registry_url(url_or_path),
        create=create,
        missing=lambda path: ConsentError(
            f"no consent registry at {path} (nothing granted there yet?)"
        ),
    )
