"""Client-certificate recipes for mTLS: who a peer certificate names, and whether the CA vouches."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsafe.common.errors import IntegrityError

__all__ = [
    "CertificateIdentity",
    "certificate_identity",
    "certificate_fingerprint",
    "check_client_certificate",
    "pem_to_der",
]

_PREFIX = "sha256:"


@dataclass(frozen=True)
class CertificateIdentity:
    """What a policy can match a certificate on: its common name and its DER fingerprint."""

    common_name: str | None
    subject: str
    fingerprint: str  # "sha256:" + lower-case hex of the DER bytes
    not_before: datetime
    not_after: datetime

    def describe(self) -> str:
        """Short form for messages and ledger entries: the subject and the fingerprint prefix."""
        return f"{self.subject} ({self.fingerprint[: len(_PREFIX) + 16]}...)"


def certificate_fingerprint(der: bytes) -> str:
    """``sha256:<hex>`` of the DER certificate; what `fedsafe certs operator` prints to pin."""
    if not isinstance(der, bytes):
        raise TypeError(f"der must be bytes, got {type(der).__name__}")
    return _PREFIX + hashlib.sha256(der).hexdigest()


def pem_to_der(pem: bytes) -> bytes:
    """The DER bytes of the first PEM certificate in ``pem`` (ValueError when there is none)."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"not a PEM X.509 certificate: {err}") from None
    _load_der(der)
    return der


def _load_der(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise ValueError(f"not a DER X.509 certificate: {err}") from None


def certificate_identity(der: bytes) -> CertificateIdentity:
    """Read a peer certificate's subject, common name, validity and fingerprint (no trust check)."""
    cert = _load_der(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else None
    return CertificateIdentity(
        common_name=common_name,
        subject=cert.subject.rfc4514_string(),
        fingerprint=certificate_fingerprint(der),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def check_client_certificate(
    der: bytes, ca_pem: bytes, *, at_time: datetime | None = None
) -> CertificateIdentity:
    """Raise IntegrityError unless the CA signed ``der`` for clientAuth and it is valid now.

    TLS already checked the chain at the handshake; this repeats it against the CA the
    policy names, so a context loaded with other roots cannot widen who gets in.
    """
    now = at_time or datetime.now(UTC)
    cert = _load_der(der)
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as err:
        raise ValueError(f"CA certificate is not a PEM X.509 certificate: {err}") from None
    identity = certificate_identity(der)
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as err:
        raise IntegrityError(
            f"certificate {identity.describe()} is not issued by the federation CA"
        ) from err
    if not identity.not_before <= now <= identity.not_after:
        raise IntegrityError(
            f"certificate {identity.describe()} is not valid at {now:%Y-%m-%dT%H:%M:%SZ} "
            f"(valid {identity.not_before:%Y-%m-%d} to {identity.not_after:%Y-%m-%d})"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise IntegrityError(f"certificate {identity.describe()} is not a client certificate")
    return identity
