"""Ed25519 signatures with a version byte, verified by raising IntegrityError."""

from __future__ import annotations

from fedsafe.common.crypto import _primitives as _p
from fedsafe.common.crypto.hashing import sha256_hex
from fedsafe.common.errors import IntegrityError

__all__ = [
    "SIGNATURE_VERSION",
    "generate_signing_key",
    "sign",
    "verify",
    "public_key_fingerprint",
    "public_key_of",
]

SIGNATURE_VERSION = 1
_SIGNATURE_LEN = 1 + _p.ED25519_SIGNATURE_LEN
# One opaque message for every failure, so an attacker learns nothing about which check failed.
_BAD_SIGNATURE = "signature did not verify"


def _require_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


def generate_signing_key() -> tuple[bytes, bytes]:
    """New Ed25519 key pair as (private PKCS8 PEM, public SubjectPublicKeyInfo PEM)."""
    return _p.ed25519_generate()


def sign(private_pem: bytes, message: bytes) -> bytes:
    """Sign ``message``; returns version byte + 64-byte Ed25519 signature so formats can evolve."""
    _require_bytes("message", message)
    return bytes([SIGNATURE_VERSION]) + _p.ed25519_sign(private_pem, message)


def verify(public_pem: bytes, message: bytes, signature: bytes) -> None:
    """Return only if ``signature`` is valid for ``message``; otherwise raise IntegrityError.

    Raising (never returning a bool) means a forgotten check cannot silently pass.
    A malformed ``public_pem`` is a caller error and raises ValueError.
    """
    _require_bytes("message", message)
    _require_bytes("signature", signature)
    _p.ed25519_public_raw(public_pem)  # key errors are ValueError, before any integrity check
    if len(signature) != _SIGNATURE_LEN or signature[0] != SIGNATURE_VERSION:
        raise IntegrityError(_BAD_SIGNATURE)
    _p.ed25519_verify(public_pem, message, signature[1:], error=_BAD_SIGNATURE)


def public_key_fingerprint(public_pem: bytes) -> str:
    """SHA-256 hex of the raw 32-byte public key: a stable name for a key in logs and ledgers."""
    return sha256_hex(_p.ed25519_public_raw(public_pem))


def public_key_of(private_pem: bytes) -> bytes:
    """The public PEM of an Ed25519 private key: verify your own signatures with no other file."""
    _require_bytes("private_pem", private_pem)
    return _p.ed25519_check_private(private_pem, "private_pem")
