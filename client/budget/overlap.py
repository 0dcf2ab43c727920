"""Which records each data set holds, so a renamed or re-cut data set cannot start afresh.

A data set is identified by the fingerprint of its rows, but a fingerprint changes with a
single added or dropped row: the same patients under a new name plus one extra row would be
a "new" data set with a fresh budget. The store therefore keeps, per data set, the sorted
64-bit content hashes of its records (never the rows, and only at the site), and a new data
set that shares any record with one already accounted is refused: the shared records have
already spent that data set's budget. The table is covered by the signed head like every
other row.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Connection, delete, insert, select

from fedsafe.client.budget.schema import datasets_table, records_table
from fedsafe.common.storage import table_names

__all__ = [
    "pack",
    "unpack",
    "put_records",
    "has_records",
    "shared_records",
    "unrecorded_datasets",
]


def pack(hashes: np.ndarray) -> bytes:
    """Sorted, unique, little-endian uint64: one canonical byte string per record set."""
    return np.unique(np.asarray(hashes, dtype=np.uint64)).astype("<u8").tobytes()


def unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<u8")


def _has_table(conn: Connection) -> bool:
    return records_table.name in table_names(conn)


def put_records(conn: Connection, dataset_id: str, hashes: np.ndarray) -> None:
    """Add records to the data set's set: it keeps every record it ever held, so rows that
    left it after an acknowledged change still count as spent (never a fresh budget)."""
    row = conn.execute(
        select(records_table.c.hashes).where(records_table.c.dataset_id == dataset_id)
    ).first()
    if row is not None:
        hashes = np.concatenate([unpack(row.hashes), np.asarray(hashes, dtype=np.uint64)])
    blob = pack(hashes)
    conn.execute(delete(records_table).where(records_table.c.dataset_id == dataset_id))
    conn.execute(
        insert(records_table).values(dataset_id=dataset_id, count=len(blob) // 8, hashes=blob)
    )


def has_records(conn: Connection, dataset_id: str) -> bool:
    if not _has_table(conn):
        return False
    query = select(records_table.c.count).where(records_table.c.dataset_id == dataset_id)
    return conn.execute(query).first() is not None


def shared_records(conn: Connection, hashes: np.ndarray, *, exclude: str) -> list[tuple[str, int]]:
    """(data set, records in common) for every other data set sharing a record with these."""
    if not _has_table(conn):
        return []
    mine = np.unique(np.asarray(hashes, dtype=np.uint64))
    found = []
    for row in conn.execute(select(records_table).order_by(records_table.c.dataset_id)):
        if row.dataset_id == exclude:
            continue
        common = int(np.intersect1d(mine, unpack(row.hashes), assume_unique=True).size)
        if common:
            found.append((str(row.dataset_id), common))
    return found


def unrecorded_datasets(conn: Connection) -> list[str]:
    """Data sets accounted (with a row fingerprint) before the store kept their records."""
    accounted = select(datasets_table.c.dataset_id).where(datasets_table.c.fingerprint.is_not(None))
    if not _has_table(conn):
        return [str(r.dataset_id) for r in conn.execute(accounted)]
    recorded = select(records_table.c.dataset_id)
    query = accounted.where(datasets_table.c.dataset_id.not_in(recorded))
    return sorted(str(r.dataset_id) for r in conn.execute(query))
