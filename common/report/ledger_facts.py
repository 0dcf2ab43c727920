"""The ledger side of a run report: verified when the report is made, then read entry by entry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc

from fedsafe.common.errors import FedsafeError
from fedsafe.common.ledger import (
    ATTESTATION,
    CONSENT_DECISION,
    DROPOUT,
    ERROR,
    ROUND_AGGREGATED,
    RUN_FINISHED,
    RUN_RESUMED,
    RUN_STARTED,
    Ledger,
)
from fedsafe.common.ledger.audit import TAMPERED, Anchors, audit_ledger

__all__ = ["LEDGER_FILE", "NO_LEDGER", "check_ledger", "read_ledger"]

LEDGER_FILE = "ledger.sqlite"
WITNESS_FILE = "ledger.witness.json"
SERVER_KEY = Path("keys") / "server_signing.pub"
NO_LEDGER = "no ledger in this run folder"
_READ_ERRORS = (FedsafeError, ValueError, TypeError, OSError, sa_exc.SQLAlchemyError)
# The server's "granted" reason ends "for purpose '<p>' (<legal basis>; <jurisdiction>; <until>)";
# a legal basis may hold parentheses ("Art. 6(1)(e)"), the last two parts hold no semicolon.
_GRANT_REASON = re.compile(r"for purpose '.*?' \((.+); ([^;]+); ([^;]+)\)\s*$")


def _ledger_expected(run_dir: Path) -> bool:
    """Whether the folder shows the run kept a ledger (summary, key or witness say so)."""
    if (run_dir / WITNESS_FILE).exists() or (run_dir / SERVER_KEY).exists():
        return True
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and isinstance(summary.get("ledger"), dict)


def check_ledger(run_dir: Path, anchors: Anchors | None = None) -> dict[str, Any]:
    """Verify RUN_DIR/ledger.sqlite now, against the auditor's ``anchors`` where given.

    Never copied from a file: a result written at run time could itself have been edited.
    ``status`` is "intact" (checked against an independent key, fingerprint or witness),
    "tampered" (first bad entry named), "unverifiable" (consistent only with keys found in
    the folder, or unreadable), "missing" (the run kept a ledger that is gone) or "absent".
    """
    run_dir = Path(run_dir)
    path = run_dir / LEDGER_FILE
    if not path.is_file():
        if _ledger_expected(run_dir):
            return {
                "present": False,
                "status": "missing",
                "message": f"the run kept a ledger ({LEDGER_FILE}), but it is gone",
            }
        return {"present": False, "status": "absent", "message": NO_LEDGER}
    base: dict[str, Any] = {"present": True, "path": LEDGER_FILE}
    try:
        outcome = audit_ledger(path, run_dir, anchors or Anchors())
    except _READ_ERRORS as err:
        return {
            **base,
            "checked_with": {},
            "status": "unverifiable",
            "consistent": False,
            "message": f"{type(err).__name__}: {err}",
        }
    base["checked_with"] = outcome.checked_with
    if outcome.status == TAMPERED:
        assert outcome.seq is not None
        return {
            **base,
            "status": "tampered",
            "first_bad_seq": outcome.seq,
            "reason": outcome.reason,
            "detail": outcome.detail,
            "message": outcome.message,
            "first_bad_entry": _entry_brief(path, outcome.seq),
        }
    result = outcome.result
    assert result is not None
    return {
        **base,
        "status": outcome.status,
        "consistent": True,
        "message": outcome.message,
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
            {k: payload.get(k) for k in ("round", "sites", "aggregate_digest", "client_level")}
            | where
        )
    elif kind == ERROR:
        facts["errors"].append(
            {k: payload.get(k) for k in ("component", "message", "round")} | where
        )
