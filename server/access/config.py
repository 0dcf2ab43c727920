"""The `access:` section of server.yaml: the admin endpoint's address, TLS files and role policy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsafe.common.errors import ConfigError
from fedsafe.server.access.policy import AccessPolicy, parse_policy

__all__ = ["AccessConfig", "parse_access", "ACCESS_KEYS", "ACCESS_YAML_EXAMPLE"]

ACCESS_KEYS = ("listen", "ca_cert", "cert", "key", "roles")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")

ACCESS_YAML_EXAMPLE = """\
access:                          # mTLS admin endpoint: submit, consent and reports by role
  listen: 127.0.0.1:9094         # operators connect here with a federation-CA client certificate
  # ca_cert: certs/ca/ca.pem     # default tls.ca_cert: the only CA whose operators get in
  # cert: certs/server/server.pem  # default tls.cert/tls.key: the endpoint's own certificate
  # key: certs/server/server.key
  roles:                         # `fedsafe certs operator NAME` prints the fingerprint to pin
    submit: ["sha256:<fingerprint of alice.pem>"]
    consent: ["CN=dpo-hospital-a"]
    report: ["CN=auditor", "sha256:<fingerprint of alice.pem>"]
"""


@dataclass(frozen=True)
class AccessConfig:
    """A checked ``access:`` section with absolute paths; ``ledger_dir`` is where decisions go."""

    listen: str
    ca_cert: Path
    cert: Path
    key: Path
    policy: AccessPolicy
    ledger_dir: Path

    @property
    def host(self) -> str:
        """The bind host (brackets removed from an IPv6 literal)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The bind port; 0 lets the OS choose (tests)."""
        return int(self.listen.rpartition(":")[2])


def _listen(value: object, source: str) -> str:
    allowed = "'host:port' (IP address or DNS name, port 0..65535)"
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError("access.listen", value, allowed, source=source)
    host, _, port = value.rpartition(":")
    if not _HOST.fullmatch(host) or not port.isdigit() or int(port) > 65535:
        raise ConfigError("access.listen", value, allowed, source=source)
    return value


def _path(value: object, key: str, base: Path, source: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "a path (relative to the server.yaml folder)", source=source)
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.is_file():
        raise ConfigError(key, value, f"an existing file ({path} not found)", source=source)
    return path


def parse_access(
    value: object, *, base: Path, source: str, workdir: Path, tls: dict[str, Path]
) -> AccessConfig | None:
    """Check server.yaml's ``access:`` mapping; None when absent (no admin endpoint).

    The CA defaults to the SuperLink's ``tls.ca_cert``: the federation CA given in the
    coordinator's own config, never one a client sends or one found beside the data.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(
            "access", value, f"a mapping with keys {list(ACCESS_KEYS)}", source=source
        )
    data: dict[str, Any] = value
    for key in data:
        if key not in ACCESS_KEYS:
            raise ConfigError(
                f"access.{key}", data[key], f"one of {list(ACCESS_KEYS)}", source=source
            )
    if "listen" not in data:
        raise ConfigError("access.listen", None, "'host:port' of the admin endpoint", source=source)
    files = {
        key: _path(data[key], f"access.{key}", base, source) if key in data else tls[key]
        for key in ("ca_cert", "cert", "key")
    }
    return AccessConfig(
        listen=_listen(data["listen"], source),
        policy=parse_policy(data.get("roles"), source=source),
        ledger_dir=workdir / "access",
        **files,
    )
