"""Tamper-evident append-only compliance ledger: schema, storage, verification, exports."""

from __future__ import annotations

from fedsafe.common.ledger.export import export_csv, export_json
from fedsafe.common.ledger.provenance import provenance_card
from fedsafe.common.ledger.records import (
    ALERT,
    ATTESTATION,
    CONSENT_DECISION,
    DROPOUT,
    ERROR,
    GENESIS_PREV_HASH,
    HEAD_SIGNED,
    KINDS,
    ROUND_AGGREGATED,
    RUN_FINISHED,
    RUN_RESUMED,
    RUN_STARTED,
    Entry,
    canonical_bytes,
    canonical_json,
    entry_hash,
    head_message,
)
from fedsafe.common.ledger.store import Ledger
from fedsafe.common.ledger.verify import (
    LedgerTamperedError,
    VerifyResult,
    load_site_keys,
    verify_ledger,
)

__all__ = [
    "ALERT",
    "ATTESTATION",
    "CONSENT_DECISION",
    "DROPOUT",
    "ERROR",
    "GENESIS_PREV_HASH",
    "HEAD_SIGNED",
    "KINDS",
    "ROUND_AGGREGATED",
    "RUN_FINISHED",
    "RUN_RESUMED",
    "RUN_STARTED",
    "Entry",
    "Ledger",
    "LedgerTamperedError",
    "VerifyResult",
    "canonical_bytes",
    "canonical_json",
    "entry_hash",
    "export_csv",
    "export_json",
    "head_message",
    "load_site_keys",
    "provenance_card",
    "verify_ledger",
]
