"""An operator's side of the admin endpoint: HTTPS with a client certificate, clear refusals."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fedsafe.server.access.errors import (
    AccessDeniedError,
    AdminConnectionError,
    AdminRequestError,
)

__all__ = ["AdminClient", "client_tls_context"]

_TLS_HINT = (
    "the coordinator refused the TLS connection ({reason}); its admin endpoint accepts only "
    "unexpired client certificates issued by the federation CA (`fedsafe certs operator`)"
)


def client_tls_context(*, ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Trust only the federation CA for the coordinator, and present the operator's certificate."""
    for path in (ca_cert, cert, key):
        if not Path(path).is_file():
            raise AdminConnectionError(f"no such file: {path}")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except ssl.SSLError as err:
        raise AdminConnectionError(f"cannot use {cert} with {key}: {err}") from None
    return context


@dataclass(frozen=True)
class AdminClient:
    """Calls the coordinator's admin endpoint at ``address`` (host:port) as one operator."""

    address: str
    context: ssl.SSLContext
    timeout_s: float = 60.0

    @classmethod
    def from_files(
        cls, address: str, *, ca_cert: Path, cert: Path, key: Path, timeout_s: float = 60.0
    ) -> AdminClient:
        """A client from the operator's PEM files and the federation CA certificate."""
        context = client_tls_context(ca_cert=ca_cert, cert=cert, key=key)
        return cls(address, context, timeout_s)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call; AccessDeniedError on 403, AdminRequestError on other errors."""
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit():
            raise AdminConnectionError(f"admin address must be host:port, got {self.address!r}")
        connection = http.client.HTTPSConnection(
            host.strip("[]"), int(port), context=self.context, timeout=self.timeout_s
        )
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except ssl.SSLCertVerificationError as err:
            raise AdminConnectionError(
                f"the coordinator at {self.address} did not prove itself with a federation CA "
                f"certificate: {err.verify_message}"
            ) from None
        except ssl.SSLError as err:
            raise AdminConnectionError(_TLS_HINT.format(reason=err.reason or err)) from None
        except (ConnectionError, OSError) as err:
            raise AdminConnectionError(
                f"no answer from the admin endpoint at {self.address}: {err}"
            ) from None
        finally:
            connection.close()
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise AdminRequestError(
                f"the admin endpoint answered {response.status} without JSON",
                status=response.status,
            ) from None
        if response.status == 403:
            raise AccessDeniedError(str(answer.get("error")), role=answer.get("role"))
        if response.status != 200:
            raise AdminRequestError(str(answer.get("error")), status=response.status)
        return answer

    def submit(self, *, resume: bool = False, run_id: str | None = None) -> dict[str, Any]:
        """Submit the coordinator's configured run (role submit)."""
        result: dict[str, Any] = self.request(
            "POST", "/v1/submit", {"resume": resume, "run_id": run_id}
        )
        return result

    def consent_grant(self, signed: dict[str, Any]) -> dict[str, Any]:
        """Deliver a site-signed grant (``SignedConsent.to_dict()``; role consent)."""
        result: dict[str, Any] = self.request("POST", "/v1/consent/grant", {"signed": signed})
        return result

    def consent_withdraw(self, withdrawal: dict[str, Any]) -> dict[str, Any]:
        """Deliver a site-signed withdrawal (``withdrawal_to_dict``; role consent)."""
        result: dict[str, Any] = self.request(
            "POST", "/v1/consent/withdraw", {"withdrawal": withdrawal}
        )
        return result

    def consent_list(self, site: str | None = None) -> list[dict[str, Any]]:
        """Stored consent records (role consent)."""
        query = f"?{urlencode({'site': site})}" if site else ""
        records: list[dict[str, Any]] = self.request("GET", f"/v1/consent{query}")["records"]
        return records

    def runs(self) -> list[str]:
        """Run folders the coordinator holds (role report)."""
        runs: list[str] = self.request("GET", "/v1/runs")["runs"]
        return runs

    def report(self, run_id: str) -> dict[str, Any]:
        """A run's report: ``report`` (JSON) and ``html`` (role report)."""
        result: dict[str, Any] = self.request("GET", f"/v1/report/{quote(run_id, safe='')}")
        return result
