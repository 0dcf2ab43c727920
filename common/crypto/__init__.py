"""fedsafe's cryptographic recipes: sign/verify, seal/open, hashing and mask keystreams."""

from __future__ import annotations

from common.crypto.hashing import keystream, sha256_hex
from common.crypto.sealing import generate_sealing_key, open_sealed, seal
from common.crypto.signing import generate_signing_key, public_key_fingerprint, sign, verify

__all__ = [
    "generate_signing_key",
    "sign",
    "verify",
    "public_key_fingerprint",
    "generate_sealing_key",
    "seal",
    "open_sealed",
    "sha256_hex",
    "keystream",
]
