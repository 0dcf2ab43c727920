"""Ledger entry schema, canonical JSON and the hash-chain rule; the payload keys are a contract.

Every entry is ``Entry(seq, time, kind, payload, prev_hash, hash)``. ``seq`` starts at 1 and grows
by one; ``time`` is UTC ISO-8601 with microseconds and a ``Z``; ``prev_hash`` of the first entry is
64 zeros and of every other entry the ``hash`` of the one before; ``hash`` is the lower-case hex
SHA-256 of the canonical JSON of ``{"format", "seq", "time", "kind", "payload", "prev_hash"}``
where ``format`` is ``LEDGER_FORMAT`` ("fedsafe-ledger-v2"). Canonical JSON is RFC 8785 (JCS:
sorted keys, no whitespace, UTF-8, ECMAScript number spelling such as ``0.00001`` and ``1e+21``,
finite floats, integers within +-2**53), so a verifier in any language computes the same hashes.
Format v1 (Python's ``json.dumps`` spelling, no ``format`` key) is refused by name.

Payload keys the server (and, for attestations, the sites) must write; readers such as
``provenance_card`` rely on them. Other keys may be added freely; they are hashed like the rest.

- ``run_started``: ``ledger_format`` (``LEDGER_FORMAT``), ``run_id`` (str), ``purpose`` (str),
  ``code_version`` (str, e.g. a git commit), ``config_hash`` (SHA-256 hex of the resolved
  config), ``strategy`` (str), ``privacy`` (dict: accountant, target epsilon, delta, noise,
  clipping...), ``secure_aggregation`` (bool), ``server_key`` (fingerprint of the key that
  signs every head), ``participants`` (site -> key fingerprint).
- ``consent_decision``: ``site``, ``round``, ``decision`` ("granted" | "refused" | "withdrawn"),
  ``reason`` (str).
- ``attestation``: ``site`` (str), ``signature`` (hex of ``common.crypto.sign`` over
  ``canonical_bytes(signed)`` with the site's Ed25519 key), ``signed`` (dict, the part the site
  signed) with ``site`` (must equal the outer ``site``), ``round`` (int), ``epsilon`` (float, the
  site's cumulative epsilon after this round), ``delta`` (float), ``steps`` (int, local DP steps
  this round), ``update_digest`` (SHA-256 hex of the update sent, or null), ``noise_multiplier``
  and ``sample_rate`` (floats the site trained with, null without DP), ``num_examples`` (int, the
  aggregation weight the site claims), ``randomness`` ("os-csprng", or "seeded-test-only": not
  private), ``release`` (the site's evaluation release policy), ``refused`` (bool).
- ``round_aggregated``: ``round`` (int), ``sites`` (list of str), ``aggregate_digest``
  (SHA-256 hex).
- ``dropout``: ``site``, ``round``, ``reason``.
- ``error``: ``component``, ``message``, and ``round`` when known.
- ``alert``: ``rule`` (str, e.g. "epsilon_near_cap", "site_dropout"), ``severity`` ("warning" |
  "critical"), ``message`` (str), and ``round`` / ``site`` when known (the monitor's alert rules).
- ``access_decision`` (the coordinator's access ledger): ``action`` (e.g. "submit",
  "consent_grant", "report_read", "connect"), ``role`` (str, or null for a TLS refusal),
  ``decision`` ("allowed" | "refused"), ``subject`` and ``fingerprint`` of the client
  certificate (null when none was verified), ``peer`` (address), ``target`` (str), ``reason``.
- ``run_resumed``: ``run_id``, ``from_round`` (int), ``config_hash`` (of the resumed config,
  which must equal the run's), ``checkpoint_head``.
- ``run_finished``: ``run_id``, ``rounds_completed`` (int), ``final_model_sha256`` (SHA-256 hex).
- ``head_signed`` (written only by ``Ledger.sign_head``): ``head_seq``, ``head_hash``, ``signer``
  (``public_key_fingerprint`` of the server key), ``signature`` (hex of ``sign`` over
  ``head_message(head_seq, head_hash)``).

Entries after a ``run_started`` or ``run_resumed`` belong to that payload's ``run_id``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import rfc8785

__all__ = [
    "RUN_STARTED",
    "CONSENT_DECISION",
    "ATTESTATION",
    "ROUND_AGGREGATED",
    "DROPOUT",
    "ERROR",
    "RUN_RESUMED",
    "RUN_FINISHED",
    "HEAD_SIGNED",
    "ALERT",
    "ACCESS_DECISION",
    "KINDS",
    "GENESIS_PREV_HASH",
    "LEDGER_FORMAT",
    "LEDGER_FORMAT_V1",
    "legacy_entry_hash",
    "HEAD_MESSAGE_PREFIX",
    "Entry",
    "canonical_json",
    "canonical_bytes",
    "check_kind",
    "format_time",
    "entry_hash",
    "make_entry",
    "head_message",
]

RUN_STARTED = "run_started"
CONSENT_DECISION = "consent_decision"
ATTESTATION = "attestation"
ROUND_AGGREGATED = "round_aggregated"
DROPOUT = "dropout"
ERROR = "error"
RUN_RESUMED = "run_resumed"
RUN_FINISHED = "run_finished"
HEAD_SIGNED = "head_signed"
ALERT = "alert"
ACCESS_DECISION = "access_decision"

KINDS: tuple[str, ...] = (
    RUN_STARTED,
    CONSENT_DECISION,
    ATTESTATION,
    ROUND_AGGREGATED,
    DROPOUT,
    ERROR,
    RUN_RESUMED,
    RUN_FINISHED,
    HEAD_SIGNED,
    ALERT,
    ACCESS_DECISION,
)
GENESIS_PREV_HASH = "0" * 64
LEDGER_FORMAT = "fedsafe-ledger-v2"
LEDGER_FORMAT_V1 = "fedsafe-ledger-v1"
HEAD_MESSAGE_PREFIX = b"fedsafe-ledger-head-v1"


@dataclass(frozen=True)
class Entry:
    """One committed ledger entry; ``payload`` must be treated as read-only (it is hashed)."""

    seq: int
    time: str
    kind: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in export order; ``canonical_json`` of it is what exports write."""
        return {
            "format": LEDGER_FORMAT,
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


# What canonical JSON holds; `_check_json` returns its argument once it is known to be one.
JsonValue: TypeAlias = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def _check_json(value: object, path: str) -> JsonValue:
    # json.dumps would silently accept tuples, coerce int keys and write NaN; a hash chain
    # needs one unambiguous byte form, so reject anything that would not round-trip exactly.
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"canonical JSON: non-finite float {value!r} at {path}; NaN and infinity "
                "are not JSON and cannot be hashed reproducibly (store null or a string)"
            )
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"canonical JSON: key {key!r} at {path} must be str")
            _check_json(item, f"{path}.{key}")
        return value
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return value
    raise TypeError(
        f"canonical JSON: {type(value).__name__} at {path} is not allowed "
        "(use dict, list, str, int, finite float, bool or None)"
    )


def canonical_bytes(value: object) -> bytes:
    """RFC 8785 (JCS) bytes of ``value``: the exact bytes that are hashed and signed."""
    checked = _check_json(value, "$")
    try:
        return rfc8785.dumps(checked)
    except rfc8785.CanonicalizationError as err:  # e.g. an integer beyond +-2**53
        raise ValueError(f"canonical JSON (RFC 8785): {err}") from None


def canonical_json(value: object) -> str:
    """The RFC 8785 text of ``value``: sorted keys, no whitespace, one spelling per number."""
    return canonical_bytes(value).decode("utf-8")


def check_kind(kind: str) -> str:
    """Return ``kind`` if registered; otherwise raise ValueError listing the known kinds."""
    if kind not in KINDS:
        raise ValueError(f"unknown ledger entry kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return kind


def format_time(at_time: datetime) -> str:
    """UTC ISO-8601 with microseconds and ``Z``; fixed width so equal instants hash equally."""
    if not isinstance(at_time, datetime):
        raise TypeError(f"at_time must be datetime, got {type(at_time).__name__}")
    if at_time.tzinfo is None or at_time.utcoffset() is None:
        raise ValueError("at_time must be timezone-aware (naive datetimes are ambiguous)")
    return at_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(seq: int, time: str, kind: str, payload: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 hex over the canonical JSON of everything in an entry except its own hash."""
    body = {
        "format": LEDGER_FORMAT,
        "seq": seq,
        "time": time,
        "kind": kind,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def legacy_entry_hash(
    seq: int, time: str, kind: str, payload: dict[str, Any], prev_hash: str
) -> str:
    """The v1 hash (Python's float spelling): only to name an old ledger's format."""
    body = {"seq": seq, "time": time, "kind": kind, "payload": payload, "prev_hash": prev_hash}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_entry(seq: int, time: str, kind: str, payload: dict[str, Any], prev_hash: str) -> Entry:
    """Build a hashed entry after checking kind and payload type; storage-independent."""
    check_kind(kind)
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be dict, got {type(payload).__name__}")
    return Entry(
        seq, time, kind, payload, prev_hash, entry_hash(seq, time, kind, payload, prev_hash)
    )


def head_message(head_seq: int, head_hash: str) -> bytes:
    """Bytes a head signature covers: prefix, 8-byte big-endian seq, 32 raw hash bytes."""
    return HEAD_MESSAGE_PREFIX + head_seq.to_bytes(8, "big") + bytes.fromhex(head_hash)
