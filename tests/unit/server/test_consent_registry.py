"""ConsentRegistry: grant, withdraw and the per-round decision, one negative test per path."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from fedsafe.common.consent import ConsentRecord, SignedConsent, sign_consent, sign_withdrawal
from fedsafe.common.crypto import generate_signing_key
from fedsafe.common.errors import ConfigError, ConsentError, IntegrityError
from fedsafe.server.consent import ConsentDecision, ConsentRegistry

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_signing_key()


@pytest.fixture(scope="module")
def attacker_keys() -> tuple[bytes, bytes]:
    return generate_signing_key()


@pytest.fixture
def registry(tmp_path: Path) -> ConsentRegistry:
    return ConsentRegistry.open(tmp_path / "consent.db")


def _signed(keys: tuple[bytes, bytes], **changes: object) -> SignedConsent:
    record = ConsentRecord(
        site="h1",
        dataset="heart",
        purposes=("training", "evaluation"),
        legal_basis="GDPR Art. 6(1)(e) + 9(2)(j)",
        data_categories=("health",),
        jurisdiction="EU",
        valid_from=T0,
        valid_until=T0 + 30 * DAY,
        granted_at=T0,
        record_id="r-123",
    )
    record = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
    return sign_consent(record, keys[0], site_public_pem=keys[1])


def _decide(
    registry: ConsentRegistry,
    keys: tuple[bytes, bytes],
    *,
    dataset: str = "heart",
    purpose: str = "training",
    at_time: datetime = T0 + DAY,
    jurisdictions: tuple[str, ...] | None = ("EU", "CH"),
) -> ConsentDecision:
    return registry.decide(
        site="h1",
        dataset=dataset,
        purpose=purpose,
        at_time=at_time,
        jurisdictions=jurisdictions,
        site_public_pem=keys[1],
    )


# --- decisions --------------------------------------------------------------------------------


def test_grant_then_decide_allows(registry: ConsentRegistry, keys: tuple[bytes, bytes]) -> None:
    registry.grant(_signed(keys), keys[1])

    decision = _decide(registry, keys)

    assert decision.allowed
    assert decision.record_id == "r-123"
    assert decision.site == "h1"
    assert decision.ledger_payload(3) == {
        "site": "h1",
        "round": 3,
        "decision": "granted",
        "reason": decision.reason,
    }


def test_the_decision_carries_the_signed_legal_basis(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    assert _decide(registry, keys).legal_basis == "GDPR Art. 6(1)(e) + 9(2)(j)"
    expired = _decide(registry, keys, at_time=T0 + 60 * DAY)
    assert not expired.allowed and expired.legal_basis == "GDPR Art. 6(1)(e) + 9(2)(j)"


def test_an_edited_legal_basis_is_never_the_one_recorded(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    """Whoever can write the consent store cannot put a basis of their own on the ledger."""
    registry.grant(_signed(keys), keys[1])
    with registry.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE site_consent_records SET legal_basis = 'planted' WHERE record_id = 'r-123'"
            )
        )
    decision = _decide(registry, keys)
    assert not decision.allowed and decision.code == "invalid_signature"
    assert decision.legal_basis is None


def test_no_jurisdiction_policy_allows_any(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys, jurisdiction="US"), keys[1])

    decision = _decide(registry, keys, jurisdictions=None)

    assert decision.allowed


def test_expired_consent_is_refused(registry: ConsentRegistry, keys: tuple[bytes, bytes]) -> None:
    registry.grant(_signed(keys), keys[1])

    decision = _decide(registry, keys, at_time=T0 + 30 * DAY)  # valid_until is exclusive

    assert not decision.allowed
    assert decision.reason == "consent r-123 expired at 2025-01-31T00:00:00.000000Z"
    assert decision.ledger_payload(1)["decision"] == "refused"


def test_not_yet_valid_consent_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys, valid_from=T0 + 5 * DAY), keys[1])

    decision = _decide(registry, keys, at_time=T0 + 4 * DAY)

    assert not decision.allowed
    assert decision.reason == "consent r-123 not valid until 2025-01-06T00:00:00.000000Z"


def test_withdrawn_before_decision_time_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    withdrawal = sign_withdrawal(
        record_id="r-123", site="h1", withdrawn_at=T0 + 2 * DAY, site_private_pem=keys[0]
    )
    registry.withdraw(withdrawal, keys[1])

    decision = _decide(registry, keys, at_time=T0 + 3 * DAY)

    assert not decision.allowed
    assert decision.reason == "consent r-123 withdrawn at 2025-01-03T00:00:00.000000Z"
    assert decision.ledger_payload(4)["decision"] == "withdrawn"


def test_withdrawn_after_decision_time_still_allows_then(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    withdrawal = sign_withdrawal(
        record_id="r-123", site="h1", withdrawn_at=T0 + 2 * DAY, site_private_pem=keys[0]
    )
    registry.withdraw(withdrawal, keys[1])

    decision = _decide(registry, keys, at_time=T0 + DAY)

    assert decision.allowed


def test_purpose_not_covered_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])

    decision = _decide(registry, keys, purpose="marketing")

    assert not decision.allowed
    assert decision.reason == (
        "consent r-123: purpose 'marketing' not covered (covers: training, evaluation)"
    )


def test_dataset_not_covered_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])

    decision = _decide(registry, keys, dataset="lending_club")

    assert not decision.allowed
    assert decision.record_id is None
    assert decision.reason == "no consent on record for dataset 'lending_club'"


def test_jurisdiction_excluded_by_run_policy_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys, jurisdiction="US"), keys[1])

    decision = _decide(registry, keys, jurisdictions=("EU", "CH"))

    assert not decision.allowed
    assert decision.reason == (
        "consent r-123: jurisdiction 'US' not allowed by the run policy (EU, CH)"
    )


def test_any_valid_record_allows_when_an_older_one_expired(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys, record_id="r-old", valid_until=T0 + DAY), keys[1])
    registry.grant(_signed(keys, record_id="r-new", granted_at=T0 + DAY), keys[1])

    decision = _decide(registry, keys, at_time=T0 + 2 * DAY)

    assert decision.allowed
    assert decision.record_id == "r-new"


def test_naive_decision_time_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    with pytest.raises(ValueError, match="at_time"):
        _decide(registry, keys, at_time=datetime(2025, 1, 2))


# --- tampering and forgery --------------------------------------------------------------------


def test_forged_grant_is_refused_and_nothing_is_stored(
    registry: ConsentRegistry, keys: tuple[bytes, bytes], attacker_keys: tuple[bytes, bytes]
) -> None:
    forged = _signed(attacker_keys)  # the server (or anyone) signing on the site's behalf

    with pytest.raises(IntegrityError, match="site 'h1'"):
        registry.grant(forged, keys[1])

    assert registry.records() == []


def test_grant_with_changed_record_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    signed = _signed(keys)
    widened = dataclasses.replace(
        signed, record=dataclasses.replace(signed.record, valid_until=None)
    )

    with pytest.raises(IntegrityError, match="nothing stored"):
        registry.grant(widened, keys[1])

    assert registry.records() == []


def test_record_tampered_in_database_is_refused_at_decision_time(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    with registry.engine.begin() as conn:
        conn.execute(
            text("UPDATE site_consent_records SET valid_until = :later WHERE record_id = 'r-123'"),
            {"later": "2099-01-01T00:00:00.000000Z"},
        )

    decision = _decide(registry, keys, at_time=T0 + 60 * DAY)

    assert not decision.allowed
    assert decision.reason == "consent r-123: signature does not verify"


def test_record_edited_out_of_shape_is_refused_at_decision_time(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    with registry.engine.begin() as conn:
        conn.execute(text("UPDATE site_consent_records SET purposes = 'not json'"))

    decision = _decide(registry, keys)

    assert not decision.allowed
    assert decision.reason == "consent r-123: signature does not verify"


def test_listing_a_row_edited_out_of_shape_names_the_record(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    with registry.engine.begin() as conn:
        conn.execute(text("UPDATE site_consent_records SET granted_at = 'yesterday'"))

    with pytest.raises(ConsentError, match="consent r-123: stored row is malformed"):
        registry.records()


def test_withdrawal_moved_in_database_is_refused_at_decision_time(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    withdrawal = sign_withdrawal(
        record_id="r-123", site="h1", withdrawn_at=T0 + 2 * DAY, site_private_pem=keys[0]
    )
    registry.withdraw(withdrawal, keys[1])
    with registry.engine.begin() as conn:
        conn.execute(
            text("UPDATE site_consent_withdrawals SET withdrawn_at = '2099-01-01T00:00:00.000000Z'")
        )

    decision = _decide(registry, keys, at_time=T0 + 3 * DAY)

    assert not decision.allowed
    assert decision.reason == "consent r-123: signature does not verify"


def test_key_changed_since_grant_is_refused_at_decision_time(
    registry: ConsentRegistry, keys: tuple[bytes, bytes], attacker_keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])

    decision = _decide(registry, attacker_keys)

    assert not decision.allowed
    assert decision.reason == "consent r-123: signature does not verify"


def test_forged_withdrawal_is_refused_and_nothing_is_stored(
    registry: ConsentRegistry, keys: tuple[bytes, bytes], attacker_keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    forged = sign_withdrawal(
        record_id="r-123", site="h1", withdrawn_at=T0, site_private_pem=attacker_keys[0]
    )

    with pytest.raises(IntegrityError, match="site 'h1'"):
        registry.withdraw(forged, keys[1])

    assert registry.records()[0].withdrawal is None


def test_withdrawal_of_unknown_record_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    withdrawal = sign_withdrawal(
        record_id="r-missing", site="h1", withdrawn_at=T0, site_private_pem=keys[0]
    )

    with pytest.raises(ConsentError, match="r-missing"):
        registry.withdraw(withdrawal, keys[1])


def test_withdrawal_of_another_sites_record_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes], attacker_keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])
    withdrawal = sign_withdrawal(
        record_id="r-123", site="h2", withdrawn_at=T0, site_private_pem=attacker_keys[0]
    )

    with pytest.raises(ConsentError, match="no consent r-123 of site 'h2'"):
        registry.withdraw(withdrawal, attacker_keys[1])


def test_second_withdrawal_is_refused(registry: ConsentRegistry, keys: tuple[bytes, bytes]) -> None:
    registry.grant(_signed(keys), keys[1])
    first = sign_withdrawal(record_id="r-123", site="h1", withdrawn_at=T0, site_private_pem=keys[0])
    later = sign_withdrawal(
        record_id="r-123", site="h1", withdrawn_at=T0 + DAY, site_private_pem=keys[0]
    )
    registry.withdraw(first, keys[1])

    with pytest.raises(ConsentError, match="already withdrawn"):
        registry.withdraw(later, keys[1])


def test_regrant_of_identical_record_is_a_no_op(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    signed = _signed(keys)
    registry.grant(signed, keys[1])

    registry.grant(signed, keys[1])

    assert [e.signed for e in registry.records()] == [signed]


def test_different_record_under_existing_id_is_refused(
    registry: ConsentRegistry, keys: tuple[bytes, bytes]
) -> None:
    registry.grant(_signed(keys), keys[1])

    with pytest.raises(ConsentError, match="already on record"):
        registry.grant(_signed(keys, purposes=("training",)), keys[1])


# --- storage ----------------------------------------------------------------------------------


def test_records_survive_reopening_and_filter_by_site(
    tmp_path: Path, keys: tuple[bytes, bytes], attacker_keys: tuple[bytes, bytes]
) -> None:
    with ConsentRegistry.open(tmp_path) as registry:  # a folder gets consent.db
        registry.grant(_signed(keys), keys[1])
        registry.grant(_signed(attacker_keys, site="b1", record_id="r-b1"), attacker_keys[1])

    with ConsentRegistry.open(tmp_path / "consent.db") as reopened:
        all_sites = [e.signed.record.site for e in reopened.records()]
        only_h1 = [e.signed.record.record_id for e in reopened.records("h1")]

    assert all_sites == ["b1", "h1"]
    assert only_h1 == ["r-123"]


def test_open_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConsentError, match="no consent registry"):
        ConsentRegistry.open(tmp_path / "typo.db", create=False)


# --- simulations ------------------------------------------------------------------------------


def _entries() -> list[dict[str, object]]:
    common = {
        "dataset": "heart",
        "purposes": ["training"],
        "legal_basis": "GDPR Art. 6(1)(e) + 9(2)(j)",
        "data_categories": ["health"],
        "jurisdiction": "EU",
        "valid_from": None,
        "valid_until": None,
    }
    return [
        {"site": "h1", **common, "withdraw_at_round": None},
        {"site": "h2", **common, "withdraw_at_round": 3},
        {"site": "h3", **common, "valid_until": "2025-01-01T00:00:01Z", "withdraw_at_round": None},
    ]


def test_from_config_builds_signed_grants_and_a_withdrawal_schedule() -> None:
    keys = {site: generate_signing_key() for site in ("h1", "h2", "h3")}

    registry, schedule = ConsentRegistry.from_config(_entries(), keys, now=T0)

    assert schedule == {3: ["h2"]}
    at = T0 + DAY
    decisions = {
        site: registry.decide(
            site=site,
            dataset="heart",
            purpose="training",
            at_time=at,
            jurisdictions=("EU",),
            site_public_pem=keys[site][1],
        )
        for site in keys
    }
    assert decisions["h1"].allowed
    assert decisions["h2"].allowed  # withdraw_at_round is not applied at build time
    assert decisions["h3"].reason.endswith("expired at 2025-01-01T00:00:01.000000Z")


def test_scheduled_withdrawal_applies_at_its_round_only() -> None:
    keys = {site: generate_signing_key() for site in ("h1", "h2", "h3")}
    registry, schedule = ConsentRegistry.from_config(_entries(), keys, now=T0)
    round_start = T0 + 2 * DAY

    before = registry.apply_withdrawals(2, schedule, keys, at_time=round_start - DAY)
    applied = registry.apply_withdrawals(3, schedule, keys, at_time=round_start)

    assert before == []
    assert [(w.record_id, w.site) for w in applied] == [("cfg-h2-1", "h2")]
    decision = registry.decide(
        site="h2",
        dataset="heart",
        purpose="training",
        at_time=round_start,
        jurisdictions=None,
        site_public_pem=keys["h2"][1],
    )
    assert decision.reason == "consent cfg-h2-1 withdrawn at 2025-01-03T00:00:00.000000Z"


def test_from_config_names_the_entry_with_an_unknown_site_key() -> None:
    keys = {"h1": generate_signing_key()}

    with pytest.raises(ConfigError, match=r"consent\[1\]\.site"):
        ConsentRegistry.from_config(_entries(), keys, now=T0)


@pytest.mark.parametrize("field", ["valid_from", "valid_until"])
def test_from_config_names_a_bad_time(field: str) -> None:
    keys = {site: generate_signing_key() for site in ("h1", "h2", "h3")}
    entries = _entries()
    entries[0][field] = "next tuesday"

    with pytest.raises(ConfigError) as caught:
        ConsentRegistry.from_config(entries, keys, now=T0)
    assert caught.value.key == f"consent[0].{field}"  # the field itself, not the whole entry
    assert caught.value.value == "next tuesday"
    assert caught.value.allowed.startswith("ISO-8601 time with zone")


def test_from_config_refuses_unknown_keys() -> None:
    keys = {site: generate_signing_key() for site in ("h1", "h2", "h3")}
    entries = _entries()
    entries[0]["purpose"] = "training"

    with pytest.raises(ConfigError, match=r"consent\[0\]\.purpose"):
        ConsentRegistry.from_config(entries, keys, now=T0)


def test_a_record_id_is_the_sites_own_another_site_may_use_the_same_one(
    registry: ConsentRegistry, keys: tuple[bytes, bytes], attacker_keys: tuple[bytes, bytes]
) -> None:
    # A peer registers the victim's (predictable) id first, under its own name and key.
    registry.grant(_signed(attacker_keys, site="h2"), attacker_keys[1])
    registry.grant(_signed(keys), keys[1])
    assert _decide(registry, keys).allowed
    assert {(e.signed.record.site, e.signed.record.record_id) for e in registry.records()} == {
        ("h1", "r-123"),
        ("h2", "r-123"),
    }


def test_a_v1_registry_file_is_carried_over(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    import sqlite3

    from fedsafe.server.consent.store import _record_row

    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE consent_records (record_id VARCHAR(128) PRIMARY KEY, site VARCHAR(128), "
        "dataset VARCHAR(256), purposes TEXT, legal_basis TEXT, data_categories TEXT, "
        "jurisdiction VARCHAR(64), valid_from VARCHAR(32), valid_until VARCHAR(32), "
        "granted_at VARCHAR(32), signature VARCHAR(256), signer VARCHAR(64))"
    )
    row = _record_row(_signed(keys))
    con.execute(
        f"INSERT INTO consent_records ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        list(row.values()),
    )
    con.commit()
    con.close()
    with ConsentRegistry.open(path) as registry:
        assert [e.signed.record.record_id for e in registry.records()] == ["r-123"]
        assert _decide(registry, keys).allowed
