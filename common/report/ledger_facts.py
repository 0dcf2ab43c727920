"""The ledger side of a run report: verified when the report is made, then read entry by entry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc

from common.errors import FedsafeError
from common.ledger import (
    ATTESTATION,
    CONSENT_DECISION,
    DROPOUT,
    ERROR,
    ROUND_AGGREGATED,
    RUN_FINISHED,
    RUN_RESUMED,
    RUN_STARTED,
    Ledger,
    LedgerTamperedError,
    load_site_keys,
    verify_ledger,
)

__all__ = ["LEDGER_FILE", "NO_LEDGER", "check_ledger", "read_ledger"]

LEDGER_FILE = "ledger.sqlite"
WITNESS_FILE = "ledger.witness.json"
SERVER_KEY = Path("keys") / "server_signing.pub"
SITE_KEYS = Path("keys") / "sites"
NO_LEDGER = "no ledger in this run folder"
_READ_ERRORS = (FedsafeError, ValueError, TypeError, OSError, sa_exc.SQLAlchemyError)
# The server's "granted" reason ends "for purpose '<p>' (<legal basis>; <jurisdiction>; <until>)";
# a legal basis may hold parentheses ("Art. 6(1)(e)"), the last two parts hold no semicolon.
_GRANT_REASON = re.compile(r"for purpose '.*?' \((.+); ([^;]+); ([^;]+)\)\s*$")


def check_ledger(run_dir: Path) -> dict[str, Any]:
    """Verify RUN_DIR/ledger.sqlite now, with every key and witness the folder holds.

    Never copied from a file: a result written at run time could itself have been edited.
    ``status`` is "intact", "tampered" (first bad entry named), "unverifiable" or "absent".
    """
    run_dir = Path(run_dir)
    path = run_dir / LEDGER_FILE
    server_key, site_dir, witness = (
        run_dir / SERVER_KEY,
        run_dir / SITE_KEYS,
        run_dir / WITNESS_FILE,
    )
    if not path.is_file():
        return {"present": False, "status": "absent", "message": NO_LEDGER}
    checked_with: dict[str, Any] = {
        "server_key": server_key.is_file(),
        "site_keys": sorted(p.stem for p in site_dir.glob("*.pub")) if site_dir.is_dir() else [],
        "witness": witness.is_file(),
    }
    base = {"present": True, "path": LEDGER_FILE, "checked_with": checked_with}
    try:
        result = verify_ledger(
            path,
            server_public_pem=server_key.read_bytes() if server_key.is_file() else None,
            site_keys=load_site_keys(site_dir) if site_dir.is_dir() else None,
            witness=witness if witness.is_file() else None,
        )
    except LedgerTamperedError as err:
        return {
            **base,
            "status": "tampered",
            "first_bad_seq": err.seq,
            "reason": err.reason,
            "detail": err.detail,
            "message": str(err),
            "first_bad_entry": _entry_brief(path, err.seq),
        }
    except _READ_ERRORS as err:
        return {**base, "status": "unverifiable", "message": f"{type(err).__name__}: {err}"}
    return {
        **base,
        "status": "intact",
        "message": f"all {result.entries_checked} entries verified",
        "entries_checked": result.entries_checked,
        "last_seq": result.last_seq,
        "last_hash": result.last_hash,
        "signed_heads": result.signed_heads,
        "attestations_checked": result.attestations_checked,
    }


def _entry_brief(path: Path, seq: int) -> dict[str, Any] | None:
    """Kind and time of the first bad entry, when it can still be read."""
    try:
        with Ledger.open(path) as ledger:
            entry = next(ledger.entries(since_seq=max(seq - 1, 0)), None)
    except _READ_ERRORS:
        return None
    if entry is None or entry.seq != seq:
        return None
    return {"seq": entry.seq, "kind": entry.kind, "time": entry.time}


def _legal_basis(payload: dict[str, Any]) -> str | None:
    if isinstance(payload.get("legal_basis"), str):
        return str(payload["legal_basis"])
    match = _GRANT_REASON.search(str(payload.get("reason", "")))
    return match.group(1).strip() if match and payload.get("decision") == "granted" else None


def read_ledger(run_dir: Path) -> dict[str, Any] | None:
    """What the ledger records about the run, by entry kind; None without a readable ledger.

    Read even when verification failed, so the report can show what the entries claim, but
    the report marks every such number as coming from a ledger that did not verify.
    """
    path = Path(run_dir) / LEDGER_FILE
    if not path.is_file():
        return None
    facts: dict[str, Any] = {
        "run_started": None,
        "run_finished": None,
        "resumed": [],
        "consent": [],
        "attestations": [],
        "dropouts": [],
        "aggregated": [],
        "errors": [],
        "entries": 0,
    }
    try:
        with Ledger.open(path) as ledger:
            for entry in ledger.entries():
                facts["entries"] += 1
                _add(facts, entry.kind, entry.payload, entry.seq, entry.time)
    except _READ_ERRORS as err:
        facts["read_error"] = f"{type(err).__name__}: {err}"
    return facts


def _add(facts: dict[str, Any], kind: str, payload: dict[str, Any], seq: int, time: str) -> None:
    where = {"seq": seq, "time": time}
    if kind == RUN_STARTED and facts["run_started"] is None:
        facts["run_started"] = {**payload, **where}
    elif kind == RUN_RESUMED:
        facts["resumed"].append({**payload, **where})
    elif kind == RUN_FINISHED:
        facts["run_finished"] = {**payload, **where}
    elif kind == CONSENT_DECISION:
        facts["consent"].append(
            {
                "site": payload.get("site"),
                "round": payload.get("round"),
                "decision": payload.get("decision"),
                "reason": payload.get("reason"),
                "legal_basis": _legal_basis(payload),
                **where,
            }
        )
    elif kind == ATTESTATION:
        raw = payload.get("signed")
        signed: dict[str, Any] = raw if isinstance(raw, dict) else {}
        facts["attestations"].append({**signed, "site": payload.get("site"), **where})
    elif kind == DROPOUT:
        facts["dropouts"].append({k: payload.get(k) for k in ("site", "round", "reason")} | where)
    elif kind == ROUND_AGGREGATED:
        facts["aggregated"].append(
            {k: payload.get(k) for k in ("round", "sites", "aggregate_digest")} | where
        )
    elif kind == ERROR:
        facts["errors"].append(
            {k: payload.get(k) for k in ("component", "message", "round")} | where
        )
