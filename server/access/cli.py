"""CLI for access control: `fedsafe certs operator NAME` and `fedsafe server admin`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from fedsafe.common.crypto.certificates import certificate_fingerprint, pem_to_der
from fedsafe.common.crypto.pki import KeyFileError, issue_operator_certificate
from fedsafe.server.access.policy import ROLES

__all__ = [
    "add_operator_parser",
    "add_admin_parser",
    "run_operator_cert",
    "run_admin",
]


def run_operator_cert(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Issue an operator's client certificate and print what to add to server.yaml."""
    out = out or sys.stdout
    try:
        files = issue_operator_certificate(
            args.ca_dir, args.out, args.name, valid_days=args.valid_days
        )
    except (ValueError, TypeError, KeyFileError) as err:
        print(f"fedsafe certs operator: error: {err}", file=sys.stderr)
        return 2
    fingerprint = certificate_fingerprint(pem_to_der(files.cert.read_bytes()))
    print(f"operator key (give to {args.name} only): {files.key}", file=out)
    print(f"operator certificate: {files.cert}", file=out)
    print(f"fingerprint: {fingerprint}", file=out)
    roles = list(dict.fromkeys(args.role or []))
    if roles:
        print("add to server.yaml, then restart the admin endpoint:", file=out)
        print("access:\n  roles:", file=out)
        for role in roles:
            print(f'    {role}: ["{fingerprint}"]   # {args.name}', file=out)
    else:
        print(f"grant roles in server.yaml under access.roles.<{'|'.join(ROLES)}>", file=out)
    return 0


def add_operator_parser(certs_sub: Any) -> argparse.ArgumentParser:
    """`fedsafe certs operator NAME --ca-dir DIR --out DIR [--role ROLE ...]`."""
    parser: argparse.ArgumentParser = certs_sub.add_parser(
        "operator",
        help="issue an operator's mTLS client certificate for the admin endpoint",
        description="The certificate carries no roles: the coordinator grants them by "
        "fingerprint (or CN=NAME) in server.yaml's access.roles, so a role is withdrawn "
        "there without reissuing anything.",
    )
    parser.add_argument("name", help="operator name: the certificate's CN")
    parser.add_argument("--ca-dir", type=Path, required=True, help="folder with ca.key/ca.pem")
    parser.add_argument("--out", type=Path, required=True, help="folder for NAME.key/NAME.pem")
    parser.add_argument("--valid-days", type=int, default=365)
    parser.add_argument(
        "--role",
        action="append",
        choices=ROLES,
        help="print the server.yaml lines granting this role (repeatable)",
    )
    parser.set_defaults(func=run_operator_cert)
    return parser


class _Stop(Exception):
    """SIGTERM/SIGINT: stop serving."""


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def run_admin(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Serve the admin endpoint of server.yaml until SIGTERM/SIGINT (no SuperLink started)."""
    from fedsafe.server.access.deploy import access_of, flower_submit, start_admin_endpoint
    from fedsafe.server.deploy.config import load_server_config

    out = out or sys.stdout
    cfg = load_server_config(args.config)
    access = access_of(cfg)
    endpoint = start_admin_endpoint(cfg, submit=flower_submit(cfg))
    assert endpoint is not None
    host, port = endpoint.address
    print(f"admin endpoint on {host}:{port} (mTLS, CA {access.ca_cert})", file=out)
    print(f"decisions ledger: {access.ledger_dir}", file=out, flush=True)
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except _Stop:
        pass
    finally:
        endpoint.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def add_admin_parser(server_sub: Any) -> argparse.ArgumentParser:
    """`fedsafe server admin --config server.yaml`: the admin endpoint on its own."""
    parser: argparse.ArgumentParser = server_sub.add_parser(
        "admin",
        help="serve the mTLS admin endpoint (submit, consent, reports by role) from server.yaml",
    )
    parser.add_argument("--config", type=Path, required=True, help="server.yaml with access:")
    parser.set_defaults(func=run_admin)
    return parser
