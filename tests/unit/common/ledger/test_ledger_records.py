"""Entry schema, canonical JSON and hash rule: pinned known answers and one test per rejection."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.ledger import GENESIS_PREV_HASH, KINDS, RUN_STARTED, canonical_json, entry_hash
from common.ledger.records import check_kind, format_time, head_message, make_entry

# sha256 of {"kind":"run_started","payload":{"run_id":"r1"},"prev_hash":"0"*64,"seq":1,
# "time":"2025-01-01T00:00:00.000000Z"}, computed independently with sha256sum.
GENESIS_KAT = "a1a6e36d2a5d49e74074a867113c444a0a7b16bd0742499a3c050da3c2cf0152"


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
    assert text == '{"a":{"y":-0.0,"z":"Zürich"},"b":[1,2.5,null,true]}'


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
