"""The admin endpoint: HTTPS on the stdlib, client certificates required from the federation CA."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fedsafe.server.access.service import AccessService

__all__ = ["AdminEndpoint", "server_tls_context", "MAX_BODY"]

_log = logging.getLogger(__name__)
MAX_BODY = 1 << 20  # a signed consent record is a few kB; nothing legitimate is larger
_TIMEOUT_S = 10.0  # a peer that stalls mid-handshake or mid-request is dropped
_MAX_CONCURRENT = 16


def server_tls_context(*, cert: Path, key: Path, ca_cert: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context that demands a client certificate chaining to ``ca_cert`` only.

    No system roots are loaded: the federation CA is the only issuer whose operators get in.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    context.load_verify_locations(cafile=str(ca_cert))
    return context


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: each is authorised on its own

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            self._reply(413, {"error": f"request body must be at most {MAX_BODY} bytes"})
            return
        body = self.rfile.read(int(length)) if int(length) else b""
        connection: Any = self.connection
        der = connection.getpeercert(binary_form=True)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        try:
            status, answer = self.server.service.handle(
                method, self.path, der=der, peer=peer, body=body
            )
        except Exception:  # the decision could not be ledgered: fail closed, nothing was done
            _log.exception("admin request %s %s could not be decided", method, self.path)
            status, answer = 503, {"error": "the coordinator could not record the decision"}
        self._reply(status, answer)

    def _reply(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer, default=str).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        _log.info("admin %s: " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], context: ssl.SSLContext, service: AccessService
    ) -> None:
        self.context, self.service = context, service
        self._slots = threading.BoundedSemaphore(_MAX_CONCURRENT)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # too many at once: drop, do not queue
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The TLS handshake runs here, on the request's thread, never on the accept loop."""
        raw: socket.socket = request
        raw.settimeout(_TIMEOUT_S)
        peer = f"{client_address[0]}:{client_address[1]}"
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as err:
            reason = getattr(err, "verify_message", None) or getattr(err, "reason", None)
            self.service.log.record_tls_refusal(peer, str(reason or err))
            raw.close()
            return
        try:
            _Handler(tls, client_address, self)
        except (OSError, ssl.SSLError) as err:
            _log.info("admin connection from %s ended: %s", peer, err)
        finally:
            tls.close()


class AdminEndpoint:
    """Serve ``service`` on ``host:port`` (0: the OS picks) until ``stop``; usable in ``with``."""

    def __init__(
        self, service: AccessService, *, host: str, port: int, context: ssl.SSLContext
    ) -> None:
        self._server = _Server((host, port), context, service)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="fedsafe-admin",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> AdminEndpoint:
        """Start serving on a daemon thread."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, close the socket and wait for the serving thread (bounded)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=timeout_s)
        self._server.server_close()

    def __enter__(self) -> AdminEndpoint:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
