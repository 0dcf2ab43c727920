"""Alert rules, through the coordinator's real strategy and ledger: each lands in the signed
ledger once, the ledger still verifies, and a ledger edited behind the coordinator's back
is itself an alert."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _monitor_helpers import Federation, Site, monitored, one_round_epsilon, receiver, state_file
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode
from sqlalchemy import create_engine, text

from fedsafe.common.config import MonitoringConfig
from fedsafe.common.ledger import Ledger, verify_ledger
from fedsafe.server.monitor import Monitor, RunState
from fedsafe.server.monitor.alerts import epsilon_near_cap, outcome_of, round_overtime
from fedsafe.server.strategy import MALFORMED_CODE, SILENT_CODE


def _alerts(fed: Federation, rule: str | None = None) -> list[dict[str, object]]:
    return [a for a in fed.ledger("alert") if rule is None or a["rule"] == rule]


def _verifies(fed: Federation) -> None:
    verify_ledger(
        fed.compliance.ledger,
        server_public_pem=fed.compliance.coordinator.public,
        witness=fed.compliance.witness,
    )


def test_epsilon_rule_fires_from_the_fraction_on_and_is_critical_at_the_cap() -> None:
    assert epsilon_near_cap(1, "a", 7.9, 10.0, fraction=0.8) is None
    warning = epsilon_near_cap(1, "a", 8.0, 10.0, fraction=0.8)
    assert warning is not None and warning.severity == "warning" and "80%" in warning.message
    critical = epsilon_near_cap(1, "a", 10.0, 10.0, fraction=0.8)
    assert critical is not None and critical.severity == "critical"
    assert epsilon_near_cap(1, "a", None, 10.0, fraction=0.8) is None
    assert epsilon_near_cap(1, "a", float("nan"), 10.0, fraction=0.8) is None


def test_silence_loss_and_bad_replies_are_drops_a_site_error_is_a_refusal() -> None:
    for code in (SILENT_CODE, MALFORMED_CODE, ErrorCode.NODE_UNAVAILABLE):
        assert outcome_of(code) == "dropped"
    assert outcome_of(ErrorCode.CLIENT_APP_RAISED_EXCEPTION) == "refused"
    assert round_overtime(1, 10.0, 10.0) is None and round_overtime(1, 10.1, 10.0) is not None


def test_a_site_past_its_cap_fraction_is_one_alert_in_the_signed_ledger(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(Site("a"), Site("b"))
    cap_a = one_round_epsilon() / 0.85  # round 1 takes site a to 85 % of its cap
    monitor = monitored(fed, caps={"a": cap_a, "b": 1000.0})
    try:
        fed.run(rounds=2)
    finally:
        monitor.close()

    (alert,) = _alerts(fed)
    assert alert["rule"] == "epsilon_near_cap" and alert["site"] == "a" and alert["round"] == 1
    assert "85%" in str(alert["message"])
    _verifies(fed)  # alerts are in before each head is signed: the chain still verifies
    state = state_file(fed)
    assert state["sites"]["a"]["cap_fraction"] == pytest.approx(0.85)
    assert state["alerts"] == {"epsilon_near_cap": 1}
    assert state["ledger"]["verified"] is True and state["status"] == "finished"


def _refuse(_site: Site, msg: Message) -> list[Message]:
    error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="budget guard: cap reached")
    return [Message(error, reply_to=msg)]


def test_a_refusal_and_a_dropout_are_alerts_and_counted_in_the_round(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(
        Site("a"),
        Site("b"),
        Site("c", train_reply=_refuse),
        Site("d", train_reply=lambda _s, _m: []),  # sent work, never answers
        Site("e", attest={"epsilon": None}),  # a reply the coordinator refuses to count
    )
    monitor = monitored(fed)
    try:
        fed.run(rounds=1)
    finally:
        monitor.close()

    rules = {(a["rule"], a["site"]) for a in _alerts(fed)}
    assert rules == {("site_refused", "c"), ("site_dropped", "d"), ("site_dropped", "e")}
    _verifies(fed)
    state = state_file(fed)
    assert state["this_round"] == {"trained": 2, "refused": 1, "excluded": 0, "dropped": 2}
    assert state["sites"]["d"]["status"] == "dropped" and state["sites"]["c"]["status"] == "refused"
    # Drops and refusals are dropout entries; the refused reply is also the ledger's last error.
    assert state["last_error"].startswith(
        "site e: reply dropped: site 'e': attested epsilon is null"
    )
    assert state["last_error_round"] == 1


def test_a_ledger_edited_behind_the_coordinator_is_a_critical_alert(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(Site("a"), Site("b"))
    monitor = monitored(fed)
    try:
        fed.run(rounds=1)
        assert state_file(fed)["ledger"]["verified"] is True
        engine = create_engine(fed.compliance.ledger.url)
        with engine.begin() as conn:  # an attacker with the database file
            conn.execute(
                text("UPDATE ledger_entries SET payload = :p WHERE kind = 'round_aggregated'"),
                {"p": '{"round":1,"sites":["a"]}'},
            )
        engine.dispose()
        fed.strategy.offset = 1  # the next round is round 2
        fed.run(rounds=1)
    finally:
        monitor.close()

    (alert,) = _alerts(fed, "ledger_check_failed")
    assert alert["severity"] == "critical" and alert["round"] == 2
    assert "edited" in str(alert["message"]).lower() or "seq" in str(alert["message"])
    state = state_file(fed)
    assert state["ledger"]["verified"] is False and state["ledger"]["problem"]


def test_a_round_past_its_timeout_alerts_while_it_runs_and_is_recorded_once(
    tmp_path: Path,
) -> None:
    with receiver() as hook, Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        state = RunState("run-slow", rounds_planned=2, round_timeout_s=0.2)
        cfg = MonitoringConfig(enabled=True, webhook_url=hook.url, verify_ledger=False)
        monitor = Monitor(cfg, state, run_dir=tmp_path, ledger=ledger, watchdog_interval_s=0.05)
        monitor.start()
        try:
            monitor.round_started(1)
            deadline = time.monotonic() + 5.0
            while not hook.bodies and time.monotonic() < deadline:  # the round is still going
                time.sleep(0.05)
            assert [b["rule"] for b in hook.bodies] == ["round_overtime"]
            assert ledger.head() is None  # not written from the watchdog's thread
            monitor.round_finished(1, 0.6)
        finally:
            monitor.close()
        kinds = [(e.kind, e.payload.get("rule")) for e in ledger.entries()]
    assert kinds == [("alert", "round_overtime")]
    assert hook.bodies[0]["run_id"] == "run-slow" and hook.bodies[0]["round"] == 1


def test_a_failing_run_flushes_the_alerts_it_holds_before_its_error_is_signed(
    tmp_path: Path,
) -> None:
    """run_federation's failure path: monitor.flush(), then the error entry and a signed head."""
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        state = RunState("run-fail", rounds_planned=2, round_timeout_s=600.0)
        monitor = Monitor(MonitoringConfig(enabled=True), state, run_dir=tmp_path, ledger=ledger)
        monitor.start()
        try:
            monitor.round_started(1)
            monitor.site_failed(1, "a", SILENT_CODE, "no reply")
            assert ledger.head() is None  # held until the round closes
            monitor.flush()
            monitor.flush()  # nothing twice
        finally:
            monitor.close("failed")
        kinds = [(e.kind, e.payload.get("rule")) for e in ledger.entries()]
    assert kinds == [("alert", "site_dropped")]
    assert json.loads((tmp_path / "monitor.json").read_text())["status"] == "failed"
