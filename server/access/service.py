"""The access decision for one admin request: authenticate, authorise, log, then act."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fedsafe.common.crypto.certificates import (
    CertificateIdentity,
    certificate_identity,
    check_client_certificate,
)
from fedsafe.common.errors import FedsafeError, IntegrityError
from fedsafe.server.access.actions import CoordinatorActions
from fedsafe.server.access.audit_log import ALLOWED, REFUSED, AccessLog, Decision
from fedsafe.server.access.errors import AccessDeniedError
from fedsafe.server.access.policy import CONSENT, REPORT, SUBMIT, AccessPolicy

__all__ = ["AccessService", "Route", "ROUTES"]

_log = logging.getLogger(__name__)
Handler = Callable[[CoordinatorActions, Mapping[str, Any], str, dict[str, list[str]]], Any]


@dataclass(frozen=True)
class Route:
    """One endpoint: the action name the ledger records and the role it needs."""

    method: str
    prefix: str
    action: str
    role: str
    handle: Handler
    takes_tail: bool = False


def _first(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/submit", "submit", SUBMIT, lambda a, body, _t, _q: a.submit_run(body)),
    Route(
        "POST",
        "/v1/consent/grant",
        "consent_grant",
        CONSENT,
        lambda a, body, _t, _q: a.consent_grant(body),
    ),
    Route(
        "POST",
        "/v1/consent/withdraw",
        "consent_withdraw",
        CONSENT,
        lambda a, body, _t, _q: a.consent_withdraw(body),
    ),
    Route(
        "GET",
        "/v1/consent",
        "consent_list",
        CONSENT,
        lambda a, _b, _t, q: a.consent_list(_first(q, "site")),
    ),
    Route("GET", "/v1/runs", "runs_list", REPORT, lambda a, _b, _t, _q: a.runs_list()),
    Route(
        "GET",
        "/v1/report/",
        "report_read",
        REPORT,
        lambda a, _b, tail, _q: a.report_read(tail),
        takes_tail=True,
    ),
)


def _resolve(method: str, path: str) -> tuple[Route, str] | None:
    for route in ROUTES:
        if route.method != method:
            continue
        if route.takes_tail and path.startswith(route.prefix) and len(path) > len(route.prefix):
            return route, unquote(path[len(route.prefix) :])
        if not route.takes_tail and path == route.prefix:
            return route, ""
    return None


def _target(route: Route, body: Mapping[str, Any], tail: str, query: dict[str, list[str]]) -> str:
    """What the request is about, for the ledger: read defensively from untrusted input."""

    def text(value: object) -> str:
        return str(value)[:128] if value is not None else "-"

    if route.action == "submit":
        return f"resume={text(body.get('resume', False))} run_id={text(body.get('run_id'))}"
    if route.action == "consent_grant":
        signed = body.get("signed")
        record = signed.get("record") if isinstance(signed, dict) else None
        record = record if isinstance(record, dict) else {}
        return f"site={text(record.get('site'))} record={text(record.get('record_id'))}"
    if route.action == "consent_withdraw":
        withdrawal = body.get("withdrawal")
        withdrawal = withdrawal if isinstance(withdrawal, dict) else {}
        return f"site={text(withdrawal.get('site'))} record={text(withdrawal.get('record_id'))}"
    if route.action == "consent_list":
        return f"site={text(_first(query, 'site'))}"
    if route.action == "report_read":
        return f"run={text(tail)}"
    return ""


class AccessService:
    """Decides and records each admin request. The HTTP layer only hands over the verified
    peer certificate (DER), the peer address and the body; every answer is (status, JSON)."""

    def __init__(
        self,
        *,
        policy: AccessPolicy,
        ca_pem: bytes,
        log: AccessLog,
        actions: CoordinatorActions,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.policy, self.log, self.actions = policy, log, actions
        self._ca_pem = ca_pem
        self._clock = clock or (lambda: datetime.now(UTC))

    def authenticate(self, der: bytes | None) -> CertificateIdentity:
        """The verified identity of ``der``; AccessDeniedError says why it is not trusted."""
        if not der:
            raise AccessDeniedError("access refused: no client certificate presented")
        try:
            return check_client_certificate(der, self._ca_pem, at_time=self._clock())
        except (IntegrityError, ValueError) as err:
            raise AccessDeniedError(f"access refused: {err}") from None

    def handle(
        self, method: str, url: str, *, der: bytes | None, peer: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Answer one request as (status, JSON); a refused or failed action is a status, never
        an exception. Raises only when the decision cannot be ledgered: then nothing was done."""
        parts = urlsplit(url)
        resolved = _resolve(method, parts.path)
        if resolved is None:
            return 404, {"error": f"no such admin action: {method} {parts.path}"}
        route, tail = resolved
        query = parse_qs(parts.query)
        try:
            parsed = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, ValueError):
            parsed = None
        request: Mapping[str, Any] = parsed if isinstance(parsed, dict) else {}
        target = _target(route, request, tail, query)
        identity: CertificateIdentity | None = None
        try:
            identity = self.authenticate(der)
            self.policy.require(identity, route.role)
        except AccessDeniedError as err:
            if identity is None and der:
                identity = _claimed(der)
            self.log.record(
                Decision(route.action, route.role, REFUSED, peer, str(err), target, identity)
            )
            return 403, {"error": str(err), "role": route.role}
        reason = f"holds role '{route.role}'"
        self.log.record(Decision(route.action, route.role, ALLOWED, peer, reason, target, identity))
        if parsed is None or (body and not isinstance(parsed, dict)):
            return self._failed(route, target, "the request body is not a JSON object", 400)
        try:
            return 200, route.handle(self.actions, request, tail, query)
        except (FedsafeError, ValueError, TypeError, KeyError) as err:
            return self._failed(route, target, f"{type(err).__name__}: {err}", 400)
        except Exception as err:  # an action must never take the endpoint down
            _log.exception("admin action %s failed", route.action)
            self._failed(route, target, f"{type(err).__name__}: {err}", 500)
            return 500, {"error": f"{route.action} failed on the coordinator (see its log)"}

    def _failed(
        self, route: Route, target: str, message: str, status: int
    ) -> tuple[int, dict[str, Any]]:
        self.log.record_failure(route.action, message, target=target)
        return status, {"error": f"{route.action} failed: {message}"}


def _claimed(der: bytes) -> CertificateIdentity | None:
    """The subject a refused certificate claims, for the record (it is not trusted)."""
    try:
        return certificate_identity(der)
    except ValueError:
        return None
