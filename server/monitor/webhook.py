"""Alerts POSTed as JSON to an operator's webhook, from a thread of their own.

The coordinator's rounds never wait on the receiver: alerts go into a bounded queue that one
sender thread drains, each POST with a short timeout. A receiver that is down, slow, answers
with an error or redirects elsewhere costs a recorded failure, never a stalled or crashed round.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["WebhookSender", "QUEUE_SIZE", "post_json", "redacted"]

log = logging.getLogger("fedsafe.server")

QUEUE_SIZE = 256


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: the alert goes where it was configured to go, or nowhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def redacted(url: str) -> str:
    """scheme://host[:port] only: a path or query may hold the receiver's token."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def post_json(url: str, body: dict[str, Any], *, timeout_s: float) -> None:
    """POST `body` as JSON; raises OSError (URLError, HTTPError, timeout) unless a 2xx came."""
    data = json.dumps(body, sort_keys=True).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "fedsafe-monitor/1"},
    )
    with _OPENER.open(request, timeout=timeout_s) as response:
        status = int(response.status)
    if not 200 <= status < 300:
        raise urllib.error.URLError(f"HTTP {status}")


class WebhookSender:
    """One daemon thread POSTing queued alerts; `on_failure(reason)` hears of each failure."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        on_failure: Callable[[str], None],
        post: Callable[..., None] = post_json,
    ) -> None:
        self.url, self.timeout_s = url, timeout_s
        self._on_failure, self._post = on_failure, post
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="fedsafe-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: dict[str, Any]) -> None:
        """Queue `alert` and return at once; a full queue is a failure, never a wait."""
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self._failed(f"{QUEUE_SIZE} alerts already waiting; alert {alert.get('rule')} dropped")

    def _failed(self, reason: str) -> None:
        message = f"webhook {redacted(self.url)}: {reason}"
        log.warning("monitoring: %s", message)
        try:
            self._on_failure(message)
        except Exception:  # noqa: BLE001 - recording a failure must not end the sender
            log.exception("monitoring: could not record a webhook failure")

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            try:
                self._post(self.url, alert, timeout_s=self.timeout_s)
            except Exception as err:  # noqa: BLE001 - any failure to deliver is only recorded
                self._failed(
                    f"alert {alert.get('rule')} not delivered ({type(err).__name__}: {err})"
                )

    def close(self, wait_s: float) -> bool:
        """Send what is queued, waiting at most `wait_s`; True if the sender finished.

        A receiver that hangs past that keeps only its daemon thread, which ends with the process.
        """
        try:
            self._queue.put(None, timeout=wait_s)
        except queue.Full:
            return False
        self._thread.join(wait_s)
        return not self._thread.is_alive()
