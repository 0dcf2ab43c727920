"""SHA-256 hex digests and ChaCha20 keystreams for secure-aggregation masks."""

from __future__ import annotations

import hashlib

from fedsafe.common.crypto import _primitives as _p

__all__ = ["MIN_SEED_LEN", "sha256_hex", "keystream"]

MIN_SEED_LEN = 16
_KEYSTREAM_INFO = b"fedsafe keystream v1"
# The key is unique per seed (HKDF), so a fixed nonce never repeats a (key, nonce) pair.
_KEYSTREAM_NONCE = bytes(16)


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``: the one digest used for hashes in ledgers and names."""
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return hashlib.sha256(data).hexdigest()


def keystream(seed: bytes, nbytes: int) -> bytes:
    """Deterministic pseudo-random bytes from ``seed`` (ChaCha20, key = HKDF-SHA256 of the seed).

    Both ends of a pairwise secure-aggregation mask expand the same shared seed into the same
    mask; any change to the seed changes the whole stream. Seeds shorter than 16 bytes are
    rejected because they could be guessed.
    """
    if not isinstance(seed, bytes):
        raise TypeError(f"seed must be bytes, got {type(seed).__name__}")
    if len(seed) < MIN_SEED_LEN:
        raise ValueError(f"seed must be at least {MIN_SEED_LEN} bytes, got {len(seed)}")
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be int, got {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    key = _p.hkdf_sha256(seed, salt=None, info=_KEYSTREAM_INFO, length=32)
    return _p.chacha20_keystream(key, _KEYSTREAM_NONCE, nbytes)
