"""One enrolled site never crashes a round: whatever it sends is a recorded drop naming it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest
from conftest import Federation, Site
from flwr.app import ConfigRecord, Message

from fedsafe.common import crypto, keys
from fedsafe.common.attestation import sign_statement
from fedsafe.common.consent import sign_withdrawal, withdrawal_to_dict

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError, not ValueError


def _assert_round_went_on(fed: Federation, honest: tuple[str, ...] = ("a", "b")) -> None:
    assert fed.strategy.stopped_at is None
    for site in fed.sites.values():
        if site.name in honest:
            assert site.trained == [1], site.name
    assert fed.ledger("round_aggregated"), "the round must aggregate the honest sites"


@pytest.mark.parametrize(
    ("attest", "reason"),
    [
        ({"epsilon": "0.5"}, "attested epsilon '0.5' is not a number"),
        ({"epsilon": None}, "attested epsilon is null"),
        ({"steps": "10"}, "attested steps '10' is not an integer"),
        ({"round": "1"}, "attested round '1' != 1"),
    ],
    ids=["string-epsilon", "null-epsilon", "string-steps", "string-round"],
)
def test_a_bad_attestation_is_a_recorded_drop(
    federation: Callable[..., Federation], attest: dict[str, object], reason: str
) -> None:
    fed = federation(Site("a"), Site("b"), Site("m", attest=attest))
    fed.run()
    _assert_round_went_on(fed)
    assert f"site m: reply dropped: site 'm': {reason}" in fed.errors()


def test_an_attestation_without_epsilon_is_a_recorded_drop(
    federation: Callable[..., Federation],
) -> None:
    def no_epsilon(site: Site, msg: Message) -> list[Message]:
        content = site.update(msg)
        payload = json.loads(str(content[keys.ATTESTATION]["payload"]))
        del payload["epsilon"]
        content[keys.ATTESTATION] = ConfigRecord(sign_statement(payload, site.private))
        return [Message(content, reply_to=msg)]

    fed = federation(Site("a"), Site("b"), Site("m", train_reply=no_epsilon))
    fed.run()
    _assert_round_went_on(fed)
    assert "site m: reply dropped: site 'm': attested epsilon is null" in fed.errors()


def test_an_unexpected_exception_in_one_reply_is_a_recorded_drop(
    federation: Callable[..., Federation],
) -> None:
    def deep(site: Site, msg: Message) -> list[Message]:
        content = site.update(msg)  # validly signed, by its own key, but nested 100,000 deep
        signature = crypto.sign(site.private, DEEP.encode())
        content[keys.ATTESTATION] = ConfigRecord({"payload": DEEP, "signature": signature})
        return [Message(content, reply_to=msg)]

    fed = federation(Site("a"), Site("b"), Site("m", train_reply=deep))
    fed.run()
    _assert_round_went_on(fed)
    assert "site m: reply dropped: could not be handled (RecursionError" in fed.errors()


def _withdrawal(site: Site, record_id: str) -> str:
    item = sign_withdrawal(
        record_id=record_id,
        site=site.name,
        withdrawn_at=datetime.now(UTC),
        site_private_pem=site.private,
    )
    return json.dumps({"grants": [], "withdrawals": [withdrawal_to_dict(item)]})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("{not json", "consent payload is not a JSON object"),
        ("[1, 2]", "consent payload is not a JSON object"),
        ('{"grants": {"a": 1}}', "consent payload is not a JSON object"),
        ('{"grants": [{"record": {}}]}', "consent grant [0] is malformed"),
        ('{"withdrawals": [{"record_id": 3}]}', "withdrawal [0] is malformed"),
        (DEEP, "could not be handled (RecursionError"),
        ("unknown-id", "withdrawal refused: no consent nope of site 'm' on record"),
    ],
    ids=[
        "not-json",
        "list",
        "grants-dict",
        "grant-malformed",
        "withdrawal-malformed",
        "deep",
        "unknown-id",
    ],
)
def test_a_bad_consent_payload_in_an_evaluate_reply_is_a_recorded_drop(
    federation: Callable[..., Federation], payload: str, reason: str
) -> None:
    hostile = Site("m")
    hostile.consent_json = _withdrawal(hostile, "nope") if payload == "unknown-id" else payload
    fed = federation(Site("a"), Site("b"), hostile)
    fed.run(rounds=2)
    assert fed.strategy.stopped_at is None
    assert [s.trained for s in fed.sites.values()] == [[1, 2]] * 3
    assert "site m: reply dropped" in fed.errors() and reason in fed.errors()


def test_a_grant_for_another_site_is_refused(federation: Callable[..., Federation]) -> None:
    hostile = Site("m")
    hostile.consent_json = json.dumps({"grants": [hostile.grant(site="a")]})
    fed = federation(Site("a"), Site("b"), hostile)
    fed.run()
    assert "site m: reply dropped: site 'm' sent consent for 'a'" in fed.errors()


def test_evaluate_replies_may_carry_any_subset_of_the_known_metrics(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(
        Site("a", eval_metrics={keys.ACCURACY: 0.6}),
        Site("b", eval_metrics={keys.NUM_EXAMPLES: 30.0, keys.ACCURACY: 0.9, keys.LOSS: 0.2}),
        Site("c", eval_metrics={}),
    )
    fed.run()
    assert "reply dropped" not in fed.errors()
    metrics = fed.strategy.recorder.global_metrics()
    assert metrics[keys.ACCURACY] == pytest.approx(0.75)  # a sent no count: unweighted
    assert metrics[keys.LOSS] == pytest.approx(0.2)
    assert np.isnan(metrics[keys.AUROC])


def test_an_unknown_evaluate_metric_is_still_refused(federation: Callable[..., Federation]) -> None:
    fed = federation(Site("a"), Site("b", eval_metrics={"rows": 1.0}))
    fed.run()
    assert "site b: reply dropped: metrics ['rows'] differ" in fed.errors()


def test_a_reply_naming_another_site_is_dropped(federation: Callable[..., Federation]) -> None:
    def as_a(site: Site, msg: Message) -> list[Message]:
        content = site.update(msg)
        content[keys.SITE] = ConfigRecord({keys.SITE_NAME: "a"})
        return [Message(content, reply_to=msg)]

    fed = federation(Site("a"), Site("b"), Site("m", train_reply=as_a))
    fed.run()
    assert "site m: reply dropped: reply names site 'a'; this node is 'm'" in fed.errors()


def test_a_huge_held_out_count_cannot_take_over_the_reported_metrics(
    federation: Callable[..., Federation],
) -> None:
    liar = {keys.NUM_EXAMPLES: 1e12, keys.ACCURACY: 0.0}
    honest = {keys.NUM_EXAMPLES: 50.0, keys.ACCURACY: 1.0}
    fed = federation(
        Site("m", eval_metrics=liar), Site("a", eval_metrics=honest), Site("b", eval_metrics=honest)
    )
    fed.run()
    # Clipped to half of the total, as a training weight would be: not 0.0.
    assert fed.strategy.recorder.global_metrics()[keys.ACCURACY] == pytest.approx(0.5)


def test_a_site_that_never_answers_is_a_recorded_dropout(
    federation: Callable[..., Federation],
) -> None:
    """Sent work, no reply (timeout, disconnect): the ledger and the run folder say so."""
    fed = federation(Site("a"), Site("b"), Site("m", train_reply=lambda site, msg: []))
    fed.run()
    _assert_round_went_on(fed)
    (dropout,) = fed.ledger("dropout")
    assert dropout["site"] == "m" and dropout["round"] == 1
    assert "no reply before the round timeout" in dropout["reason"]
    summary = fed.strategy.recorder.sites["m"]
    assert summary.refusals[0]["round"] == 1 and not summary.trained_rounds
