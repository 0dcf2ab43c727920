"""Consent record schema: pinned signed bytes, sign/verify, withdrawals and boundary checks."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from fedsafe.common.consent import (
    CONSENT_DOMAIN,
    ConsentRecord,
    SignedConsent,
    parse_time,
    sign_consent,
    sign_withdrawal,
    signed_bytes,
    verify_consent,
    verify_withdrawal,
    withdrawal_bytes,
)
from fedsafe.common.crypto import generate_signing_key, public_key_fingerprint
from fedsafe.common.errors import IntegrityError

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_signing_key()


@pytest.fixture(scope="module")
def other_keys() -> tuple[bytes, bytes]:
    return generate_signing_key()


def _record(**changes: object) -> ConsentRecord:
    base = ConsentRecord(
        site="h1",
        dataset="heart",
        purposes=("training",),
        legal_basis="GDPR Art. 6(1)(e) + 9(2)(j)",
        data_categories=("health",),
        jurisdiction="EU",
        valid_from=T0,
        valid_until=T0 + timedelta(days=365),
        granted_at=T0,
        record_id="r-1",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_signed_bytes_are_domain_tag_plus_canonical_json() -> None:
    record = _record()

    data = signed_bytes(record)

    assert data == (
        b"fedsafe-consent-v1\n"
        b'{"data_categories":["health"],"dataset":"heart","granted_at":"2025-01-01T00:00:00.000000Z",'
        b'"jurisdiction":"EU","legal_basis":"GDPR Art. 6(1)(e) + 9(2)(j)","purposes":["training"],'
        b'"record_id":"r-1","site":"h1","valid_from":"2025-01-01T00:00:00.000000Z",'
        b'"valid_until":"2026-01-01T00:00:00.000000Z"}'
    )
    assert data.startswith(CONSENT_DOMAIN)


def test_sign_then_verify_passes_and_names_the_signer(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys

    signed = sign_consent(_record(), private_pem, site_public_pem=public_pem)

    verify_consent(signed, public_pem)
    assert signed.signer == public_key_fingerprint(public_pem)


def test_verify_refuses_a_changed_record(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys
    signed = sign_consent(_record(), private_pem, site_public_pem=public_pem)
    forged = dataclasses.replace(signed, record=_record(purposes=("training", "marketing")))

    with pytest.raises(IntegrityError, match="signature does not verify"):
        verify_consent(forged, public_pem)


def test_verify_refuses_another_sites_key(
    keys: tuple[bytes, bytes], other_keys: tuple[bytes, bytes]
) -> None:
    private_pem, public_pem = keys
    signed = sign_consent(_record(), private_pem, site_public_pem=public_pem)

    with pytest.raises(IntegrityError, match="signature does not verify"):
        verify_consent(signed, other_keys[1])


def test_sign_refuses_a_mismatched_key_pair(
    keys: tuple[bytes, bytes], other_keys: tuple[bytes, bytes]
) -> None:
    with pytest.raises(ValueError, match="does not match"):
        sign_consent(_record(), keys[0], site_public_pem=other_keys[1])


def test_withdrawal_sign_then_verify_passes(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys

    withdrawal = sign_withdrawal(
        record_id="r-1", site="h1", withdrawn_at=T0, site_private_pem=private_pem
    )

    verify_withdrawal(withdrawal, public_pem)


def test_withdrawal_with_changed_time_is_refused(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys
    withdrawal = sign_withdrawal(
        record_id="r-1", site="h1", withdrawn_at=T0, site_private_pem=private_pem
    )
    moved = dataclasses.replace(withdrawal, withdrawn_at=T0 + timedelta(days=30))

    with pytest.raises(IntegrityError, match="signature does not verify"):
        verify_withdrawal(moved, public_pem)


def test_grant_and_withdrawal_bytes_are_domain_separated() -> None:
    grant = signed_bytes(_record())
    withdraw = withdrawal_bytes("r-1", "h1", T0)

    assert grant.split(b"\n", 1)[0] != withdraw.split(b"\n", 1)[0]


def test_dict_round_trip_keeps_the_signature_valid(keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = keys
    signed = sign_consent(_record(valid_until=None), private_pem, site_public_pem=public_pem)

    back = SignedConsent.from_dict(signed.to_dict())

    assert back == signed
    verify_consent(back, public_pem)


def test_times_are_normalised_to_utc() -> None:
    plus_one = timezone(timedelta(hours=1))

    record = _record(valid_from=datetime(2025, 1, 1, 1, tzinfo=plus_one))

    assert record.valid_from == T0
    assert record.valid_from.tzinfo is UTC


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _record(valid_from=datetime(2025, 1, 1))


def test_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="valid_until"):
        _record(valid_until=T0)


def test_empty_purposes_are_refused() -> None:
    with pytest.raises(ValueError, match="purposes"):
        _record(purposes=())


def test_purpose_of_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"purposes\[0\]"):
        _record(purposes=(3,))


def test_from_dict_refuses_unknown_keys() -> None:
    data = _record().to_dict() | {"extra": 1}

    with pytest.raises(ValueError, match="unexpected"):
        ConsentRecord.from_dict(data)


def test_parse_time_refuses_naive_text() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse_time("2025-01-01T00:00:00", field="--valid-from")


def test_parse_time_accepts_z_suffix() -> None:
    assert parse_time("2025-01-01T00:00:00Z") == T0
