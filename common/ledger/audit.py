"""Auditing a run folder's ledger against anchors the auditor holds, not ones found beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsafe.common import crypto
from fedsafe.common.errors import FedsafeError, LedgerError
from fedsafe.common.ledger.records import HEAD_SIGNED, RUN_STARTED
from fedsafe.common.ledger.store import Ledger
from fedsafe.common.ledger.verify import (
    LedgerTamperedError,
    VerifyResult,
    load_site_keys,
    read_witness,
    verify_ledger,
)

__all__ = [
    "Anchors",
    "AuditOutcome",
    "audit_ledger",
    "INTACT",
    "TAMPERED",
    "UNVERIFIABLE",
    "MISSING_KEY",
    "MISSING_WITNESS",
    "STALE_WITNESS",
]

INTACT, TAMPERED, UNVERIFIABLE = "intact", "tampered", "unverifiable"
MISSING_KEY = "server key missing from the run folder, but run_started names one"
MISSING_WITNESS = "witness missing from the run folder, but the ledger has signed heads"
STALE_WITNESS = "the run folder's witness is of an earlier head than the ledger's last"
SERVER_KEY = Path("keys") / "server_signing.pub"
SITE_KEYS = Path("keys") / "sites"
WITNESS = "ledger.witness.json"


@dataclass(frozen=True)
class Anchors:
    """What the auditor got independently of the run folder (any may be None).

    ``server_key`` is a server public PEM file, ``keys_dir`` a folder holding
    ``server_signing.pub`` and ``sites/<site>.pub``, ``witness`` a witness file kept apart,
    ``fingerprint`` the server key's fingerprint (hex) pinned from elsewhere.
    """

    server_key: Path | None = None
    keys_dir: Path | None = None
    witness: Path | None = None
    fingerprint: str | None = None

    def independent_of(self, run_dir: Path) -> bool:
        """True when some anchor was given and no file anchor lies inside the run folder."""
        files = [p for p in (self.server_key, self.keys_dir, self.witness) if p is not None]
        inside = [p for p in files if Path(p).resolve().is_relative_to(Path(run_dir).resolve())]
        return bool(files or self.fingerprint) and not inside


@dataclass(frozen=True)
class AuditOutcome:
    """``status`` is intact (checked against an independent anchor), unverifiable or tampered."""

    status: str
    message: str
    result: VerifyResult | None = None
    seq: int | None = None
    reason: str | None = None
    detail: str = ""
    checked_with: dict[str, Any] = field(default_factory=dict)


def _declared(path: Path) -> tuple[bool, bool]:
    """Whether the ledger says a server key existed (run_started) and a head was signed."""
    key = head = False
    with Ledger.open(path) as ledger:
        for entry in ledger.entries():
            key = key or (entry.kind == RUN_STARTED and bool(entry.payload.get("server_key")))
            head = head or entry.kind == HEAD_SIGNED
    return key, head


def _read_pem(path: Path) -> bytes:
    try:
        pem = path.read_bytes()
        crypto.public_key_fingerprint(pem)
    except (OSError, ValueError, TypeError, FedsafeError) as err:
        raise LedgerError(f"{path} is not a readable Ed25519 public key PEM: {err}") from err
    return pem


def _independent_key(anchors: Anchors) -> Path | None:
    if anchors.server_key is not None:
        return anchors.server_key
    if anchors.keys_dir is not None:
        if not (anchors.keys_dir / "server_signing.pub").is_file():
            raise LedgerError(f"--keys {anchors.keys_dir} holds no server_signing.pub")
        return anchors.keys_dir / "server_signing.pub"
    return None


def audit_ledger(ledger_path: Path, run_dir: Path, anchors: Anchors) -> AuditOutcome:
    """Verify RUN_DIR's ledger; files the run says existed but are gone count as tampering.

    Keys and witness found in the run folder are used, but a forger can rewrite them with the
    ledger, so only an anchor from ``anchors`` can make the outcome "intact".
    """
    key_given = _independent_key(anchors)
    folder_key, folder_witness = run_dir / SERVER_KEY, run_dir / WITNESS
    declared_key, declared_head = _declared(ledger_path)
    checked: dict[str, Any] = {
        "server key": str(key_given) if key_given else None,
        "fingerprint": anchors.fingerprint,
        "witness": str(anchors.witness) if anchors.witness else None,
        "site keys": None,
        "run folder key": folder_key.is_file(),
        "run folder witness": folder_witness.is_file(),
    }
    try:
        pem = _read_pem(key_given) if key_given else None
        fingerprint = anchors.fingerprint
        if anchors.witness is not None and fingerprint is None and pem is None:
            fingerprint = str(read_witness(anchors.witness)["signer"])
        if declared_key and not folder_key.is_file():
            raise LedgerTamperedError(1, MISSING_KEY, str(folder_key))
        if folder_key.is_file():
            found = _read_pem(folder_key)
            pinned = crypto.public_key_fingerprint(pem) if pem else fingerprint
            if pinned is not None and crypto.public_key_fingerprint(found) != pinned.lower():
                raise LedgerTamperedError(
                    1, "run folder's server key is not the auditor's", str(folder_key)
                )
            pem = pem or found
        if declared_head and anchors.witness is None and not folder_witness.is_file():
            raise LedgerTamperedError(1, MISSING_WITNESS, str(folder_witness))
        witness = anchors.witness or (folder_witness if folder_witness.is_file() else None)
        site_dir = anchors.keys_dir / "sites" if anchors.keys_dir else run_dir / SITE_KEYS
        site_keys = load_site_keys(site_dir) if site_dir.is_dir() else None
        checked["site keys"] = sorted(site_keys) if site_keys is not None else None
        result = verify_ledger(
            ledger_path,
            server_public_pem=pem,
            site_keys=site_keys,
            witness=witness,
            server_fingerprint=fingerprint,
        )
        if anchors.witness is None and witness is not None:
            held = int(read_witness(witness)["entry_seq"])
            if held != result.last_head_seq:
                detail = f"witness holds seq {held}, last signed head is seq {result.last_head_seq}"
                raise LedgerTamperedError(held, STALE_WITNESS, detail)
    except LedgerTamperedError as err:
        checked = {k: v for k, v in checked.items() if v is not None}
        return AuditOutcome(
            TAMPERED, str(err), None, err.seq, err.reason, err.detail, checked_with=checked
        )
    checked = {k: v for k, v in checked.items() if v is not None}  # what was used, only
    if not anchors.independent_of(run_dir):
        message = (
            f"chain of {result.entries_checked} entries consistent, but checked only against "
            "keys and witness found in the run folder, which a forger can replace: give "
            "--key, --keys, --fingerprint or --witness from an independent copy"
        )
        return AuditOutcome(UNVERIFIABLE, message, result, checked_with=checked)
    message = f"all {result.entries_checked} entries verified against the auditor's anchors"
    return AuditOutcome(INTACT, message, result, checked_with=checked)
