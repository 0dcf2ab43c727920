"""Shared helpers for the ledger tests: fixed clock, signed attestations, a table tamperer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, text

from fedsafe.common import crypto
from fedsafe.common.ledger import Entry, Ledger, canonical_bytes, canonical_json
from fedsafe.common.ledger.records import make_entry

__all__ = ["T0", "Tamperer", "attestation", "fill"]

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def attestation(
    private_pem: bytes, site: str, rnd: int, *, epsilon: float = 1.0, refused: bool = False
) -> dict[str, Any]:
    """An ATTESTATION payload as a site would sign it."""
    signed = {
        "site": site,
        "round": rnd,
        "epsilon": epsilon,
        "delta": 1e-5,
        "steps": 0 if refused else 10,
        "update_digest": None if refused else crypto.sha256_hex(f"{site}{rnd}".encode()),
        "refused": refused,
    }
    signature = crypto.sign(private_pem, canonical_bytes(signed))
    return {"site": site, "signature": signature.hex(), "signed": signed}


def fill(ledger: Ledger, n: int) -> list[Entry]:
    """Append ``n`` error entries at fixed, increasing times."""
    return [
        ledger.append("error", {"component": "test", "message": f"m{i}"}, at_time=T0 + timedelta(i))
        for i in range(n)
    ]


class Tamperer:
    """Edits the table behind the ledger's back, as an attacker with database access would."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def row(self, seq: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            found = conn.execute(
                text("SELECT * FROM ledger_entries WHERE seq = :s"), {"s": seq}
            ).one()
        return dict(found._mapping)

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)

    def set_row(self, seq: int, row: dict[str, Any]) -> None:
        cols = {k: v for k, v in row.items() if k != "seq"}
        assignments = ", ".join(f"{k} = :{k}" for k in cols)
        self.execute(f"UPDATE ledger_entries SET {assignments} WHERE seq = :seq", seq=seq, **cols)

    def insert(self, entry: Entry) -> None:
        self.execute(
            "INSERT INTO ledger_entries (seq, time, kind, payload, prev_hash, hash) "
            "VALUES (:seq, :time, :kind, :payload, :prev_hash, :hash)",
            seq=entry.seq,
            time=entry.time,
            kind=entry.kind,
            payload=canonical_json(entry.payload),
            prev_hash=entry.prev_hash,
            hash=entry.hash,
        )

    def make(self, seq: int, kind: str, payload: dict[str, Any], prev_hash: str) -> Entry:
        return make_entry(seq, "2025-06-01T00:00:00.000000Z", kind, payload, prev_hash)
