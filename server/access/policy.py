"""Who holds which coordinator role: certificate fingerprints or common names per role."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fedsafe.common.crypto.certificates import CertificateIdentity
from fedsafe.common.errors import ConfigError
from fedsafe.server.access.errors import AccessDeniedError

__all__ = ["ROLES", "SUBMIT", "CONSENT", "REPORT", "AccessPolicy", "parse_policy"]

SUBMIT, CONSENT, REPORT = "submit", "consent", "report"
ROLES: tuple[str, ...] = (SUBMIT, CONSENT, REPORT)
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_COMMON_NAME = re.compile(r"CN=([A-Za-z0-9][A-Za-z0-9._-]{0,63})")
_ALLOWED = "'sha256:<64 hex>' (a certificate fingerprint) or 'CN=<name>' (an operator name)"


@dataclass(frozen=True)
class AccessPolicy:
    """Role -> holders. A holder is a pinned fingerprint (one certificate) or ``CN=name``
    (any unexpired certificate the federation CA issued under that name, e.g. after renewal).
    A role nobody holds is closed: the default is to refuse."""

    holders: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def roles_of(self, identity: CertificateIdentity) -> tuple[str, ...]:
        """The roles ``identity`` holds, in ROLES order."""
        keys = {identity.fingerprint}
        if identity.common_name is not None:
            keys.add(f"CN={identity.common_name}")
        return tuple(role for role in ROLES if keys & self.holders.get(role, frozenset()))

    def require(self, identity: CertificateIdentity, role: str) -> None:
        """Raise AccessDeniedError naming the certificate and the role unless it holds ``role``."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if role in self.roles_of(identity):
            return
        raise AccessDeniedError(
            f"access refused: certificate {identity.describe()} does not hold role '{role}'; "
            f"the coordinator grants it under access.roles.{role} in server.yaml "
            f"(by fingerprint {identity.fingerprint} or CN=<name>)",
            subject=identity.subject,
            role=role,
        )


def _holder(value: object, key: str, source: str) -> str:
    if isinstance(value, str):
        text = value.strip()
        if _FINGERPRINT.fullmatch(text.lower()):
            return text.lower()
        if _COMMON_NAME.fullmatch(text):
            return text
    raise ConfigError(key, value, _ALLOWED, source=source)


def parse_policy(value: object, *, source: str, key: str = "access.roles") -> AccessPolicy:
    """Check ``{role: [holder, ...]}`` from server.yaml; unknown roles and bad holders raise."""
    if value is None:
        return AccessPolicy({})
    if not isinstance(value, dict):
        raise ConfigError(key, value, f"a mapping of roles {list(ROLES)} to lists", source=source)
    holders: dict[str, frozenset[str]] = {}
    for role, entries in value.items():
        if role not in ROLES:
            raise ConfigError(
                f"{key}.{role}", entries, f"one of the roles {list(ROLES)}", source=source
            )
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise ConfigError(f"{key}.{role}", entries, f"a list of {_ALLOWED}", source=source)
        holders[role] = frozenset(
            _holder(item, f"{key}.{role}[{i}]", source) for i, item in enumerate(entries)
        )
    return AccessPolicy(holders)
