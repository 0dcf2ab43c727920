"""The access ledger's own guards: TLS refusals are bounded, and no ledger means no action."""

from __future__ import annotations

from pathlib import Path

import pytest
from _access_pki import Coordinator, Pki, coordinator, pki  # noqa: F401 - fixtures

from fedsafe.common.crypto.pki import load_signing_private_key, load_signing_public_key
from fedsafe.common.errors import LedgerError
from fedsafe.common.ledger import verify_ledger
from fedsafe.server.access.audit_log import AccessLog
from fedsafe.server.access.client import AdminClient
from fedsafe.server.access.errors import AdminRequestError


def test_tls_refusals_are_rate_limited_and_the_gap_is_counted(pki: Pki, tmp_path: Path) -> None:
    # Arrange
    now = [0.0]
    log = AccessLog(
        tmp_path / "access",
        signing_key_pem=load_signing_private_key(pki.signing_key),
        signing_pub_pem=load_signing_public_key(pki.signing_pub),
        monotonic=lambda: now[0],
    )

    # Act: 31 refusals within a minute, then one more a minute later
    written = [log.record_tls_refusal("10.0.0.9:1", "unknown ca") for _ in range(31)]
    now[0] = 61.0
    later = log.record_tls_refusal("10.0.0.9:2", "unknown ca")

    # Assert
    assert sum(entry is not None for entry in written) == 30 and written[-1] is None
    assert later is not None and later.payload["suppressed_before"] == 1
    assert verify_ledger(log.ledger_path, server_public_pem=pki.signing_pub.read_bytes())
    log.close()


def test_a_decision_that_cannot_be_ledgered_does_nothing(
    coordinator: Coordinator, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the ledger write fails (disk full, database locked away)
    def broken(*_args: object, **_kwargs: object) -> None:
        raise LedgerError("disk full")

    monkeypatch.setattr(coordinator.service.log, "record", broken)
    client = AdminClient.from_files(
        coordinator.address, ca_cert=pki.ca_cert, cert=pki.alice.cert, key=pki.alice.key
    )

    # Act
    with pytest.raises(AdminRequestError) as failed:
        client.submit()

    # Assert: fail closed
    assert failed.value.status == 503 and coordinator.submitted == []
