"""Consent record schema for site and server: exactly what a site signs to grant or withdraw."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fedsafe.common.crypto import public_key_fingerprint, sign, verify
from fedsafe.common.errors import IntegrityError
from fedsafe.common.ledger.records import canonical_bytes, format_time

__all__ = [
    "RECORD_KEYS",
    "withdrawal_to_dict",
    "withdrawal_from_dict",
    "CONSENT_DOMAIN",
    "WITHDRAWAL_DOMAIN",
    "ConsentRecord",
    "SignedConsent",
    "Withdrawal",
    "new_record_id",
    "parse_time",
    "signed_bytes",
    "sign_consent",
    "verify_consent",
    "withdrawal_bytes",
    "sign_withdrawal",
    "verify_withdrawal",
]

# Distinct domain tags: a grant signature can never be replayed as a withdrawal (or as any
# other fedsafe signature such as an attestation), because the signed bytes differ in prefix.
CONSENT_DOMAIN = b"fedsafe-consent-v1\n"
WITHDRAWAL_DOMAIN = b"fedsafe-consent-withdrawal-v1\n"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
RECORD_KEYS = (
    "record_id",
    "site",
    "dataset",
    "purposes",
    "legal_basis",
    "data_categories",
    "jurisdiction",
    "valid_from",
    "valid_until",
    "granted_at",
)


def new_record_id() -> str:
    """A fresh random consent id; random so two sites never collide without coordinating."""
    return f"c-{uuid.uuid4().hex[:16]}"


def parse_time(text: str, *, field: str = "time") -> datetime:
    """Parse an ISO-8601 time with an explicit offset (``Z`` allowed) into an aware UTC datetime.

    Naive times are refused: a consent window that shifts with the reader's time zone is not a
    window anyone agreed to.
    """
    if not isinstance(text, str):
        raise TypeError(f"{field} must be an ISO-8601 str, got {type(text).__name__}")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{field}: {text!r} is not an ISO-8601 time (e.g. 2025-01-01T00:00:00Z)"
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}: {text!r} has no time zone; add Z or an offset such as +01:00")
    return value.astimezone(UTC)


def _utc(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (naive datetimes are ambiguous)")
    return value.astimezone(UTC)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


def _texts(name: str, value: object) -> tuple[str, ...]:
    # Lists are accepted (YAML and JSON produce them) and frozen into tuples.
    if not isinstance(value, tuple | list):
        raise TypeError(f"{name} must be a tuple of str, got {type(value).__name__}")
    items = tuple(_text(f"{name}[{i}]", item) for i, item in enumerate(value))
    if not items:
        raise ValueError(f"{name} must name at least one entry")
    return items


@dataclass(frozen=True)
class ConsentRecord:
    """One site's grant: which dataset may be used, for what, on what legal basis, and when."""

    site: str
    dataset: str
    purposes: tuple[str, ...]
    legal_basis: str
    data_categories: tuple[str, ...]
    jurisdiction: str
    valid_from: datetime
    valid_until: datetime | None
    granted_at: datetime
    record_id: str

    def __post_init__(self) -> None:
        for name in ("site", "dataset", "legal_basis", "jurisdiction", "record_id"):
            _text(name, getattr(self, name))
        object.__setattr__(self, "purposes", _texts("purposes", self.purposes))
        object.__setattr__(self, "data_categories", _texts("data_categories", self.data_categories))
        object.__setattr__(self, "valid_from", _utc("valid_from", self.valid_from))
        object.__setattr__(self, "granted_at", _utc("granted_at", self.granted_at))
        if self.valid_until is not None:
            until = _utc("valid_until", self.valid_until)
            if until <= self.valid_from:
                raise ValueError(
                    f"valid_until ({format_time(until)}) must be after valid_from "
                    f"({format_time(self.valid_from)})"
                )
            object.__setattr__(self, "valid_until", until)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; its canonical bytes (with the domain tag) are what is signed."""
        return {
            "record_id": self.record_id,
            "site": self.site,
            "dataset": self.dataset,
            "purposes": list(self.purposes),
            "legal_basis": self.legal_basis,
            "data_categories": list(self.data_categories),
            "jurisdiction": self.jurisdiction,
            "valid_from": format_time(self.valid_from),
            "valid_until": None if self.valid_until is None else format_time(self.valid_until),
            "granted_at": format_time(self.granted_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsentRecord:
        """Inverse of ``to_dict``; unknown or missing keys raise so nothing unsigned slips in."""
        keys = set(data)
        if keys != set(RECORD_KEYS):
            missing = sorted(set(RECORD_KEYS) - keys)
            extra = sorted(keys - set(RECORD_KEYS))
            raise ValueError(f"consent record keys: missing {missing}, unexpected {extra}")
        until = data["valid_until"]
        return cls(
            site=data["site"],
            dataset=data["dataset"],
            purposes=tuple(data["purposes"]),
            legal_basis=data["legal_basis"],
            data_categories=tuple(data["data_categories"]),
            jurisdiction=data["jurisdiction"],
            valid_from=parse_time(data["valid_from"], field="valid_from"),
            valid_until=None if until is None else parse_time(until, field="valid_until"),
            granted_at=parse_time(data["granted_at"], field="granted_at"),
            record_id=data["record_id"],
        )


@dataclass(frozen=True)
class SignedConsent:
    """A record, the site's signature over ``signed_bytes(record)`` and the key fingerprint."""

    record: ConsentRecord
    signature: bytes
    signer: str

    def to_dict(self) -> dict[str, Any]:
        """Wire form: the record, the signature in hex and the signer fingerprint."""
        return {
            "record": self.record.to_dict(),
            "signature": self.signature.hex(),
            "signer": self.signer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignedConsent:
        """Inverse of ``to_dict``; does not verify (call ``verify_consent``)."""
        return cls(
            ConsentRecord.from_dict(data["record"]),
            bytes.fromhex(data["signature"]),
            _text("signer", data["signer"]),
        )


@dataclass(frozen=True)
class Withdrawal:
    """A site's signed statement that consent ``record_id`` ends at ``withdrawn_at``."""

    record_id: str
    site: str
    withdrawn_at: datetime
    signature: bytes

    def __post_init__(self) -> None:
        _text("record_id", self.record_id)
        _text("site", self.site)
        object.__setattr__(self, "withdrawn_at", _utc("withdrawn_at", self.withdrawn_at))
        if not isinstance(self.signature, bytes):
            raise TypeError(f"signature must be bytes, got {type(self.signature).__name__}")


def signed_bytes(record: ConsentRecord) -> bytes:
    """Domain tag + canonical JSON of the record: the exact bytes a site signs to grant."""
    if not isinstance(record, ConsentRecord):
        raise TypeError(f"record must be ConsentRecord, got {type(record).__name__}")
    return CONSENT_DOMAIN + canonical_bytes(record.to_dict())


def sign_consent(
    record: ConsentRecord, site_private_pem: bytes, *, site_public_pem: bytes
) -> SignedConsent:
    """Sign a grant with the site's Ed25519 key.

    The public key is required because the crypto recipes cannot derive it from the private
    one; the fresh signature is checked against it, so a mismatched key pair fails here
    (ValueError) rather than at the server.
    """
    signature = sign(site_private_pem, signed_bytes(record))
    try:
        verify(site_public_pem, signed_bytes(record), signature)
    except IntegrityError:
        raise ValueError(
            f"site '{record.site}': the public key does not match the private signing key"
        ) from None
    return SignedConsent(record, signature, public_key_fingerprint(site_public_pem))


def verify_consent(signed: SignedConsent, site_public_pem: bytes) -> None:
    """Return only if the site's key signed exactly this record; otherwise raise IntegrityError."""
    if not isinstance(signed, SignedConsent):
        raise TypeError(f"signed must be SignedConsent, got {type(signed).__name__}")
    if signed.signer != public_key_fingerprint(site_public_pem):
        raise IntegrityError("signature does not verify")
    try:
        verify(site_public_pem, signed_bytes(signed.record), signed.signature)
    except IntegrityError:
        raise IntegrityError("signature does not verify") from None


def withdrawal_bytes(record_id: str, site: str, withdrawn_at: datetime) -> bytes:
    """Domain tag + canonical JSON of (record_id, site, withdrawn_at): what a site signs."""
    body = {
        "record_id": _text("record_id", record_id),
        "site": _text("site", site),
        "withdrawn_at": format_time(_utc("withdrawn_at", withdrawn_at)),
    }
    return WITHDRAWAL_DOMAIN + canonical_bytes(body)


def sign_withdrawal(
    *, record_id: str, site: str, withdrawn_at: datetime, site_private_pem: bytes
) -> Withdrawal:
    """Sign a withdrawal with the site's key; only the site can end what it agreed to."""
    signature = sign(site_private_pem, withdrawal_bytes(record_id, site, withdrawn_at))
    return Withdrawal(record_id, site, withdrawn_at, signature)


def verify_withdrawal(withdrawal: Withdrawal, site_public_pem: bytes) -> None:
    """Return only if the site's key signed this withdrawal; otherwise raise IntegrityError."""
    if not isinstance(withdrawal, Withdrawal):
        raise TypeError(f"withdrawal must be Withdrawal, got {type(withdrawal).__name__}")
    message = withdrawal_bytes(withdrawal.record_id, withdrawal.site, withdrawal.withdrawn_at)
    try:
        verify(site_public_pem, message, withdrawal.signature)
    except IntegrityError:
        raise IntegrityError("signature does not verify") from None


def withdrawal_to_dict(withdrawal: Withdrawal) -> dict[str, Any]:
    """Wire form of a withdrawal: what the site signed, and the signature in hex."""
    return {
        "record_id": withdrawal.record_id,
        "site": withdrawal.site,
        "withdrawn_at": format_time(withdrawal.withdrawn_at),
        "signature": withdrawal.signature.hex(),
    }


def withdrawal_from_dict(data: Mapping[str, Any]) -> Withdrawal:
    """Parse the wire form; a malformed one raises ValueError (the signature is checked later)."""
    try:
        return Withdrawal(
            _text("record_id", data["record_id"]),
            _text("site", data["site"]),
            parse_time(str(data["withdrawn_at"]), field="withdrawn_at"),
            bytes.fromhex(str(data["signature"])),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"malformed withdrawal: {err}") from None
