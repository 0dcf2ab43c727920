"""The --admin options by which `server submit`, `consent ...` and `report` act remotely."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsafe.common.errors import ConfigError
from fedsafe.server.access.client import AdminClient

__all__ = ["add_admin_arguments", "admin_client"]


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    """--admin HOST:PORT with --ca-cert/--cert/--cert-key: act through the admin endpoint."""
    group = parser.add_argument_group("through the coordinator's admin endpoint (mTLS)")
    group.add_argument("--admin", metavar="HOST:PORT", default=None, help="admin endpoint")
    group.add_argument("--ca-cert", type=Path, default=None, help="the federation CA (ca.pem)")
    group.add_argument("--cert", type=Path, default=None, help="your operator certificate")
    group.add_argument("--cert-key", type=Path, default=None, help="your operator key")


def admin_client(args: argparse.Namespace) -> AdminClient | None:
    """The client the --admin options describe; None without --admin."""
    address = getattr(args, "admin", None)
    files: dict[str, Path | None] = {
        k: getattr(args, k, None) for k in ("ca_cert", "cert", "cert_key")
    }
    if address is None:
        given = [f"--{k.replace('_', '-')}" for k, v in files.items() if v is not None]
        if given:
            raise ConfigError(given[0], "given", "only together with --admin HOST:PORT")
        return None
    missing = [f"--{k.replace('_', '-')}" for k, v in files.items() if v is None]
    if missing:
        raise ConfigError("--admin", address, f"also {', '.join(missing)} (mTLS needs all three)")
    ca_cert, cert, key = (Path(str(files[k])) for k in ("ca_cert", "cert", "cert_key"))
    return AdminClient.from_files(
        address,
        ca_cert=ca_cert,
        cert=cert,
        key=key,
    )
