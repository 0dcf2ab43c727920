"""fedsafe's cryptographic recipes: sign/verify, seal/open, hashing and mask keystreams."""

from __future__ import annotations

from fedsafe.common.crypto.hashing import keystream, sha256_hex
from fedsafe.common.crypto.randomness import os_random_bytes, os_random_words
from fedsafe.common.crypto.sealing import generate_sealing_key, open_sealed, seal
from fedsafe.common.crypto.signing import (
    generate_signing_key,
    public_key_fingerprint,
    public_key_of,
    sign,
    verify,
)

__all__ = [
    "generate_signing_key",
    "sign",
    "verify",
    "public_key_fingerprint",
    "public_key_of",
    "generate_sealing_key",
    "seal",
    "open_sealed",
    "sha256_hex",
    "keystream",
    "os_random_bytes",
    "os_random_words",
]
