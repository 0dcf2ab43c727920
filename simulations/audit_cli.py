"""`fedsafe audit verify|export|privacy`: check a ledger with keys you hold; audit a site."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedsafe.common.errors import LedgerError
from fedsafe.common.ledger import Ledger, export_csv, export_json
from fedsafe.common.ledger.audit import INTACT, TAMPERED, UNVERIFIABLE, Anchors, audit_ledger
from fedsafe.simulations.privacy_audit_cli import add_privacy_audit_parser

__all__ = ["add_audit_parser", "add_anchor_arguments", "anchors_from", "resolve_ledger"]


def resolve_ledger(path: Path) -> Path:
    """A run folder or its ledger.sqlite; a missing one is an error naming the path."""
    ledger = path / "ledger.sqlite" if path.is_dir() else path
    if not ledger.is_file():
        raise LedgerError(f"no ledger at {ledger}")
    return ledger


UNVERIFIABLE_EXIT = 3


def anchors_from(args: argparse.Namespace) -> Anchors:
    """The anchors named on the command line: --key, --keys, --witness, --fingerprint."""
    return Anchors(
        server_key=Path(args.key) if getattr(args, "key", None) else None,
        keys_dir=Path(args.keys) if getattr(args, "keys", None) else None,
        witness=Path(args.witness) if getattr(args, "witness", None) else None,
        fingerprint=getattr(args, "fingerprint", None) or None,
    )


def add_anchor_arguments(parser: argparse.ArgumentParser) -> None:
    """The options by which an auditor names keys it holds apart from the run folder."""
    parser.add_argument(
        "--key", help="the coordinator's server_signing.pub, from an independent copy"
    )
    parser.add_argument(
        "--keys", help="an independent folder with server_signing.pub and sites/<site>.pub"
    )
    parser.add_argument(
        "--witness", help="a signed-head witness file kept apart from the run folder"
    )
    parser.add_argument(
        "--fingerprint", help="the server key's fingerprint (hex), pinned from elsewhere"
    )


def _verify(args: argparse.Namespace) -> int:
    ledger = resolve_ledger(Path(args.ledger))
    outcome = audit_ledger(ledger, ledger.parent, anchors_from(args))
    result = outcome.result
    out: dict[str, object] = {
        "ok": outcome.status == INTACT,
        "status": outcome.status,
        "ledger": str(ledger),
        "message": outcome.message,
        "checked_with": outcome.checked_with,
    }
    if outcome.status == TAMPERED:
        out |= {"first_bad_entry": outcome.seq, "reason": outcome.reason, "detail": outcome.detail}
    if result is not None:
        out |= {k: v for k, v in vars(result).items() if k != "server_keys"}
    if args.json:
        print(json.dumps(out))
    elif outcome.status == TAMPERED:
        print(f"LEDGER DOES NOT VERIFY: {outcome.message}")
    elif outcome.status == UNVERIFIABLE:
        print(f"ledger UNVERIFIABLE: {outcome.message}")
    else:
        assert result is not None
        print(
            f"ledger OK: {result.entries_checked} entries, head {result.last_seq} "
            f"{result.last_hash[:16]}..., {result.signed_heads} signed heads, "
            f"{result.attestations_checked} site attestations verified"
        )
    return {INTACT: 0, TAMPERED: 1}.get(outcome.status, UNVERIFIABLE_EXIT)


def _export(args: argparse.Namespace) -> int:
    ledger = Ledger.open(resolve_ledger(Path(args.ledger)))
    try:
        out = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout  # noqa: SIM115
        try:
            (export_json if args.format == "json" else export_csv)(ledger, out)
        finally:
            if args.out:
                out.close()
    finally:
        ledger.close()
    return 0


def add_audit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser(
        "audit", help="verify or export a run's ledger; audit a site's privacy empirically"
    )
    asub = audit.add_subparsers(dest="audit_command", required=True)
    verify = asub.add_parser(
        "verify",
        help="recompute the chain and every signature against keys you hold",
        description=(
            "Exit 0: intact, checked against an anchor you gave (--key, --keys, --witness or "
            "--fingerprint). Exit 1: tampered (first bad entry named), including entries after "
            "the last signed head, a head signed by another key, and a key or witness the run "
            f"had that is gone. Exit {UNVERIFIABLE_EXIT}: unverifiable, consistent only with keys "
            "found in the run folder, which a forger can replace."
        ),
    )
    verify.add_argument("ledger", help="ledger.sqlite or the run folder holding it")
    add_anchor_arguments(verify)
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=_verify)
    export = asub.add_parser("export", help="export every entry as JSON or CSV")
    export.add_argument("ledger")
    export.add_argument("--format", choices=("json", "csv"), default="json")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.set_defaults(func=_export)
    add_privacy_audit_parser(asub)
