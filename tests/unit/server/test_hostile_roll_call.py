"""The roll call and the consent gate against a hostile site: names, ids, refusals, tampering."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from conftest import Federation, Site
from flwr.app import ConfigRecord, Message

from fedsafe.common import keys
from fedsafe.common.consent import SignedConsent, sign_withdrawal, withdrawal_to_dict
from fedsafe.server.roster import roll_call


def test_a_claimed_name_outside_the_enrolled_folder_is_refused_before_any_key_is_read(
    federation: Callable[..., Federation],
) -> None:
    mallory = Site("mallory")

    def planted(site: Site, msg: Message) -> list[Message]:
        return [Message(site.identity(msg, name="../planted"), reply_to=msg)]

    mallory.roll_call_reply = planted
    fed = federation(Site("a"), Site("b"), mallory)
    # The attacker's key, planted beside (not in) the enrolled folder: sites/../planted.pub.
    (fed.tmp / "planted.pub").write_bytes(mallory.public)
    (fed.tmp / "sites" / "mallory.pub").unlink()
    fed.run()
    assert "../planted" not in fed.compliance.roster.values()
    assert mallory.trained == []
    errors = fed.errors()
    assert "refused at roll call: claimed site name refused" in errors and "'../planted'" in errors


def test_a_grant_under_another_sites_record_id_does_not_block_that_site(
    federation: Callable[..., Federation],
) -> None:
    # The predictable id of the victim's grant, registered first by a peer with its own key.
    victim, peer = Site("victim", record_id="victim:heart_disease:0"), Site("peer")

    def squat(site: Site, msg: Message) -> list[Message]:
        content = site.identity(msg)
        grants = [site.grant(), site.grant(record_id="victim:heart_disease:0")]
        content[keys.CONSENT] = ConfigRecord({"json": json.dumps({"grants": grants})})
        return [Message(content, reply_to=msg)]

    peer.roll_call_reply = squat
    fed = federation(peer, victim, Site("b"))  # the peer answers the roll call first
    fed.run()
    assert victim.trained == [1] and peer.trained == [1]
    ids = {
        (e.signed.record.site, e.signed.record.record_id) for e in fed.compliance.consent.records()
    }
    assert {("peer", "victim:heart_disease:0"), ("victim", "victim:heart_disease:0")} <= ids


def test_a_site_whose_roll_call_consent_is_malformed_never_trains_without_consent(
    federation: Callable[..., Federation],
) -> None:
    def bad_consent(site: Site, msg: Message) -> list[Message]:
        content = site.identity(msg)
        content[keys.CONSENT] = ConfigRecord({"json": "{not json"})
        return [Message(content, reply_to=msg)]

    hostile = Site("m", roll_call_reply=bad_consent)
    fed = federation(Site("a"), Site("b"), hostile)
    fed.run(rounds=2)
    assert hostile.trained == []
    assert "site m: consent sent at roll call not stored" in fed.errors()
    refused = [d for d in fed.ledger("consent_decision") if d["site"] == "m"]
    assert [d["decision"] for d in refused] == ["refused", "refused"]


def test_a_re_sent_grant_that_clashes_keeps_the_consent_on_record(
    federation: Callable[..., Federation],
) -> None:
    # As after a coordinator restart: the site signs its grant again, same id, new times.
    a = Site("a")
    fed = federation(a, Site("b"))
    earlier = SignedConsent.from_dict(a.grant())
    fed.compliance.consent.grant(earlier, a.public)
    time.sleep(0.01)  # the re-signed grant carries other times
    fed.run()
    assert a.trained == [1]
    assert "site a: consent sent at roll call not stored" in fed.errors()


def test_a_node_refused_at_the_roll_call_is_never_sampled(
    federation: Callable[..., Federation],
) -> None:
    forger = Site("m")
    sites = [Site("a"), Site("b"), Site("c"), forger]
    fed = federation(*sites, fraction_train=0.7, min_sites=2)
    # The enrolled key of 'm' is another one: this party's identity does not verify.
    (fed.tmp / "sites" / "m.pub").write_bytes(Site("other").public)
    roll_call(fed.grid, fed.compliance, fed.grid.get_node_ids(), timeout_s=5)
    random.seed(3)
    fed.run(rounds=6)
    assert forger.trained == []
    assert fed.strategy.stopped_at is None, "a refused node took a sampled slot"
    assert all(len(r["sites"]) == 2 for r in fed.ledger("round_aggregated"))
    assert len(fed.ledger("round_aggregated")) == 6


def test_too_few_eligible_sites_stops_cleanly(federation: Callable[..., Federation]) -> None:
    fed = federation(Site("a"), Site("m1"), Site("m2"), min_sites=2)
    for name in ("m1", "m2"):
        (fed.tmp / "sites" / f"{name}.pub").write_bytes(Site("other").public)
    roll_call(fed.grid, fed.compliance, fed.grid.get_node_ids(), timeout_s=5)
    fed.run(rounds=2)
    assert fed.strategy.stopped_at == 1
    assert "1 connected site(s) not refused at the roll call" in fed.errors()


def test_a_deleted_withdrawal_row_does_not_re_admit_the_site(
    federation: Callable[..., Federation],
) -> None:
    a = Site("a")
    withdrawal = sign_withdrawal(
        record_id=a.record_id,
        site="a",
        withdrawn_at=datetime.now(UTC) + timedelta(milliseconds=1),
        site_private_pem=a.private,
    )
    a.consent_json = json.dumps({"grants": [], "withdrawals": [withdrawal_to_dict(withdrawal)]})
    fed = federation(a, Site("b"), Site("c"))
    fed.run()
    a.consent_json = None
    # Whoever can write the consent store deletes the withdrawal row.
    with fed.compliance.consent.engine.begin() as conn:
        deleted = conn.execute(sa.text("delete from site_consent_withdrawals where site = 'a'"))
        assert deleted.rowcount == 1
    # The coordinator restarts on the same ledger and store (as on a resume).
    again = Federation(fed.tmp, fed.sites, fed.strategy_cfg, fed.privacy)
    again.run()
    assert a.trained == [1], "site a trained again after its withdrawal row was deleted"
    decisions = [d for d in again.ledger("consent_decision") if d["site"] == "a"]
    assert decisions[-1]["decision"] == "refused"
    assert "the consent store no longer holds the withdrawal" in decisions[-1]["reason"]
    again.compliance.ledger.close()
    again.compliance.consent.close()
