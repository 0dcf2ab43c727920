"""End-to-end sealing of site updates to the ServerApp: X25519 + HKDF-SHA256 + AES-256-GCM."""

from __future__ import annotations

import os

from fedsafe.common.crypto import _primitives as _p
from fedsafe.common.errors import IntegrityError

__all__ = ["SEAL_VERSION", "generate_sealing_key", "seal", "open_sealed"]

SEAL_VERSION = 1
_HEADER_LEN = 1 + _p.X25519_KEY_LEN
_TAG_LEN = 16
_INFO = b"fedsafe seal v1"
# One opaque message for every failure (wrong key, tampering, wrong context, bad framing).
_CANNOT_OPEN = "sealed message could not be opened"


def _require_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


def _derive(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> tuple[bytes, bytes]:
    # Salting with both public keys binds the AES key to this sender/recipient pair.
    okm = _p.hkdf_sha256(shared, salt=ephemeral_public + recipient_public, info=_INFO, length=44)
    return okm[:32], okm[32:]


def generate_sealing_key() -> tuple[bytes, bytes]:
    """New X25519 key pair (private PKCS8 PEM, public SubjectPublicKeyInfo PEM) for the server."""
    return _p.x25519_generate()


def seal(recipient_public_pem: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """Encrypt ``plaintext`` so only the holder of the recipient's private key can read it.

    ``context`` (run id, round, site id) is authenticated but not sent: opening with any other
    context fails, so a sealed update cannot be replayed into another round or run.
    Layout: version byte | ephemeral X25519 public key (32) | AES-256-GCM ciphertext + tag.
    """
    return _seal_with_ephemeral(
        recipient_public_pem, plaintext, context=context, ephemeral_private_raw=os.urandom(32)
    )


def _seal_with_ephemeral(
    recipient_public_pem: bytes, plaintext: bytes, *, context: bytes, ephemeral_private_raw: bytes
) -> bytes:
    """``seal`` with a caller-chosen ephemeral key; only known-answer tests may call this."""
    _require_bytes("plaintext", plaintext)
    _require_bytes("context", context)
    recipient_public = _p.x25519_public_raw(recipient_public_pem, "recipient_public_pem")
    ephemeral_public = _p.x25519_public_from_private_raw(ephemeral_private_raw)
    shared = _p.x25519_exchange(ephemeral_private_raw, recipient_public, error=_CANNOT_OPEN)
    key, nonce = _derive(shared, ephemeral_public, recipient_public)
    header = bytes([SEAL_VERSION]) + ephemeral_public
    return header + _p.aes256gcm_encrypt(key, nonce, plaintext, header + context)


def open_sealed(recipient_private_pem: bytes, blob: bytes, *, context: bytes) -> bytes:
    """Decrypt a ``seal`` blob, or raise IntegrityError if anything about it is wrong.

    Wrong key, any flipped byte, another ``context``, truncation and unknown versions all
    raise the same opaque IntegrityError; a malformed private key is a ValueError.
    """
    _require_bytes("blob", blob)
    _require_bytes("context", context)
    private_raw = _p.x25519_private_raw(recipient_private_pem, "recipient_private_pem")
    if len(blob) < _HEADER_LEN + _TAG_LEN or blob[0] != SEAL_VERSION:
        raise IntegrityError(_CANNOT_OPEN)
    header, ciphertext = blob[:_HEADER_LEN], blob[_HEADER_LEN:]
    ephemeral_public = header[1:]
    recipient_public = _p.x25519_public_from_private_raw(private_raw)
    shared = _p.x25519_exchange(private_raw, ephemeral_public, error=_CANNOT_OPEN)
    key, nonce = _derive(shared, ephemeral_public, recipient_public)
    return _p.aes256gcm_decrypt(key, nonce, ciphertext, header + context, error=_CANNOT_OPEN)
