"""The admin endpoint as the hostile party meets it: real mTLS on loopback, real ledger."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime

import pytest
from _access_pki import Coordinator, Pki, coordinator, fingerprint, pki  # noqa: F401 - fixtures

from fedsafe.common.consent import ConsentRecord, sign_consent, sign_withdrawal, withdrawal_to_dict
from fedsafe.common.crypto.pki import OperatorCertFiles
from fedsafe.common.ledger import verify_ledger
from fedsafe.common.ledger.audit import INTACT, TAMPERED, Anchors, audit_ledger
from fedsafe.common.ledger.records import ACCESS_DECISION, ERROR
from fedsafe.server.access.audit_log import LEDGER_FILE
from fedsafe.server.access.client import AdminClient
from fedsafe.server.access.errors import (
    AccessDeniedError,
    AdminConnectionError,
    AdminRequestError,
)


def _client(coordinator: Coordinator, pki: Pki, who: OperatorCertFiles) -> AdminClient:
    return AdminClient.from_files(
        coordinator.address, ca_cert=pki.ca_cert, cert=who.cert, key=who.key, timeout_s=10
    )


def _decisions(coordinator: Coordinator) -> list[dict[str, object]]:
    return [e.payload for e in coordinator.service.log.entries() if e.kind == ACCESS_DECISION]


def _settled(coordinator: Coordinator, count: int) -> list[dict[str, object]]:
    """A TLS refusal reaches the client before the server thread has ledgered it: wait (5 s)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        entries = coordinator.service.log.entries()
        found = [e.payload for e in entries if e.kind == ACCESS_DECISION]
        if len(found) >= count and entries[-1].kind == "head_signed":
            return found
        time.sleep(0.02)
    return _decisions(coordinator)


def _audit(coordinator: Coordinator, pki: Pki) -> str:
    ledger = coordinator.access_dir / LEDGER_FILE
    return audit_ledger(ledger, coordinator.access_dir, Anchors(server_key=pki.signing_pub)).status


def test_authorised_submit_succeeds_and_is_logged(coordinator: Coordinator, pki: Pki) -> None:
    # Act
    answer = _client(coordinator, pki, pki.alice).submit()

    # Assert
    assert answer == {"run_id": "7", "fab_sha256": "ab" * 32}
    assert coordinator.submitted == [(False, None)]
    (decision,) = _decisions(coordinator)
    assert decision["decision"] == "allowed"
    assert decision["action"] == "submit" and decision["role"] == "submit"
    assert decision["subject"] == "CN=alice"
    assert decision["fingerprint"] == fingerprint(pki.alice)
    assert _audit(coordinator, pki) == INTACT


def test_federation_cert_without_the_role_is_refused_and_ledgered(
    coordinator: Coordinator, pki: Pki
) -> None:
    # Act
    with pytest.raises(AccessDeniedError) as refused:
        _client(coordinator, pki, pki.bob).submit()

    # Assert: the message names the certificate and the missing role; nothing was submitted
    assert "CN=bob" in str(refused.value) and "role 'submit'" in str(refused.value)
    assert refused.value.role == "submit"
    assert coordinator.submitted == []
    (decision,) = _decisions(coordinator)
    assert decision["decision"] == "refused" and decision["subject"] == "CN=bob"
    assert decision["fingerprint"] == fingerprint(pki.bob)
    assert _audit(coordinator, pki) == INTACT


def test_role_for_one_action_does_not_open_another(coordinator: Coordinator, pki: Pki) -> None:
    # Arrange: the DPO holds consent only
    client = _client(coordinator, pki, pki.dpo)

    # Act / Assert
    with pytest.raises(AccessDeniedError, match="role 'report'"):
        client.report("run-1")
    with pytest.raises(AccessDeniedError, match="role 'submit'"):
        client.submit()
    assert [d["decision"] for d in _decisions(coordinator)] == ["refused", "refused"]


def test_certificate_from_another_ca_is_refused_at_the_tls_layer(
    coordinator: Coordinator, pki: Pki
) -> None:
    # Act: a self-made CA with the federation CA's name issued CN=alice, who holds roles
    with pytest.raises(AdminConnectionError, match="refused the TLS connection"):
        _client(coordinator, pki, pki.stranger).submit()

    # Assert: no action ran, the refusal is on record without a trusted identity
    assert coordinator.submitted == []
    (decision,) = _settled(coordinator, 1)
    assert decision["action"] == "connect" and decision["decision"] == "refused"
    assert decision["subject"] is None
    assert "TLS handshake refused" in str(decision["reason"])
    assert "issuer" in str(decision["reason"])
    assert _audit(coordinator, pki) == INTACT


def test_expired_certificate_is_refused(coordinator: Coordinator, pki: Pki) -> None:
    # Act: CN=alice holds the report role, but this certificate of hers has expired
    with pytest.raises(AdminConnectionError):
        _client(coordinator, pki, pki.expired).report("run-1")

    # Assert
    (decision,) = _settled(coordinator, 1)
    assert decision["decision"] == "refused" and "expired" in str(decision["reason"])


def test_consent_grant_and_withdraw_through_the_endpoint(
    coordinator: Coordinator, pki: Pki
) -> None:
    # Arrange: the site signs; the DPO's certificate only delivers it
    private = (pki.site_dir / "signing.key").read_bytes()
    public = (pki.site_dir / "signing.pub").read_bytes()
    now = datetime.now(UTC)
    record = ConsentRecord(
        site="hospital-a",
        dataset="heart",
        purposes=("cardiology",),
        legal_basis="GDPR Art. 6(1)(e)",
        data_categories=("health",),
        jurisdiction="EU",
        valid_from=now,
        valid_until=None,
        granted_at=now,
        record_id="c-1",
    )
    signed = sign_consent(record, private, site_public_pem=public)
    withdrawal = sign_withdrawal(
        record_id="c-1", site="hospital-a", withdrawn_at=now, site_private_pem=private
    )
    client = _client(coordinator, pki, pki.dpo)

    # Act
    granted = client.consent_grant(signed.to_dict())
    withdrawn = client.consent_withdraw(withdrawal_to_dict(withdrawal))
    listed = client.consent_list("hospital-a")

    # Assert
    assert granted == {"granted": "c-1", "site": "hospital-a"}
    assert withdrawn == {"withdrawn": "c-1", "site": "hospital-a"}
    assert [r["record"]["record_id"] for r in listed] == ["c-1"]
    assert listed[0]["withdrawal"] is not None
    targets = [d["target"] for d in _decisions(coordinator)]
    assert targets[:2] == ["site=hospital-a record=c-1"] * 2


def test_forged_consent_is_allowed_through_the_door_but_not_stored(
    coordinator: Coordinator, pki: Pki
) -> None:
    # Arrange: a record signed by some other key, claiming hospital-a
    from fedsafe.common.crypto.pki import init_site_keys

    other = init_site_keys(pki.root / "forger", "forger")
    now = datetime.now(UTC)
    record = ConsentRecord(
        site="hospital-a",
        dataset="heart",
        purposes=("anything",),
        legal_basis="none",
        data_categories=("health",),
        jurisdiction="EU",
        valid_from=now,
        valid_until=None,
        granted_at=now,
        record_id="c-forged",
    )
    signed = sign_consent(
        record, other.signing_key.read_bytes(), site_public_pem=other.signing_pub.read_bytes()
    )

    # Act
    with pytest.raises(AdminRequestError, match="does not verify") as failed:
        _client(coordinator, pki, pki.dpo).consent_grant(signed.to_dict())

    # Assert: the failure is an error entry after the allowed decision
    assert failed.value.status == 400
    kinds = [e.kind for e in coordinator.service.log.entries() if e.kind != "head_signed"]
    assert kinds == [ACCESS_DECISION, ERROR]


def test_report_read_and_path_escape(coordinator: Coordinator, pki: Pki) -> None:
    # Arrange
    client = _client(coordinator, pki, pki.alice)

    # Act
    runs = client.runs()
    answer = client.report("run-1")
    with pytest.raises(AdminRequestError, match="run id"):
        client.report("../access")

    # Assert
    assert runs == ["run-1"]
    assert answer["run_id"] == "run-1" and answer["report"]["ledger"]["status"] == "absent"


def test_forged_ledger_entry_is_detected(coordinator: Coordinator, pki: Pki) -> None:
    # Arrange: bob is refused, then someone with file access rewrites it as allowed
    with pytest.raises(AccessDeniedError):
        _client(coordinator, pki, pki.bob).submit()
    ledger = coordinator.access_dir / LEDGER_FILE
    with sqlite3.connect(ledger) as db:
        db.execute(
            "UPDATE ledger_entries SET payload = replace(payload, '\"refused\"', '\"allowed\"') "
            "WHERE kind = ?",
            (ACCESS_DECISION,),
        )

    # Act
    outcome = audit_ledger(ledger, coordinator.access_dir, Anchors(server_key=pki.signing_pub))

    # Assert
    assert outcome.status == TAMPERED and outcome.seq == 1
    with pytest.raises(Exception, match="payload edited"):
        verify_ledger(ledger, server_public_pem=pki.signing_pub.read_bytes())


def test_unknown_path_is_404_and_not_a_decision(coordinator: Coordinator, pki: Pki) -> None:
    # Act
    with pytest.raises(AdminRequestError) as missing:
        _client(coordinator, pki, pki.alice).request("GET", "/v1/nothing")

    # Assert
    assert missing.value.status == 404
    assert _decisions(coordinator) == []
