"""`fedsafe certs init|server`: the coordinator's CA and the SuperLink's TLS certificate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from fedsafe.common.crypto.pki import init_ca, issue_server_certificate
from fedsafe.server.access.cli import add_operator_parser

__all__ = ["add_certs_parser", "run_certs_init", "run_certs_server"]


def run_certs_init(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Create the CA once; its key stays with the coordinator (offline if possible)."""
    out = out or sys.stdout
    try:
        files = init_ca(args.dir, args.name, valid_days=args.valid_days)
    except (ValueError, TypeError) as err:
        print(f"fedsafe certs init: error: {err}", file=sys.stderr)
        return 2
    print(f"CA key (keep private, offline): {files.key}", file=out)
    print(f"CA certificate (send to every site as ca.pem): {files.cert}", file=out)
    return 0


def run_certs_server(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Issue (or renew: same command again) the SuperLink's key and certificate."""
    out = out or sys.stdout
    try:
        files = issue_server_certificate(
            args.ca_dir, args.out, hosts=list(args.host), valid_days=args.valid_days
        )
    except (ValueError, TypeError) as err:  # a bad host or a validity the CA cannot cover
        print(f"fedsafe certs server: error: {err}", file=sys.stderr)
        return 2
    print(f"SuperLink TLS key: {files.key}", file=out)
    print(f"SuperLink TLS certificate: {files.cert} (names: {', '.join(args.host)})", file=out)
    print(f"CA certificate: {files.ca_cert}", file=out)
    print("Restart the SuperLink to serve a renewed certificate.", file=out)
    return 0


def add_certs_parser(sub: Any) -> argparse.ArgumentParser:
    """`fedsafe certs init --dir DIR` and `fedsafe certs server --ca-dir --out --host ...`."""
    certs: argparse.ArgumentParser = sub.add_parser(
        "certs",
        help="coordinator TLS: create the CA, issue the SuperLink and operator certificates",
    )
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_sub.add_parser("init", help="create ca.key (0600) and ca.pem in DIR")
    init.add_argument("--dir", type=Path, required=True, help="folder for the CA files")
    init.add_argument("--name", default="fedsafe coordinator CA", help="CA common name")
    init.add_argument("--valid-days", type=int, default=3650)
    init.set_defaults(func=run_certs_init)
    server = certs_sub.add_parser(
        "server", help="issue the SuperLink's server.key/server.pem (run again to renew)"
    )
    server.add_argument("--ca-dir", type=Path, required=True, help="folder with ca.key/ca.pem")
    server.add_argument("--out", type=Path, required=True, help="folder for server.key/.pem")
    server.add_argument(
        "--host",
        action="append",
        required=True,
        help="DNS name or IP address sites use to reach the SuperLink (repeat for more)",
    )
    server.add_argument("--valid-days", type=int, default=825)
    server.set_defaults(func=run_certs_server)
    add_operator_parser(certs_sub)
    return certs
