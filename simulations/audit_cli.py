"""`fedsafe audit verify|export`: anyone holding the ledger and the public keys can check it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.errors import LedgerError
from common.ledger import Ledger, export_csv, export_json, verify_ledger
from common.ledger.verify import LedgerTamperedError, load_site_keys

__all__ = ["add_audit_parser", "resolve_ledger"]


def resolve_ledger(path: Path) -> Path:
    """A run folder or its ledger.sqlite; a missing one is an error naming the path."""
    ledger = path / "ledger.sqlite" if path.is_dir() else path
    if not ledger.is_file():
        raise LedgerError(f"no ledger at {ledger}")
    return ledger


def _verify(args: argparse.Namespace) -> int:
    ledger = resolve_ledger(Path(args.ledger))
    keys = Path(args.keys) if args.keys else ledger.parent / "keys"
    server_pub = keys / "server_signing.pub"
    site_dir = keys / "sites"
    witness = Path(args.witness) if args.witness else ledger.parent / "ledger.witness.json"
    try:
        result = verify_ledger(
            ledger,
            server_public_pem=server_pub.read_bytes() if server_pub.exists() else None,
            site_keys=load_site_keys(site_dir) if site_dir.is_dir() else None,
            witness=witness if witness.exists() else None,
        )
    except LedgerTamperedError as err:
        out = {
            "ok": False,
            "ledger": str(ledger),
            "first_bad_entry": err.seq,
            "reason": err.reason,
            "detail": err.detail,
        }
        print(json.dumps(out) if args.json else f"LEDGER DOES NOT VERIFY: {err}", file=sys.stdout)
        return 1
    checked = {
        "server key": server_pub.exists(),
        "site keys": site_dir.is_dir(),
        "witness": witness.exists(),
    }
    out = {"ok": True, "ledger": str(ledger), **vars(result), "checked_with": checked}
    if args.json:
        print(json.dumps(out))
    else:
        missing = [k for k, v in checked.items() if not v]
        print(
            f"ledger OK: {result.entries_checked} entries, head {result.last_seq} {result.last_hash[:16]}..., "
            f"{result.signed_heads} signed heads, {result.attestations_checked} site attestations verified"
        )
        if missing:
            print(f"warning: not checked without {', '.join(missing)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    ledger = Ledger.open(resolve_ledger(Path(args.ledger)))
    try:
        out = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout
        try:
            (export_json if args.format == "json" else export_csv)(ledger, out)
        finally:
            if args.out:
                out.close()
    finally:
        ledger.close()
    return 0


def add_audit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="verify or export a run's tamper-evident ledger")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    verify = asub.add_parser(
        "verify", help="recompute the chain and every signature; exit 1 on any change"
    )
    verify.add_argument("ledger", help="ledger.sqlite or the run folder holding it")
    verify.add_argument(
        "--keys",
        help="folder with server_signing.pub and sites/<site>.pub (default: beside the ledger)",
    )
    verify.add_argument(
        "--witness", help="the signed-head witness file (default: beside the ledger)"
    )
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=_verify)
    export = asub.add_parser("export", help="export every entry as JSON or CSV")
    export.add_argument("ledger")
    export.add_argument("--format", choices=("json", "csv"), default="json")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.set_defaults(func=_export)
