"""Full ledger verification: recompute every hash and link, check signatures and the witness."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsafe.common import crypto
from fedsafe.common.errors import FedsafeError, IntegrityError, LedgerError
from fedsafe.common.ledger.records import (
    ATTESTATION,
    GENESIS_PREV_HASH,
    HEAD_SIGNED,
    LEDGER_FORMAT,
    LEDGER_FORMAT_V1,
    RUN_STARTED,
    Entry,
    canonical_bytes,
    entry_hash,
    head_message,
    legacy_entry_hash,
)
from fedsafe.common.ledger.store import WITNESS_FORMAT, Ledger

__all__ = [
    "LedgerTamperedError",
    "VerifyResult",
    "verify_ledger",
    "load_site_keys",
    "read_witness",
    "EDITED",
    "GAP",
    "INSERTED",
    "REORDERED",
    "TRUNCATED",
    "DIVERGED",
    "FORGED_SITE",
    "UNKNOWN_SITE",
    "BAD_HEAD",
    "UNSIGNED_TAIL",
    "WRONG_SIGNER",
    "OLD_FORMAT",
]

EDITED = "payload edited (hash mismatch)"
GAP = "entry deleted or inserted (seq gap / prev_hash mismatch)"
INSERTED = "entry inserted (the next entry links past it)"
REORDERED = "reordered (entries out of chain order)"
TRUNCATED = "chain truncated after signed head"
DIVERGED = "chain diverges from the witnessed signed head"
FORGED_SITE = "forged or invalid site signature in attestation"
UNKNOWN_SITE = "attestation from an unknown signer (no public key for site)"
BAD_HEAD = "bad head signature"
UNSIGNED_TAIL = "entries after the last signed head (unsigned tail)"
WRONG_SIGNER = "signed by a key other than the run's server key"
OLD_FORMAT = f"written in an older ledger format; this fedsafe verifies only {LEDGER_FORMAT}"
_MALFORMED = "malformed entry"


class LedgerTamperedError(LedgerError):
    """The ledger does not verify; ``seq`` is the first bad entry and ``reason`` says why."""

    def __init__(self, seq: int, reason: str, detail: str = "") -> None:
        self.seq, self.reason, self.detail = seq, reason, detail
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"ledger entry {seq}: {reason}{suffix}")


@dataclass(frozen=True)
class VerifyResult:
    """What a successful verification covered (signatures count only when keys were given)."""

    entries_checked: int
    last_seq: int
    last_hash: str
    signed_heads: int
    attestations_checked: int
    last_head_seq: int = 0
    server_keys: tuple[str, ...] = ()


def read_witness(path: Path) -> dict[str, Any]:
    """Load a witness written by ``Ledger.sign_head``; a missing or bad file is a LedgerError."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LedgerError(f"cannot read ledger witness {path}: {err}") from err
    keys = ("entry_seq", "entry_hash", "head_seq", "head_hash", "signer", "signature")
    if not isinstance(record, dict) or record.get("format") != WITNESS_FORMAT:
        raise LedgerError(f"{path} is not a ledger witness (format {WITNESS_FORMAT})")
    missing = [key for key in keys if key not in record]
    if missing:
        raise LedgerError(f"ledger witness {path} lacks {', '.join(missing)}")
    return record


def load_site_keys(directory: Path) -> dict[str, bytes]:
    """Read ``<site>.pub`` Ed25519 public PEM files; the file stem is the site name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LedgerError(f"site key directory {directory} does not exist")
    keys: dict[str, bytes] = {}
    for path in sorted(directory.glob("*.pub")):
        pem = path.read_bytes()
        try:
            crypto.public_key_fingerprint(pem)
        except (ValueError, TypeError, FedsafeError) as err:
            raise LedgerError(f"{path} is not an Ed25519 public key PEM: {err}") from err
        keys[path.stem] = pem
    return keys


def _hex(value: object, seq: int, field: str) -> bytes:
    try:
        return bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raise LedgerTamperedError(seq, _MALFORMED, f"{field} is not hex") from None


def _check_head_signed(
    entry: Entry, server_public_pem: bytes | None, run_key: str | None, pinned: str | None
) -> None:
    payload = entry.payload
    if payload.get("head_seq") != entry.seq - 1 or payload.get("head_hash") != entry.prev_hash:
        raise LedgerTamperedError(entry.seq, BAD_HEAD, "signed head is not the preceding entry")
    signer = payload.get("signer")
    if run_key is not None and signer != run_key:
        detail = f"signer {str(signer)[:16]}... but run_started.server_key {run_key[:16]}..."
        raise LedgerTamperedError(entry.seq, WRONG_SIGNER, detail)
    if pinned is not None and signer != pinned:
        detail = f"signer {str(signer)[:16]}... but the auditor's key is {pinned[:16]}..."
        raise LedgerTamperedError(entry.seq, WRONG_SIGNER, detail)
    if server_public_pem is None:
        return
    if payload.get("signer") != crypto.public_key_fingerprint(server_public_pem):
        raise LedgerTamperedError(entry.seq, BAD_HEAD, "signer is not the server key")
    signature = _hex(payload.get("signature"), entry.seq, "signature")
    try:
        crypto.verify(server_public_pem, head_message(entry.seq - 1, entry.prev_hash), signature)
    except IntegrityError:
        raise LedgerTamperedError(entry.seq, BAD_HEAD) from None


def _check_attestation(
    entry: Entry, site_keys: dict[str, bytes], participants: dict[str, Any]
) -> None:
    payload = entry.payload
    site, signed = payload.get("site"), payload.get("signed")
    if not isinstance(site, str) or not isinstance(signed, dict):
        raise LedgerTamperedError(entry.seq, _MALFORMED, "attestation needs 'site' and 'signed'")
    if signed.get("site", site) != site:
        raise LedgerTamperedError(entry.seq, FORGED_SITE, f"signed site differs from {site!r}")
    if site not in site_keys:
        raise LedgerTamperedError(entry.seq, UNKNOWN_SITE, f"site {site!r}")
    enrolled = participants.get(site)
    if isinstance(enrolled, str) and crypto.public_key_fingerprint(site_keys[site]) != enrolled:
        detail = f"key for {site!r} is not the one run_started enrolled ({enrolled[:16]}...)"
        raise LedgerTamperedError(entry.seq, FORGED_SITE, detail)
    signature = _hex(payload.get("signature"), entry.seq, "signature")
    try:
        crypto.verify(site_keys[site], canonical_bytes(signed), signature)
    except IntegrityError:
        raise LedgerTamperedError(entry.seq, FORGED_SITE, f"site {site!r}") from None


def _link_error(
    prev: Entry | None, before_prev: Entry | None, cur: Entry, nxt: Entry | None
) -> LedgerTamperedError | None:
    """Classify a broken link; a lookahead and a lookbehind of one entry tell the cases apart."""
    expected_seq = prev.seq + 1 if prev else 1
    expected_prev = prev.hash if prev else GENESIS_PREV_HASH
    if cur.seq != expected_seq:
        return LedgerTamperedError(
            expected_seq, GAP, f"seq {expected_seq} missing, found {cur.seq}"
        )
    if cur.prev_hash == expected_prev:
        return None
    if nxt is not None and nxt.prev_hash == expected_prev:
        return LedgerTamperedError(cur.seq, REORDERED, f"entry {nxt.seq} belongs before it")
    if prev is not None and cur.prev_hash == (
        before_prev.hash if before_prev else GENESIS_PREV_HASH
    ):
        return LedgerTamperedError(prev.seq, INSERTED, f"entry {cur.seq} links past it")
    return LedgerTamperedError(cur.seq, GAP, "prev_hash does not match the preceding entry")


def _with_lookahead(entries: Iterator[Entry]) -> Iterator[tuple[Entry, Entry | None]]:
    cur = next(entries, None)
    while cur is not None:
        nxt = next(entries, None)
        yield cur, nxt
        cur = nxt


def verify_ledger(
    ledger_or_url: Ledger | str | os.PathLike[str],
    *,
    server_public_pem: bytes | None = None,
    site_keys: dict[str, bytes] | None = None,
    witness: Path | None = None,
    server_fingerprint: str | None = None,
    require_signed_tail: bool = True,
) -> VerifyResult:
    """Recompute the whole chain; raise LedgerTamperedError naming the first bad entry.

    Every head's signer must be the ``server_key`` its ``run_started`` names and, when the
    auditor gives one, ``server_fingerprint`` (or the fingerprint of ``server_public_pem``).
    Head signatures are checked when ``server_public_pem`` is given, attestation signatures
    when ``site_keys`` is given (then a site without a key fails). Entries after the last signed
    head are signed by nobody, so they fail unless ``require_signed_tail`` is False. Only a
    ``witness`` written by ``sign_head`` can reveal entries cut from the end.
    """
    pinned = _pinned(server_public_pem, server_fingerprint)
    args = (server_public_pem, site_keys, witness, pinned, require_signed_tail)
    if isinstance(ledger_or_url, Ledger):
        return _verify(ledger_or_url, *args)
    if "://" not in os.fspath(ledger_or_url) and not Path(ledger_or_url).is_file():
        raise LedgerError(f"no ledger file at {ledger_or_url}")  # do not create an empty one
    with Ledger.open(ledger_or_url) as ledger:
        return _verify(ledger, *args)


def _pinned(server_public_pem: bytes | None, fingerprint: str | None) -> str | None:
    """The one server fingerprint the auditor trusts; a key and a fingerprint must agree."""
    if fingerprint is not None:
        fingerprint = fingerprint.strip().lower()
    if server_public_pem is None:
        return fingerprint
    of_key = crypto.public_key_fingerprint(server_public_pem)
    if fingerprint is not None and fingerprint != of_key:
        raise LedgerError(
            f"the server key given has fingerprint {of_key}, not the pinned {fingerprint}"
        )
    return of_key


def _check_run_started(entry: Entry, pinned: str | None) -> str | None:
    """The run's declared server key; it must be the auditor's when one is pinned."""
    key = entry.payload.get("server_key")
    if key is not None and not isinstance(key, str):
        raise LedgerTamperedError(entry.seq, _MALFORMED, "run_started.server_key is not a string")
    if pinned is not None and key is not None and key != pinned:
        detail = f"run_started.server_key {key[:16]}... but the auditor's key is {pinned[:16]}..."
        raise LedgerTamperedError(entry.seq, WRONG_SIGNER, detail)
    return key


def _verify(
    ledger: Ledger,
    server_public_pem: bytes | None,
    site_keys: dict[str, bytes] | None,
    witness_path: Path | None,
    pinned: str | None,
    require_signed_tail: bool,
) -> VerifyResult:
    witness = read_witness(witness_path) if witness_path is not None else None
    if witness is not None:
        if pinned is not None and witness["signer"] != pinned:
            raise LedgerTamperedError(
                int(witness["entry_seq"]), WRONG_SIGNER, "witness signer is not the auditor's key"
            )
        if server_public_pem is not None:
            _check_witness_signature(witness, server_public_pem)
    prev: Entry | None = None
    before_prev: Entry | None = None
    count = heads = attestations = last_head = 0
    run_key: str | None = None
    participants: dict[str, Any] = {}
    declared: list[str] = []
    for cur, nxt in _with_lookahead(ledger.entries()):
        error = _link_error(prev, before_prev, cur, nxt)
        if error is not None:
            raise error
        if entry_hash(cur.seq, cur.time, cur.kind, cur.payload, cur.prev_hash) != cur.hash:
            if legacy_entry_hash(cur.seq, cur.time, cur.kind, cur.payload, cur.prev_hash) == (
                cur.hash
            ):
                raise LedgerTamperedError(cur.seq, OLD_FORMAT, LEDGER_FORMAT_V1)
            raise LedgerTamperedError(cur.seq, EDITED)
        if cur.kind == RUN_STARTED:
            run_key = _check_run_started(cur, pinned)
            raw = cur.payload.get("participants")
            participants = raw if isinstance(raw, dict) else {}
            if run_key is not None and run_key not in declared:
                declared.append(run_key)
        elif cur.kind == HEAD_SIGNED:
            _check_head_signed(cur, server_public_pem, run_key, pinned)
            heads += 1
            last_head = cur.seq
        elif cur.kind == ATTESTATION and site_keys is not None:
            _check_attestation(cur, site_keys, participants)
            attestations += 1
        if witness is not None:
            _check_witnessed(cur, witness)
        before_prev, prev = prev, cur
        count += 1
    last_seq = prev.seq if prev else 0
    if witness is not None and last_seq < witness["entry_seq"]:
        detail = f"ledger ends at seq {last_seq}, witness holds seq {witness['entry_seq']}"
        raise LedgerTamperedError(last_seq + 1, TRUNCATED, detail)
    if require_signed_tail and last_seq != last_head:
        detail = f"last signed head is seq {last_head}, the ledger runs to seq {last_seq}"
        raise LedgerTamperedError(last_head + 1, UNSIGNED_TAIL, detail)
    return VerifyResult(
        count,
        last_seq,
        prev.hash if prev else GENESIS_PREV_HASH,
        heads,
        attestations,
        last_head,
        tuple(declared),
    )


def _check_witnessed(entry: Entry, witness: dict[str, Any]) -> None:
    if entry.seq == witness["head_seq"] and entry.hash != witness["head_hash"]:
        raise LedgerTamperedError(entry.seq, DIVERGED, "signed head hash differs from witness")
    if entry.seq == witness["entry_seq"] and entry.hash != witness["entry_hash"]:
        raise LedgerTamperedError(entry.seq, DIVERGED, "head_signed entry differs from witness")


def _check_witness_signature(witness: dict[str, Any], server_public_pem: bytes) -> None:
    seq = witness["entry_seq"]
    if witness["signer"] != crypto.public_key_fingerprint(server_public_pem):
        raise LedgerTamperedError(seq, BAD_HEAD, "witness signer is not the server key")
    try:
        message = head_message(int(witness["head_seq"]), str(witness["head_hash"]))
        crypto.verify(server_public_pem, message, bytes.fromhex(witness["signature"]))
    except (IntegrityError, ValueError, TypeError):
        raise LedgerTamperedError(seq, BAD_HEAD, "witness signature does not verify") from None
