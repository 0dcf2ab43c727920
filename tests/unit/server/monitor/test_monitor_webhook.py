"""The webhook: alerts reach a real loopback receiver; one that fails, hangs or redirects
costs a recorded failure (its token never written down), never a stalled round."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from _monitor_helpers import Federation, Site, monitored, receiver, state_file
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode

from fedsafe.server.monitor.webhook import QUEUE_SIZE, WebhookSender


def _refuse(_site: Site, msg: Message) -> list[Message]:
    error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="not today")
    return [Message(error, reply_to=msg)]


def _three_sites() -> tuple[Site, Site, Site]:
    return Site("a"), Site("b"), Site("c", train_reply=_refuse)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_an_alert_reaches_the_receiver_as_json(federation: Callable[..., Federation]) -> None:
    fed = federation(*_three_sites())
    with receiver() as hook:
        monitor = monitored(fed, webhook_url=hook.url)
        try:
            fed.run(rounds=1)
            _wait_for(lambda: bool(hook.bodies))
        finally:
            monitor.close()
    (body,) = hook.bodies
    assert body["rule"] == "site_refused" and body["site"] == "c" and body["round"] == 1
    assert body["run_id"] == "run-hostile" and "not today" in body["message"]
    assert state_file(fed)["webhook_failures"] == 0


def test_a_failing_receiver_is_one_ledger_error_without_its_token(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(*_three_sites())
    with receiver("error") as hook:
        monitor = monitored(fed, webhook_url=hook.url)
        try:
            fed.run(rounds=1)  # the alert is sent while the round goes on
            _wait_for(lambda: monitor.state.webhook_failures == 1)
            fed.strategy.offset = 1
            fed.run(rounds=1)  # round 2 closes: the failure goes into the ledger
        finally:
            monitor.close()
    errors = [e for e in fed.ledger("error") if e["component"] == "monitor"]
    assert errors, fed.ledger("error")
    assert "webhook http://127.0.0.1:" in errors[0]["message"] and "500" in errors[0]["message"]
    assert all("secret-token" not in e["message"] for e in fed.ledger("error"))
    assert state_file(fed)["webhook_failures"] >= 1


def test_a_hanging_receiver_never_stalls_the_round(federation: Callable[..., Federation]) -> None:
    fed = federation(*_three_sites())
    with receiver("hang") as hook:
        monitor = monitored(fed, webhook_url=hook.url, webhook_timeout_s=0.5)
        try:
            started = time.monotonic()
            fed.run(rounds=1)  # a refusal alert is sent to a receiver that never answers
            took = time.monotonic() - started
            _wait_for(lambda: monitor.state.webhook_failures == 1)  # its timeout, recorded
        finally:
            closing = time.monotonic()
            monitor.close()
            closed = time.monotonic() - closing
    assert hook.bodies, "the receiver got the request and held it"
    assert took < 0.5, f"the round waited {took:.2f} s on the webhook"
    assert closed < 0.5 + 1.5, f"closing the monitor waited {closed:.2f} s"


def test_a_redirect_is_refused_and_the_other_host_gets_nothing(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(*_three_sites())
    with receiver() as elsewhere, receiver("redirect", redirect_to="") as hook:
        hook.redirect_to = elsewhere.url
        monitor = monitored(fed, webhook_url=hook.url)
        try:
            fed.run(rounds=1)
            _wait_for(lambda: monitor.state.webhook_failures == 1)
        finally:
            monitor.close()
    assert len(hook.bodies) == 1 and elsewhere.bodies == []


def test_a_full_queue_drops_alerts_without_blocking_the_caller() -> None:
    release = threading.Event()
    failures: list[str] = []

    def stuck(_url: str, _body: dict[str, Any], *, timeout_s: float) -> None:
        release.wait(10.0)

    sender = WebhookSender(
        "http://127.0.0.1:9/x", timeout_s=1.0, on_failure=failures.append, post=stuck
    )
    started = time.monotonic()
    for i in range(QUEUE_SIZE + 10):
        sender.send({"rule": f"r{i}"})
    assert time.monotonic() - started < 1.0
    release.set()
    assert sender.close(5.0)
    assert 9 <= len(failures) <= 10 and "dropped" in failures[-1]
