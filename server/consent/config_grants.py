"""Consent declared in a run's config (simulations): checked by key, signed with the site's key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

from fedsafe.common.consent import (
    RECORD_KEYS,
    ConsentRecord,
    SignedConsent,
    Withdrawal,
    parse_time,
    sign_consent,
    sign_withdrawal,
)
from fedsafe.common.errors import ConfigError

__all__ = ["CONFIG_KEYS", "entry_to_grant", "signed_grants", "signed_withdrawals"]

# A config entry holds a consent record's fields (the site signs its grant time now) and when,
# in a simulation, the site withdraws it.
CONFIG_KEYS = (*(k for k in RECORD_KEYS if k != "granted_at"), "withdraw_at_round")


def _fields(index: int, entry: Any, source: str | None) -> Mapping[str, Any]:
    """The entry as a mapping holding only known consent fields, else ConfigError naming it."""
    where = f"consent[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(where, entry, "a mapping of consent fields", source=source)
    unknown = sorted(set(entry) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}",
            entry[unknown[0]],
            f"one of {', '.join(CONFIG_KEYS)}",
            source=source,
        )
    return entry


def _required(entry: Mapping[str, Any], where: str, key: str, source: str | None) -> Any:
    if entry.get(key) is None:
        raise ConfigError(f"{where}.{key}", None, "a value (required)", source=source)
    return entry[key]


def _when(
    entry: Mapping[str, Any], where: str, key: str, default: datetime | None, source: str | None
) -> datetime | None:
    value = entry.get(key)
    if value is None:
        return default
    if isinstance(value, datetime):
        return value
    try:
        return parse_time(value, field=key)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}.{key}",
            value,
            "ISO-8601 time with zone (e.g. 2025-01-01T00:00:00Z) or null",
            source=source,
        ) from None


def _withdraw_round(entry: Mapping[str, Any], where: str, source: str | None) -> int | None:
    value = entry.get("withdraw_at_round")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(
            f"{where}.withdraw_at_round", value, "a round number >= 1 or null", source=source
        )
    return value


def entry_to_grant(
    index: int,
    raw: Any,
    keys: Mapping[str, tuple[bytes, bytes]],
    *,
    now: datetime,
    dataset: str | None,
    source: str | None,
) -> tuple[SignedConsent, bytes, int | None]:
    """Check one config entry by name and sign it with its site's key."""
    where = f"consent[{index}]"
    entry = _fields(index, raw, source)
    site = _required(entry, where, "site", source)
    if site not in keys:
        raise ConfigError(
            f"{where}.site",
            site,
            f"a site with a signing key (known: {', '.join(sorted(keys))})",
            source=source,
        )
    chosen = entry.get("dataset") or dataset
    if chosen is None:
        raise ConfigError(f"{where}.dataset", None, "a dataset name (required)", source=source)
    round_number = _withdraw_round(entry, where, source)
    valid_from = _when(entry, where, "valid_from", now, source) or now
    valid_until = _when(entry, where, "valid_until", None, source)
    fields = {
        key: _required(entry, where, key, source)
        for key in ("purposes", "legal_basis", "data_categories", "jurisdiction")
    }
    try:
        record = ConsentRecord(
            site=site,
            dataset=chosen,
            purposes=fields["purposes"],
            legal_basis=fields["legal_basis"],
            data_categories=fields["data_categories"],
            jurisdiction=fields["jurisdiction"],
            valid_from=valid_from,
            valid_until=valid_until,
            granted_at=now,
            record_id=entry.get("record_id") or f"cfg-{site}-{index}",
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(where, dict(entry), str(err), source=source) from None
    private_pem, public_pem = keys[site]
    return sign_consent(record, private_pem, site_public_pem=public_pem), public_pem, round_number


def signed_grants(
    entries: Iterable[Mapping[str, Any] | Any],
    keys: Mapping[str, tuple[bytes, bytes]],
    *,
    now: datetime,
    dataset: str | None,
    source: str | None,
) -> list[tuple[SignedConsent, bytes, int | None]]:
    """Every config entry checked and signed: (grant, site public key, withdrawal round)."""
    return [
        entry_to_grant(
            index,
            asdict(raw) if is_dataclass(raw) and not isinstance(raw, type) else raw,
            keys,
            now=now,
            dataset=dataset,
            source=source,
        )
        for index, raw in enumerate(entries)
    ]


def signed_withdrawals(
    site: str,
    record_ids: Sequence[str],
    keys: Mapping[str, tuple[bytes, bytes]],
    *,
    at_time: datetime,
) -> tuple[list[Withdrawal], bytes]:
    """Withdrawals of `record_ids`, signed with the site's key, and the key to verify them."""
    if site not in keys:
        raise ConfigError(
            "keys", site, f"a signing key for every scheduled site (known: {sorted(keys)})"
        )
    private_pem, public_pem = keys[site]
    withdrawals = [
        sign_withdrawal(
            record_id=record_id, site=site, withdrawn_at=at_time, site_private_pem=private_pem
        )
        for record_id in record_ids
    ]
    return withdrawals, public_pem
