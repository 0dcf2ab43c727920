"""Stream every ledger entry to JSON or CSV for auditors; exported hashes stay checkable."""

from __future__ import annotations

import csv
from typing import TextIO

from fedsafe.common.ledger.records import canonical_json
from fedsafe.common.ledger.store import Ledger

__all__ = ["EXPORT_FORMAT", "CSV_COLUMNS", "export_json", "export_csv"]

EXPORT_FORMAT = "fedsafe-ledger-export-v1"
CSV_COLUMNS = ("seq", "time", "kind", "payload", "prev_hash", "hash")


def export_json(ledger: Ledger, out: TextIO) -> int:
    """Write ``{"format", "entries": [...]}`` one entry per line; returns the entry count.

    Entries are written as canonical JSON, so a reader can recompute each hash from the file.
    """
    out.write('{"format":"' + EXPORT_FORMAT + '","entries":[')
    count = 0
    for entry in ledger.entries():
        out.write(("\n" if count == 0 else ",\n") + canonical_json(entry.to_dict()))
        count += 1
    out.write("\n]}\n")
    return count


def export_csv(ledger: Ledger, out: TextIO) -> int:
    """Write a header and one row per entry, payload as canonical JSON; returns the count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for entry in ledger.entries():
        writer.writerow(
            [
                entry.seq,
                entry.time,
                entry.kind,
                canonical_json(entry.payload),
                entry.prev_hash,
                entry.hash,
            ]
        )
        count += 1
    return count
