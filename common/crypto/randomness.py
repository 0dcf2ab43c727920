"""Fresh random bytes from the operating system's CSPRNG, stretched with ChaCha20 for speed."""

from __future__ import annotations

import os

import numpy as np

from fedsafe.common.crypto import _primitives as _p
from fedsafe.common.crypto.hashing import keystream

__all__ = ["os_random_bytes", "os_random_words"]

_NONCE = bytes(16)  # one fresh key per call, so a fixed nonce never repeats a (key, nonce)


def os_random_bytes(nbytes: int) -> bytes:
    """`nbytes` unpredictable bytes: a new 256-bit key from os.urandom for every call.

    ChaCha20 keyed by 32 bytes of OS entropy is a CSPRNG (about 3x faster than reading
    os.urandom for the megabytes a DP-SGD step draws); no key is ever reused or stored.
    """
    return keystream(os.urandom(32), nbytes)


def os_random_words(n: int) -> np.ndarray:
    """`n` unpredictable uint64 words in a writable array: ChaCha20 under a fresh OS key per
    call, written in place (about 5x faster than `os_random_bytes` plus a copy at a step's
    megabytes)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    buf = _p.chacha20_keystream_into(os.urandom(32), _NONCE, 8 * n)
    return np.frombuffer(buf, dtype="<u8")
