"""Process memory allocator settings for the DP-SGD hot loop.

A fused DP step allocates and frees the same few megabytes every step (per-example gradients,
patches, a chunk of noise). glibc's default thresholds are dynamic: freed blocks at the top of
the heap are handed back to the kernel and the next step faults them in again, page by page
(200-400 faults per step on the CNN, measured with `getrusage`; about 40% of the step). Fixed
thresholds keep those blocks in the heap. The price is bounded: at most `TRIM_BYTES` of free
memory stays with the process instead of going back to the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["MMAP_BYTES", "TRIM_BYTES", "keep_freed_memory"]

MMAP_BYTES = 32 << 20  # blocks below this come from the heap (glibc's own dynamic maximum)
TRIM_BYTES = 64 << 20  # free heap top kept before any is returned to the kernel
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Fix glibc's heap thresholds for this process (idempotent); False where the C library
    is not glibc (macOS, musl), which then keeps its own behaviour."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)
    )
