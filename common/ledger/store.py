"""Append-only hash-chained ledger stored through SQLAlchemy Core (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)
from sqlalchemy import exc as sa_exc

from fedsafe.common import crypto
from fedsafe.common.errors import LedgerError
from fedsafe.common.ledger.records import (
    GENESIS_PREV_HASH,
    HEAD_SIGNED,
    Entry,
    canonical_json,
    check_kind,
    entry_hash,
    format_time,
    head_message,
)
from fedsafe.common.storage import (
    StoreSchema,
    StoreVersionError,
    configure_sqlite,
    open_engine,
    store_url,
    transaction,
    write_atomic,
)
from fedsafe.common.storage.atomic import PUBLIC_MODE
from fedsafe.common.storage.schema import meta_table

__all__ = ["LEDGER_SCHEMA", "Ledger", "ledger_table", "to_url", "write_witness", "WITNESS_FORMAT"]

WITNESS_FORMAT = "fedsafe-ledger-witness-v1"
_PAGE = 2000
_RETRIES = 5

_metadata = MetaData()
ledger_table = Table(
    "ledger_entries",
    _metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("time", String(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
# Version 1 is the layout above. Ledgers written before stores carried a version have exactly
# this table and no meta table: they are read as version 1 (and stamped on their next open).
LEDGER_SCHEMA = StoreSchema(
    store="ledger",
    version=1,
    meta=meta_table(_metadata, "ledger_meta"),
    unmarked=((ledger_table.name, 1),),
)
_COLS = (
    ledger_table.c.seq,
    ledger_table.c.time,
    ledger_table.c.kind,
    ledger_table.c.payload,
    ledger_table.c.prev_hash,
    ledger_table.c.hash,
)


def to_url(url_or_path: str | os.PathLike[str]) -> str:
    """A plain path means a SQLite file; anything with ``://`` is an SQLAlchemy URL as given."""
    return store_url(url_or_path)


def _row_to_entry(row: Any) -> Entry:
    return Entry(row.seq, row.time, row.kind, json.loads(row.payload), row.prev_hash, row.hash)


def write_witness(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON atomically and durably (it is what makes truncation visible)."""
    write_atomic(Path(path), canonical_json(record) + "\n", mode=PUBLIC_MODE)


class Ledger:
    """Tamper-evident append-only ledger; there is deliberately no update or delete API.

    Durability: SQLite runs in WAL mode with ``synchronous=FULL``, so every committed entry
    survives a process kill and a power loss; writers take ``BEGIN IMMEDIATE`` so two processes
    cannot fork the chain. On PostgreSQL each append locks the table in SHARE ROW EXCLUSIVE
    mode for its transaction. On every backend the ``seq`` primary key is the last guard:
    a writer that lost a race retries on the new head.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))
        if engine.dialect.name == "sqlite":
            configure_sqlite(engine)
        try:
            LEDGER_SCHEMA.prepare(engine, self.url, _metadata)
        except StoreVersionError as err:
            engine.dispose()  # a refused store keeps no connection (nor its WAL files) open
            raise LedgerError(str(err)) from err
        except sa_exc.SQLAlchemyError as err:
            engine.dispose()
            raise LedgerError(f"cannot open ledger at {engine.url!r}: {err}") from err

    @classmethod
    def open(
        cls, url_or_path: str | os.PathLike[str], *, clock: Callable[[], datetime] | None = None
    ) -> Ledger:
        """Open (creating if needed) the ledger at a SQLAlchemy URL or a SQLite file path."""
        engine = open_engine(to_url(url_or_path), create=True, private=False)
        return cls(engine, clock=clock)

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------

    def append(
        self, kind: str, payload: dict[str, Any], *, at_time: datetime | None = None
    ) -> Entry:
        """Append one entry in its own transaction and return it as committed."""
        return self.append_many([(kind, payload)], at_time=at_time)[0]

    def append_many(
        self, items: Iterable[tuple[str, dict[str, Any]]], *, at_time: datetime | None = None
    ) -> list[Entry]:
        """Append several entries in one transaction (all or none): one fsync per round batch."""
        time = format_time(at_time if at_time is not None else self._clock())
        prepared = [self._prepare(kind, payload) for kind, payload in items]
        if not prepared:
            return []
        return self._write(lambda _head: prepared, time)

    def sign_head(
        self,
        private_pem: bytes,
        *,
        public_pem: bytes,
        witness_path: Path | None = None,
        at_time: datetime | None = None,
    ) -> Entry:
        """Sign the current head and append a HEAD_SIGNED entry; optionally write a witness.

        The public key is needed for the signer fingerprint and to check the signature before
        it is committed (a mismatched key pair must not produce an unverifiable ledger).
        The witness, kept apart from the database, is what makes truncation detectable.
        """
        signer = crypto.public_key_fingerprint(public_pem)
        time = format_time(at_time if at_time is not None else self._clock())

        def build(head: Entry | None) -> list[tuple[str, dict[str, Any], str]]:
            if head is None:
                raise LedgerError("cannot sign the head of an empty ledger")
            message = head_message(head.seq, head.hash)
            signature = crypto.sign(private_pem, message)
            crypto.verify(public_pem, message, signature)
            payload = {
                "head_seq": head.seq,
                "head_hash": head.hash,
                "signer": signer,
                "signature": signature.hex(),
            }
            return [self._prepare(HEAD_SIGNED, payload, internal=True)]

        (entry,) = self._write(build, time)
        if witness_path is not None:
            write_witness(
                Path(witness_path),
                {
                    "format": WITNESS_FORMAT,
                    "entry_seq": entry.seq,
                    "entry_hash": entry.hash,
                    **entry.payload,
                },
            )
        return entry

    @staticmethod
    def _prepare(
        kind: str, payload: dict[str, Any], *, internal: bool = False
    ) -> tuple[str, dict[str, Any], str]:
        check_kind(kind)
        if kind == HEAD_SIGNED and not internal:
            raise ValueError("head_signed entries are written only by Ledger.sign_head")
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be dict, got {type(payload).__name__}")
        text = canonical_json(payload)
        # Keep the decoded canonical form so the returned Entry equals what a reader gets back.
        return kind, json.loads(text), text

    def _write(
        self,
        build: Callable[[Entry | None], list[tuple[str, dict[str, Any], str]]],
        time: str,
    ) -> list[Entry]:
        last_error: Exception | None = None
        for _attempt in range(_RETRIES):
            try:
                with transaction(self._engine, write=True) as conn:
                    if conn.dialect.name == "postgresql":
                        conn.exec_driver_sql(
                            "LOCK TABLE ledger_entries IN SHARE ROW EXCLUSIVE MODE"
                        )
                    head = self._head(conn)
                    seq = head.seq if head else 0
                    prev = head.hash if head else GENESIS_PREV_HASH
                    entries, rows = [], []
                    for kind, payload, text in build(head):
                        seq += 1
                        digest = entry_hash(seq, time, kind, payload, prev)
                        entries.append(Entry(seq, time, kind, payload, prev, digest))
                        rows.append(
                            {
                                "seq": seq,
                                "time": time,
                                "kind": kind,
                                "payload": text,
                                "prev_hash": prev,
                                "hash": digest,
                            }
                        )
                        prev = digest
                    conn.execute(insert(ledger_table), rows)
                return entries
            except sa_exc.IntegrityError as err:  # lost a race for the next seq: retry
                last_error = err
            except sa_exc.SQLAlchemyError as err:
                raise LedgerError(f"ledger write failed at {self.url}: {err}") from err
        raise LedgerError(f"ledger write failed after {_RETRIES} attempts: {last_error}")

    # --- reading -------------------------------------------------------------------------

    @staticmethod
    def _head(conn: Connection) -> Entry | None:
        row = conn.execute(select(*_COLS).order_by(ledger_table.c.seq.desc()).limit(1)).first()
        return _row_to_entry(row) if row is not None else None

    def head(self) -> Entry | None:
        """Last entry, or None for an empty ledger."""
        with self._engine.connect() as conn:
            return self._head(conn)

    def __len__(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ledger_table)).scalar_one())

    def entries(self, since_seq: int = 0) -> Iterator[Entry]:
        """Entries with ``seq > since_seq`` in seq order, fetched in pages (bounded memory).

        Keyset pages in short read transactions: no connection is held while the caller
        works, so a slow consumer never blocks writers or WAL checkpoints.
        """
        if isinstance(since_seq, bool) or not isinstance(since_seq, int):
            raise TypeError(f"since_seq must be int, got {type(since_seq).__name__}")
        last = since_seq
        while True:
            query = select(*_COLS).where(ledger_table.c.seq > last)
            with self._engine.connect() as conn:
                rows = conn.execute(query.order_by(ledger_table.c.seq).limit(_PAGE)).all()
            if not rows:
                return
            for row in rows:
                yield _row_to_entry(row)
            last = rows[-1].seq
            if len(rows) < _PAGE:
                return

    def __iter__(self) -> Iterator[Entry]:
        return self.entries()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"
