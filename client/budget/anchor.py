"""The budget store's integrity anchor: a head signed with the site's key, kept beside the keys.

The head names the store (its random id) and a digest of every row. Anyone who can write the
store file but not the site's private key cannot delete, edit, rewind or swap it unnoticed:
the next open finds a digest or store id the head does not vouch for and the site refuses to
train. A write is two-phase (head names the pending digest, commit, head names it as current),
so a crash between the commit and the head leaves a state the head already vouches for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table

from fedsafe.client.budget.records import BudgetStoreError, StoreIntegrityError
from fedsafe.client.budget.schema import charges_table, meta_table, metadata
from fedsafe.common import crypto
from fedsafe.common.errors import IntegrityError
from fedsafe.common.storage import write_atomic

__all__ = ["StoreAnchor", "HEAD_STATEMENT", "Head", "Scan", "scan", "state_digest"]

HEAD_STATEMENT = "fedsafe-budget-head-v1"
ACK_HINT = (
    "The site will not train until its admin looks: if the store path in the site config is "
    "wrong, fix it; otherwise record the decision with `fedsafe site acknowledge "
    "--config site.yaml --reason TEXT` (or --store STORE --keys KEYS_DIR; the old spend stays "
    "on record in the acknowledgement)"
)


def schema_objects(conn: Connection) -> list[tuple[str, str, str]]:
    """Every object in the file's schema (tables, indexes, triggers, views) with its SQL."""
    rows = conn.exec_driver_sql(
        "SELECT type, name, COALESCE(sql, '') FROM sqlite_master ORDER BY type, name"
    )
    return [(str(t), str(n), str(s)) for t, n, s in rows]


def check_schema(objects: list[tuple[str, str, str]], path: Path) -> None:
    """Refuse a store holding anything fedsafe did not create: a trigger or view planted in the
    file would rewrite charges inside fedsafe's own (signed) transactions."""
    expected = {t.name for t in metadata.sorted_tables}
    for kind, name, _sql in objects:
        if kind in ("trigger", "view") or (kind == "table" and name not in expected):
            raise StoreIntegrityError(
                f"budget store {path} holds a {kind} '{name}' that fedsafe never creates "
                f"(planted to rewrite charges). {ACK_HINT}"
            )


def _row_select(table: Table) -> str:
    """The SQL that reads every row of `table`, its columns by name, in primary key order."""
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    order = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
    return f'SELECT {columns} FROM "{table.name}" ORDER BY {order}'


# Fixed SQL, built once from fedsafe's own table definitions (never from the file).
_ROW_SELECTS = {table.name: _row_select(table) for table in metadata.sorted_tables}


@dataclass(frozen=True)
class Scan:
    """One read of the whole store: what the head vouches for, and what the checks need."""

    digest: str
    store_id: str | None
    charges: int
    objects: list[tuple[str, str, str]]


def scan(conn: Connection) -> Scan:
    """SHA-256 over the schema and every row of every store table, in table and key order,
    with the store's id and its number of charges read in the same pass.

    Read through the driver (no statement to compile): it runs on every open and twice per
    write, so its cost is the cost of keeping the head. The digest is the same as reading
    each row through SQLAlchemy (a JSON object of its columns, blobs by their SHA-256).
    """
    digest = hashlib.sha256()
    objects = schema_objects(conn)
    for kind, name, sql in objects:
        digest.update(f"schema\x00{kind}\x00{name}\x00{sql}\x00".encode())
    present = {name for kind, name, _ in objects if kind == "table"}
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
    sid: str | None = None
    charges = 0
    for table in metadata.sorted_tables:
        if table.name not in present:  # a version 2 store, before its migration
            continue
        prefix = table.name.encode() + b"\x00"
        names = [c.name for c in table.columns]
        for row in conn.exec_driver_sql(_ROW_SELECTS[table.name]):
            values = {
                k: {"sha256": hashlib.sha256(v).hexdigest()} if isinstance(v, bytes) else v
                for k, v in zip(names, row, strict=True)
            }
            digest.update(prefix)
            digest.update(encode(values).encode())
            if table is charges_table:
                charges += 1
            elif table is meta_table and values["key"] == "store_id":
                sid = str(values["value"])
    return Scan(digest.hexdigest(), sid, charges, objects)


def state_digest(conn: Connection) -> str:
    """The digest a head signs for the store's state now (see `scan`)."""
    return scan(conn).digest


@dataclass(frozen=True)
class Head:
    """What the site last signed about its store."""

    store_id: str
    digest: str
    pending: str | None
    charges: int
    time: str


@dataclass(frozen=True)
class StoreAnchor:
    """Where the signed head lives and the key that signs it (the site's own Ed25519 key).

    The head is verified with the public key derived from the private key itself, never with
    a public key file that could be planted beside it.
    """

    head_path: Path
    private_key: bytes

    @classmethod
    def in_keys_dir(cls, keys_dir: Path, private_key: bytes) -> StoreAnchor:
        return cls(Path(keys_dir) / "budget-head.json", private_key)

    @classmethod
    def from_keys_dir(cls, keys_dir: Path) -> StoreAnchor:
        """The anchor of the site whose signing.key is in `keys_dir` (for the operator tools)."""
        from fedsafe.common.crypto.pki import load_signing_private_key

        key = load_signing_private_key(Path(keys_dir) / "signing.key")
        return cls.in_keys_dir(Path(keys_dir), key)

    def read(self) -> Head | None:
        """The verified head, None if there is none; StoreIntegrityError if it does not verify."""
        if not self.head_path.exists():
            return None
        try:
            record = json.loads(self.head_path.read_text(encoding="utf-8"))
            text = str(record["payload"])
            crypto.verify(
                crypto.public_key_of(self.private_key),
                text.encode(),
                bytes.fromhex(str(record["signature"])),
            )
            payload = json.loads(text)
            if payload.get("statement") != HEAD_STATEMENT:
                raise IntegrityError("not a budget head")
            return Head(
                str(payload["store_id"]),
                str(payload["digest"]),
                None if payload.get("pending") is None else str(payload["pending"]),
                int(payload["charges"]),
                str(payload["time"]),
            )
        except (OSError, ValueError, KeyError, TypeError, IntegrityError):
            raise StoreIntegrityError(
                f"the budget store's signed head {self.head_path} does not verify with this "
                f"site's key (edited, or written by another key). {ACK_HINT}"
            ) from None

    def write(
        self, *, store: str, digest: str, pending: str | None, charges: int, settled: bool = False
    ) -> Head:
        """Sign and atomically replace the head (0600, fsynced). A `settled` head (after the
        commit) need not survive a power loss: the pending head it replaces names the same
        state, and the next open promotes it, so its folder is not fsynced."""
        time = datetime.now(UTC).isoformat(timespec="microseconds")
        payload = {
            "statement": HEAD_STATEMENT,
            "store_id": store,
            "digest": digest,
            "pending": pending,
            "charges": charges,
            "time": time,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        body = json.dumps(
            {"payload": text, "signature": crypto.sign(self.private_key, text.encode()).hex()}
        )
        write_atomic(self.head_path, body, sync_folder=not settled)  # 0600
        return Head(store, digest, pending, charges, time)

    def check(self, conn: Connection, path: Path) -> Head:
        """The head in force; StoreIntegrityError unless the store is the one, in the state,
        the head signed (a fresh or promoted head is written and returned)."""
        now = scan(conn)
        check_schema(now.objects, path)
        if now.store_id is None:
            raise BudgetStoreError(f"budget store {path} has no store_id (not created by fedsafe)")
        head = self.read()
        sid, digest, charges = now.store_id, now.digest, now.charges
        if head is None:
            if charges == 0:
                return self.write(store=sid, digest=digest, pending=None, charges=0)
            raise StoreIntegrityError(
                f"budget store {path} holds {charges} charge(s) but its signed head "
                f"{self.head_path} is missing (deleted, or the store was copied from elsewhere). "
                f"{ACK_HINT}"
            )
        if head.store_id != sid and head.charges == 0 and charges == 0:
            # The store signed for held no charge (so no release either): nothing is lost by
            # replacing it, and a site that was only checked (`site start`) may start afresh.
            return self.write(store=sid, digest=digest, pending=None, charges=0)
        if head.store_id != sid:
            raise StoreIntegrityError(
                f"budget store {path} is not the store this site signed for: the head "
                f"{self.head_path} vouches for store {head.store_id} with {head.charges} "
                f"charge(s), this file is store {sid} with {charges} (deleted and recreated, "
                f"replaced, or a mistyped path). {ACK_HINT}"
            )
        if digest == head.digest:
            return head
        if digest == head.pending:  # the last write committed; the head had not caught up
            return self.write(store=sid, digest=digest, pending=None, charges=charges)
        raise StoreIntegrityError(
            f"budget store {path} was changed outside fedsafe: its rows do not match the "
            f"signed head {self.head_path} ({head.charges} charge(s) signed, {charges} now; "
            f"rows edited, deleted or rewound). {ACK_HINT}"
        )

    def begin_write(self, conn: Connection, path: Path) -> Head:
        """Before a commit: the head now in force, checked once (it names the store's id)."""
        return self.check(conn, path)

    def pending(self, conn: Connection, store: str, before: Head) -> Head:
        """Inside the write transaction, just before commit: vouch for the state to come."""
        after = scan(conn)
        return self.write(
            store=store, digest=before.digest, pending=after.digest, charges=after.charges
        )

    def settle(self, pending: Head) -> None:
        """After the commit: the state committed (the one `pending` digested inside the
        transaction) is the current one. Not digested again: a change made by someone else
        between the commit and this write would then be signed; as it is, the next open finds
        it and refuses."""
        if pending.pending is None:  # pragma: no cover - `pending` always names a digest
            raise StoreIntegrityError("settle needs the head written before the commit")
        self.write(
            store=pending.store_id,
            digest=pending.pending,
            pending=None,
            charges=pending.charges,
            settled=True,
        )


def detail_json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))
