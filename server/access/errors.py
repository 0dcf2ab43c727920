"""Access-control errors: a refusal names the certificate and the role it lacks, nothing more."""

from __future__ import annotations

from fedsafe.common.errors import FedsafeError

__all__ = ["AccessError", "AccessDeniedError", "AdminRequestError", "AdminConnectionError"]


class AccessError(FedsafeError):
    """Base of the coordinator's access-control errors."""


class AccessDeniedError(AccessError):
    """A certificate was refused: not the federation CA's, out of date, or lacking the role.

    ``subject`` is the certificate's subject (None when none was presented) and ``role`` the
    role the action needs, so an operator reads exactly what to ask the coordinator for.
    """

    def __init__(self, message: str, *, subject: str | None = None, role: str | None = None):
        self.subject, self.role = subject, role
        super().__init__(message)


class AdminRequestError(AccessError):
    """The admin endpoint answered an error (bad request, failed action); ``status`` is HTTP."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class AdminConnectionError(AccessError):
    """No answer from the admin endpoint: unreachable, or the TLS handshake was refused."""
