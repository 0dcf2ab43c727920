"""Coordinator access control: operator roles by client certificate, enforced and ledgered."""

from __future__ import annotations

from fedsafe.server.access.errors import (
    AccessDeniedError,
    AccessError,
    AdminConnectionError,
    AdminRequestError,
)
from fedsafe.server.access.policy import CONSENT, REPORT, ROLES, SUBMIT, AccessPolicy

__all__ = [
    "AccessDeniedError",
    "AccessError",
    "AccessPolicy",
    "AdminConnectionError",
    "AdminRequestError",
    "CONSENT",
    "REPORT",
    "ROLES",
    "SUBMIT",
]
