"""Exports stream every entry and keep hashes recomputable from the exported text."""

from __future__ import annotations

import csv
import io
import json

from _ledger_helpers import fill

from fedsafe.common.ledger import Ledger, entry_hash, export_csv, export_json


def test_export_json_round_trips_and_hashes_recompute(ledger: Ledger) -> None:
    # Arrange
    written = fill(ledger, 4)
    out = io.StringIO()

    # Act
    count = export_json(ledger, out)

    # Assert
    document = json.loads(out.getvalue())
    assert count == 4 and document["format"] == "fedsafe-ledger-export-v1"
    assert document["entries"] == [e.to_dict() for e in written]
    for item in document["entries"]:
        body = {k: item[k] for k in ("seq", "time", "kind", "payload", "prev_hash")}
        assert entry_hash(**body) == item["hash"]


def test_export_json_of_empty_ledger_is_valid(ledger: Ledger) -> None:
    out = io.StringIO()
    assert export_json(ledger, out) == 0
    assert json.loads(out.getvalue())["entries"] == []


def test_export_csv_writes_header_and_rows(ledger: Ledger) -> None:
    # Arrange
    written = fill(ledger, 3)
    out = io.StringIO()

    # Act
    count = export_csv(ledger, out)

    # Assert
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert count == 3
    assert [int(r["seq"]) for r in rows] == [1, 2, 3]
    assert [json.loads(r["payload"]) for r in rows] == [e.payload for e in written]
    assert [r["hash"] for r in rows] == [e.hash for e in written]
