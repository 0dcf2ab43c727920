"""Key and certificate files for gRPC TLS, Flower SuperNode auth, attestations and sealing."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fedsafe.common.crypto import _primitives as _p
from fedsafe.common.crypto._keyfiles import (
    KeyExistsError,
    KeyFileError,
    ensure_directory,
    read_key_file,
    refuse_existing,
    replace_file,
    write_new_private,
)

__all__ = [
    "KeyFileError",
    "KeyExistsError",
    "CaFiles",
    "ServerCertFiles",
    "OperatorCertFiles",
    "SiteKeyFiles",
    "init_ca",
    "issue_server_certificate",
    "issue_operator_certificate",
    "init_site_keys",
    "init_server_sealing_key",
    "init_server_signing_key",
    "load_signing_private_key",
    "load_signing_public_key",
    "load_sealing_private_key",
    "load_sealing_public_key",
    "load_auth_public_key",
]

_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class CaFiles:
    """The CA's private key (keep offline) and certificate (give to every SuperNode)."""

    key: Path
    cert: Path


@dataclass(frozen=True)
class ServerCertFiles:
    """What the SuperLink needs: --ssl-keyfile, --ssl-certfile and --ssl-ca-certfile."""

    key: Path
    cert: Path
    ca_cert: Path


@dataclass(frozen=True)
class OperatorCertFiles:
    """An operator's mTLS client key (0600) and certificate, and the CA that issued them."""

    name: str
    key: Path
    cert: Path
    ca_cert: Path


@dataclass(frozen=True)
class SiteKeyFiles:
    """A site's Flower node-auth key pair (OpenSSH P-384) and Ed25519 attestation key pair."""

    site: str
    auth_key: Path
    auth_pub: Path
    signing_key: Path
    signing_pub: Path


def _check_valid_days(valid_days: int) -> None:
    if isinstance(valid_days, bool) or not isinstance(valid_days, int):
        raise TypeError(f"valid_days must be int, got {type(valid_days).__name__}")
    if valid_days < 1:
        raise ValueError(f"valid_days must be >= 1, got {valid_days}")


def _check_hosts(hosts: list[str]) -> None:
    if not isinstance(hosts, list) or not all(isinstance(host, str) for host in hosts):
        raise TypeError("hosts must be a list of str (DNS names or IP addresses)")
    if not hosts or not all(host and host.isascii() and host.strip() == host for host in hosts):
        raise ValueError(f"hosts must be non-empty ASCII names or IP addresses, got {hosts!r}")


def init_ca(directory: Path, name: str, *, valid_days: int = 3650) -> CaFiles:
    """Create ``ca.key`` (0600) and self-signed ``ca.pem``; never replaces an existing CA key."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    _check_valid_days(valid_days)
    directory = ensure_directory(directory)
    files = CaFiles(key=directory / "ca.key", cert=directory / "ca.pem")
    refuse_existing(files.key)
    key_pem, cert_pem = _p.x509_create_ca(name, valid_days=valid_days)
    write_new_private(files.key, key_pem)
    replace_file(files.cert, cert_pem, private=False)
    return files


def issue_server_certificate(
    ca_dir: Path, out_dir: Path, *, hosts: list[str], valid_days: int = 825
) -> ServerCertFiles:
    """Issue the SuperLink's TLS key and certificate (DNS and IP SANs) from the CA in ``ca_dir``.

    Calling it again renews: a new ``server.key`` replaces the old one atomically. Site keys
    are separate files and are never touched.
    """
    _check_hosts(hosts)
    _check_valid_days(valid_days)
    ca_key, ca_cert, ca = _read_ca(ca_dir)
    key_pem, cert_pem = _p.x509_issue_server(ca_key, ca_cert, hosts=hosts, valid_days=valid_days)
    out_dir = ensure_directory(out_dir)
    files = ServerCertFiles(
        key=out_dir / "server.key", cert=out_dir / "server.pem", ca_cert=ca.cert
    )
    replace_file(files.key, key_pem, private=True)
    replace_file(files.cert, cert_pem, private=False)
    return files


def issue_operator_certificate(
    ca_dir: Path,
    out_dir: Path,
    name: str,
    *,
    valid_days: int = 365,
    now: datetime | None = None,
) -> OperatorCertFiles:
    """Issue ``<name>.key``/``<name>.pem``: a clientAuth certificate (CN=name) from the CA.

    The certificate carries no roles: the coordinator's access policy maps its fingerprint
    or name to roles, so withdrawing a role is an edit there, not a reissue. Issuing again
    renews (a new key and fingerprint replace the old files).
    """
    if not isinstance(name, str) or not _SITE_NAME.fullmatch(name):
        raise ValueError(f"operator name must match {_SITE_NAME.pattern}, got {name!r}")
    _check_valid_days(valid_days)
    ca_key, ca_cert, ca = _read_ca(ca_dir)
    key_pem, cert_pem = _p.x509_issue_client(
        ca_key, ca_cert, name=name, valid_days=valid_days, now=now
    )
    out_dir = ensure_directory(out_dir)
    files = OperatorCertFiles(
        name=name, key=out_dir / f"{name}.key", cert=out_dir / f"{name}.pem", ca_cert=ca.cert
    )
    replace_file(files.key, key_pem, private=True)
    replace_file(files.cert, cert_pem, private=False)
    return files


def _read_ca(ca_dir: Path) -> tuple[bytes, bytes, CaFiles]:
    ca_dir = Path(ca_dir).expanduser()
    ca = CaFiles(key=ca_dir / "ca.key", cert=ca_dir / "ca.pem")
    ca_key = _read_checked(ca.key, lambda data: _p.ec_check_private(data, "CA key"))
    ca_cert = _read_checked(ca.cert, _p.x509_check_ca_cert)
    try:
        _p.x509_check_ca(ca_key, ca_cert)
    except ValueError:
        raise KeyFileError(ca.key, f"does not match the CA certificate {ca.cert}") from None
    return ca_key, ca_cert, ca


def init_site_keys(directory: Path, site: str) -> SiteKeyFiles:
    """Create a site's ``auth.key``/``.pub`` (Flower SuperNode auth) and ``signing.key``/``.pub``.

    The auth key is an OpenSSH P-384 key, what ``flower-supernode --auth-supernode-private-key``
    loads and ``flwr supernode register`` enrolls. Existing private keys are never overwritten.
    """
    if not isinstance(site, str) or not _SITE_NAME.fullmatch(site):
        raise ValueError(f"site must match {_SITE_NAME.pattern}, got {site!r}")
    directory = ensure_directory(directory)
    files = SiteKeyFiles(
        site=site,
        auth_key=directory / "auth.key",
        auth_pub=directory / "auth.pub",
        signing_key=directory / "signing.key",
        signing_pub=directory / "signing.pub",
    )
    refuse_existing(files.auth_key, files.signing_key)
    auth_private, auth_public = _p.ecdsa_openssh_generate(comment=f"fedsafe-site:{site}")
    signing_private, signing_public = _p.ed25519_generate()
    write_new_private(files.auth_key, auth_private)
    replace_file(files.auth_pub, auth_public, private=False)
    write_new_private(files.signing_key, signing_private)
    replace_file(files.signing_pub, signing_public, private=False)
    return files


def _init_pair(
    directory: Path, stem: str, generate: Callable[[], tuple[bytes, bytes]]
) -> tuple[Path, Path]:
    directory = ensure_directory(directory)
    private_path, public_path = directory / f"{stem}.key", directory / f"{stem}.pub"
    refuse_existing(private_path)
    private_pem, public_pem = generate()
    write_new_private(private_path, private_pem)
    replace_file(public_path, public_pem, private=False)
    return private_path, public_path


def init_server_sealing_key(directory: Path) -> tuple[Path, Path]:
    """Create the ServerApp's X25519 ``sealing.key`` (0600) / ``sealing.pub`` that sites seal to."""
    return _init_pair(directory, "sealing", _p.x25519_generate)


def init_server_signing_key(directory: Path) -> tuple[Path, Path]:
    """Create the ServerApp's Ed25519 ``server_signing.key`` (0600) / ``.pub`` for ledger heads."""
    return _init_pair(directory, "server_signing", _p.ed25519_generate)


def _read_checked(path: Path, check: Callable[[bytes], object]) -> bytes:
    path = Path(path).expanduser()
    data = read_key_file(path)
    try:
        check(data)
    except (ValueError, TypeError) as err:
        raise KeyFileError(path, f"malformed: {err}") from None
    return data


def load_signing_private_key(path: Path) -> bytes:
    """Read an Ed25519 private PEM; KeyFileError names the file when missing or bad."""
    return _read_checked(path, lambda data: _p.ed25519_check_private(data, "content"))


def load_signing_public_key(path: Path) -> bytes:
    """Read an Ed25519 public PEM; KeyFileError names the file when missing or bad."""
    return _read_checked(path, _p.ed25519_public_raw)


def load_sealing_private_key(path: Path) -> bytes:
    """Read an X25519 private PEM; KeyFileError names the file when missing or bad."""
    return _read_checked(path, lambda data: _p.x25519_check_private(data, "content"))


def load_sealing_public_key(path: Path) -> bytes:
    """Read an X25519 public PEM; KeyFileError names the file when missing or bad."""
    return _read_checked(path, lambda data: _p.x25519_public_raw(data, "content"))


def load_auth_public_key(path: Path) -> bytes:
    """Read a SuperNode's OpenSSH NIST EC public key line, as ``flwr supernode register`` wants."""
    return _read_checked(path, _p.ecdsa_openssh_check_public)
