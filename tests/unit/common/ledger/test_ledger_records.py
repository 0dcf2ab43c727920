"""Entry schema, canonical JSON and hash rule: pinned known answers and one test per rejection."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from fedsafe.common.ledger import (
    GENESIS_PREV_HASH,
    KINDS,
    RUN_STARTED,
    Ledger,
    LedgerTamperedError,
    canonical_json,
    entry_hash,
    verify_ledger,
)
from fedsafe.common.ledger.records import (
    check_kind,
    format_time,
    head_message,
    legacy_entry_hash,
    make_entry,
)
from fedsafe.common.ledger.verify import OLD_FORMAT

# sha256 of {"format":"fedsafe-ledger-v2","kind":"run_started","payload":{"run_id":"r1"},
# "prev_hash":"0"*64,"seq":1,"time":"2025-01-01T00:00:00.000000Z"}, computed with sha256sum.
GENESIS_KAT = "3ed795db4a981dbb9eb3c20e15225e6039e66dc811691e98de4b4fe347cd1432"


def test_genesis_entry_hash_known_answer() -> None:
    # Arrange
    time = format_time(datetime(2025, 1, 1, tzinfo=UTC))

    # Act
    entry = make_entry(1, time, RUN_STARTED, {"run_id": "r1"}, GENESIS_PREV_HASH)

    # Assert
    assert time == "2025-01-01T00:00:00.000000Z"
    assert GENESIS_PREV_HASH == "0" * 64
    assert entry.hash == GENESIS_KAT


def test_canonical_json_sorts_keys_strips_whitespace_keeps_utf8() -> None:
    # Arrange
    value = {"b": [1, 2.5, None, True], "a": {"z": "Zürich", "y": -0.0}}

    # Act
    text = canonical_json(value)

    # Assert
    assert text == '{"a":{"y":0,"z":"Zürich"},"b":[1,2.5,null,true]}'  # RFC 8785: -0 is 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_non_finite_floats(bad: float) -> None:
    # Arrange
    value = {"metrics": {"epsilon": bad}}

    # Act / Assert
    with pytest.raises(ValueError, match=r"non-finite float .* at \$\.metrics\.epsilon"):
        canonical_json(value)


@pytest.mark.parametrize("bad", [{"t": (1, 2)}, {1: "int key"}, {"s": {1, 2}}, {"b": b"x"}])
def test_canonical_json_rejects_values_that_do_not_round_trip(bad: object) -> None:
    with pytest.raises(TypeError, match="canonical JSON"):
        canonical_json(bad)


def test_entry_hash_covers_every_field() -> None:
    # Arrange
    base = (1, "2025-01-01T00:00:00.000000Z", "error", {"m": 1}, GENESIS_PREV_HASH)
    variants = [
        (2, *base[1:]),
        (1, "2025-01-01T00:00:00.000001Z", *base[2:]),
        (*base[:2], "dropout", *base[3:]),
        (*base[:3], {"m": 2}, base[4]),
        (*base[:4], "1" * 64),
    ]

    # Act
    hashes = {entry_hash(*v) for v in variants}

    # Assert
    assert entry_hash(*base) not in hashes
    assert len(hashes) == len(variants)


def test_unknown_kind_raises_listing_known_kinds() -> None:
    with pytest.raises(ValueError, match="unknown ledger entry kind 'bogus'") as info:
        check_kind("bogus")
    assert all(kind in str(info.value) for kind in KINDS)


def test_kind_registry_values() -> None:
    assert KINDS == (
        "run_started",
        "consent_decision",
        "attestation",
        "round_aggregated",
        "dropout",
        "error",
        "run_resumed",
        "run_finished",
        "head_signed",
        "alert",
        "access_decision",
    )


def test_format_time_converts_to_utc_and_rejects_naive() -> None:
    # Arrange
    cet = datetime(2025, 1, 1, 1, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))

    # Act / Assert
    assert format_time(cet) == "2025-01-01T00:00:00.000005Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2025, 1, 1))


def test_head_message_layout_is_prefix_seq_raw_hash() -> None:
    # Arrange
    digest = hashlib.sha256(b"x").hexdigest()

    # Act
    message = head_message(7, digest)

    # Assert
    assert message == b"fedsafe-ledger-head-v1" + b"\x00" * 7 + b"\x07" + bytes.fromhex(digest)


def test_canonical_json_is_rfc8785_known_answers() -> None:
    # RFC 8785 section 3.2.2 / appendix B values
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(value) == expected
    assert canonical_json({"b": 1e-05, "a": 1e21}) == '{"a":1e+21,"b":0.00001}'
    assert canonical_json(-0.0) == "0" and canonical_json(1.0) == "1"
    with pytest.raises(ValueError, match="RFC 8785"):
        canonical_json(2**60)


def test_entry_hash_is_sha256_of_the_jcs_body_with_the_format() -> None:
    body = (
        '{"format":"fedsafe-ledger-v2","kind":"error","payload":{"eps":0.00001},'
        '"prev_hash":"' + "0" * 64 + '","seq":1,"time":"2025-01-01T00:00:00.000000Z"}'
    )
    expected = hashlib.sha256(body.encode()).hexdigest()
    assert (
        entry_hash(1, "2025-01-01T00:00:00.000000Z", "error", {"eps": 1e-5}, "0" * 64) == expected
    )


def test_a_v1_ledger_is_refused_naming_its_format(tmp_path: Path) -> None:
    # Arrange: an entry as fedsafe wrote it before RFC 8785 (Python's "1e-05" spelling)
    path = tmp_path / "old.sqlite"
    with Ledger.open(path) as led:
        led.append("error", {"component": "x", "message": "m"})
    payload = {"eps": 1e-05}
    t = "2025-01-01T00:00:00.000000Z"
    old = legacy_entry_hash(1, t, "error", payload, "0" * 64)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_entries SET time=:t, payload=:p, hash=:h WHERE seq=1"),
            {"t": t, "p": json.dumps(payload), "h": old},
        )
    engine.dispose()

    # Act
    with pytest.raises(LedgerTamperedError) as info:
        verify_ledger(path, require_signed_tail=False)

    # Assert
    assert info.value.reason == OLD_FORMAT and "fedsafe-ledger-v1" in str(info.value)
    assert "fedsafe-ledger-v2" in str(info.value)
