"""`fedsafe consent grant|withdraw|list`: site-signed consent in the coordinator's registry."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from fedsafe.common.consent import (
    ConsentRecord,
    new_record_id,
    parse_time,
    sign_consent,
    sign_withdrawal,
    withdrawal_to_dict,
)
from fedsafe.common.crypto.pki import load_signing_private_key, load_signing_public_key
from fedsafe.common.errors import ConfigError
from fedsafe.common.ledger.records import format_time
from fedsafe.server.access.options import add_admin_arguments, admin_client
from fedsafe.server.consent.registry import ConsentEntry, ConsentRegistry

__all__ = [
    "add_consent_parser",
    "run_grant",
    "run_withdraw",
    "run_list",
    "entry_to_dict",
    "format_entries",
]

_SIGNS_LOCALLY = (
    "In real deployments the site runs this on its own machine (its private key never leaves "
    "the site) and ships the registry row, or runs it against a registry it can reach; the "
    "coordinator verifies the signature before storing anything."
)
_COLUMNS = ("record", "site", "dataset", "purposes", "jurisdiction", "valid", "status")


def _time_arg(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, field=option)
    except ValueError:
        raise ConfigError(
            option, value, "ISO-8601 time with a zone, e.g. 2025-01-01T00:00:00Z"
        ) from None


def _pub_path(args: argparse.Namespace) -> Path:
    """``--site-pub``, or the ``.pub`` next to ``--site-key`` (signing.key -> signing.pub)."""
    if args.site_pub:
        return Path(args.site_pub).expanduser()
    return Path(args.site_key).expanduser().with_suffix(".pub")


def _registry(args: argparse.Namespace) -> Path:
    """--registry, required unless the command goes through --admin."""
    if args.registry is None:
        raise ConfigError("--registry", None, "a registry path or URL, or --admin HOST:PORT")
    return Path(args.registry)


def _keys(args: argparse.Namespace) -> tuple[bytes, bytes]:
    """The site's key pair, read with errors that name the missing or malformed file."""
    return load_signing_private_key(Path(args.site_key)), load_signing_public_key(_pub_path(args))


def run_grant(
    args: argparse.Namespace, *, out: TextIO | None = None, now: datetime | None = None
) -> int:
    """Sign a consent record with the site's key and store it; prints the record id."""
    out = out or sys.stdout
    now = now or datetime.now(UTC)
    private_pem, public_pem = _keys(args)
    try:
        record = ConsentRecord(
            site=args.site,
            dataset=args.dataset,
            purposes=tuple(args.purpose),
            legal_basis=args.legal_basis,
            data_categories=tuple(args.category),
            jurisdiction=args.jurisdiction,
            valid_from=_time_arg("--valid-from", args.valid_from) or now,
            valid_until=_time_arg("--valid-until", args.valid_until),
            granted_at=now,
            record_id=args.record_id or new_record_id(),
        )
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError("consent grant", vars(args).get("site"), str(err)) from None
    try:
        signed = sign_consent(record, private_pem, site_public_pem=public_pem)
    except ValueError:
        raise ConfigError(
            "--site-pub",
            str(_pub_path(args)),
            "the public key of --site-key (this one does not match it)",
        ) from None
    client = admin_client(args)
    if client is not None:  # the coordinator checks the role and the site's enrolled key
        client.consent_grant(signed.to_dict())
    else:
        with ConsentRegistry.open(_registry(args)) as registry:
            registry.grant(signed, public_pem)
    print(f"granted {record.record_id} for site '{record.site}' on '{record.dataset}'", file=out)
    return 0


def run_withdraw(
    args: argparse.Namespace, *, out: TextIO | None = None, now: datetime | None = None
) -> int:
    """Sign a withdrawal of ``--record`` with the site's key and store it."""
    out = out or sys.stdout
    at = _time_arg("--at", args.at) or now or datetime.now(UTC)
    private_pem, public_pem = _keys(args)
    withdrawal = sign_withdrawal(
        record_id=args.record, site=args.site, withdrawn_at=at, site_private_pem=private_pem
    )
    client = admin_client(args)
    if client is not None:
        client.consent_withdraw(withdrawal_to_dict(withdrawal))
    else:
        with ConsentRegistry.open(_registry(args)) as registry:
            registry.withdraw(withdrawal, public_pem)
    print(f"withdrew {args.record} for site '{args.site}' at {format_time(at)}", file=out)
    return 0


def entry_to_dict(entry: ConsentEntry) -> dict[str, Any]:
    """JSON form of a stored entry: the signed record plus the withdrawal, if any."""
    data = entry.signed.to_dict()
    withdrawal = entry.withdrawal
    data["withdrawal"] = (
        None
        if withdrawal is None
        else {
            "withdrawn_at": format_time(withdrawal.withdrawn_at),
            "signature": withdrawal.signature.hex(),
        }
    )
    return data


def format_entries(entries: list[ConsentEntry]) -> str:
    """A fixed-width table, one line per stored record."""
    rows = []
    for entry in entries:
        rec = entry.signed.record
        until = "open" if rec.valid_until is None else format_time(rec.valid_until)
        status = (
            "active"
            if entry.withdrawal is None
            else f"withdrawn {format_time(entry.withdrawal.withdrawn_at)}"
        )
        rows.append(
            (
                rec.record_id,
                rec.site,
                rec.dataset,
                ",".join(rec.purposes),
                rec.jurisdiction,
                f"{format_time(rec.valid_from)}..{until}",
                status,
            )
        )
    if not rows:
        return "(no consent on record)"
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def run_list(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Print stored records as stored (signatures are checked at decision time, with keys)."""
    out = out or sys.stdout
    client = admin_client(args)
    if client is not None:
        records = client.consent_list(args.site)
        if args.json:
            print(json.dumps(records, indent=2), file=out)
        else:
            for record in records:
                status = "active" if record.get("withdrawal") is None else "withdrawn"
                rec = record["record"]
                print(f"{rec['record_id']}  {rec['site']}  {rec['dataset']}  {status}", file=out)
        return 0
    with ConsentRegistry.open(_registry(args), create=False) as registry:
        entries = registry.records(args.site)
    if args.json:
        print(json.dumps([entry_to_dict(e) for e in entries], indent=2), file=out)
    else:
        print(format_entries(entries), file=out)
    return 0


def _site_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", type=Path, default=None, help=_REGISTRY_HELP)
    add_admin_arguments(parser)
    parser.add_argument("--site", required=True, help="site name, as in its key files")
    parser.add_argument(
        "--site-key",
        type=Path,
        required=True,
        help="the site's Ed25519 private signing key (signing.key PEM)",
    )
    parser.add_argument(
        "--site-pub",
        type=Path,
        default=None,
        help="the site's public signing key (default: the .pub next to --site-key, signing.pub)",
    )


_REGISTRY_HELP = "consent registry: SQLite file, coordinator folder (uses consent.db) or URL"


def add_consent_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `consent grant|withdraw|list` to a subparsers object; each sets `func`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "consent",
        help="grant, withdraw and list site-signed consent records",
        description="Manage the coordinator's consent registry. " + _SIGNS_LOCALLY,
    )
    commands = parser.add_subparsers(dest="consent_command", required=True)

    grant = commands.add_parser(
        "grant",
        help="sign a consent record with the site's key and store it",
        description="Sign and store one consent record. " + _SIGNS_LOCALLY,
    )
    _site_key_options(grant)
    grant.add_argument("--dataset", required=True, help="dataset the consent covers")
    grant.add_argument(
        "--purpose", action="append", required=True, help="purpose covered (repeatable)"
    )
    grant.add_argument(
        "--legal-basis",
        required=True,
        help="legal basis, e.g. 'GDPR Art. 6(1)(e) + 9(2)(j)' or 'HIPAA limited data set'",
    )
    grant.add_argument(
        "--category", action="append", required=True, help="data category (repeatable)"
    )
    grant.add_argument("--jurisdiction", required=True, help="e.g. EU, US, CH")
    grant.add_argument("--valid-from", default=None, help="ISO-8601 with zone (default: now)")
    grant.add_argument("--valid-until", default=None, help="ISO-8601 with zone (default: open)")
    grant.add_argument("--record-id", default=None, help="record id (default: random c-...)")
    grant.set_defaults(func=run_grant)

    withdraw = commands.add_parser(
        "withdraw",
        help="sign a withdrawal of a consent record with the site's key and store it",
        description="Withdraw one consent record; only the site's key can sign this. "
        + _SIGNS_LOCALLY,
    )
    _site_key_options(withdraw)
    withdraw.add_argument("--record", required=True, help="record id to withdraw")
    withdraw.add_argument("--at", default=None, help="ISO-8601 with zone (default: now)")
    withdraw.set_defaults(func=run_withdraw)

    listing = commands.add_parser("list", help="list stored consent records")
    listing.add_argument("--registry", type=Path, default=None, help=_REGISTRY_HELP)
    add_admin_arguments(listing)
    listing.add_argument("--site", default=None, help="only this site's records")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=run_list)
    return parser
