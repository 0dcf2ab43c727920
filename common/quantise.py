"""Compact updates: an update's change from the global model in 8-bit stochastic-rounding codes.

A site quantises after DP-SGD, so this is post-processing of a DP release: no privacy figure
changes. Each tensor's change d = trained - global is sent as integer codes k in [0, 2^b - 1]
with a per-tensor offset and scale (d ~ offset + k * scale), rounded up with probability equal
to the fractional part, so the codes are unbiased: E[offset + k * scale] = d. Randomness comes
from the site (the OS CSPRNG by default), never from the run config.

The coordinator treats the bytes as a hostile peer's: `unpack_quantised` checks the version
byte, the bit width, every name, shape and length against the model it sent, and that each
offset and scale is finite and bounded, before `dequantise` computes anything. Site and
coordinator dequantise with the same float32 arithmetic, so the site attests exactly the
arrays the coordinator will aggregate.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsafe.common.errors import IntegrityError
from fedsafe.common.privacy.randomness import OsRandomness, Randomness
from fedsafe.common.wire import FORMAT_VERSION as FLOAT_FORMAT_VERSION

__all__ = [
    "QUANTISED_FORMAT_VERSION",
    "SUPPORTED_BITS",
    "QuantisedTensor",
    "quantise",
    "dequantise",
    "pack_quantised",
    "unpack_quantised",
    "compact_update",
]

# Shares the first byte's space with wire.FORMAT_VERSION: neither format reads as the other.
QUANTISED_FORMAT_VERSION = 2
assert QUANTISED_FORMAT_VERSION != FLOAT_FORMAT_VERSION
SUPPORTED_BITS = (8,)
_HEADER = struct.Struct(">BBI")  # version, bits, length of the JSON index
_CODE_DTYPE = {8: np.dtype("u1")}
_MAX_INDEX = 1 << 24  # a JSON index longer than 16 MiB is not a model's


@dataclass(frozen=True)
class QuantisedTensor:
    """One tensor's codes and the (offset, scale) that turn them back into its change."""

    codes: np.ndarray
    offset: np.float32
    scale: np.float32


def _levels(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(
            f"update_bits {bits!r} is not quantised; quantised widths: {SUPPORTED_BITS}"
        )
    return (1 << bits) - 1


def quantise(
    trained: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    bits: int = 8,
    rng: Randomness | None = None,
) -> dict[str, QuantisedTensor]:
    """Stochastically round each float32 tensor's change from `reference` to `bits` bits.

    `rng` is the site's randomness (OS CSPRNG unless a test injects one); a non-finite or
    non-float32 tensor raises ValueError, since no grid can hold it.
    """
    levels = _levels(bits)
    rng = rng if rng is not None else OsRandomness()
    out: dict[str, QuantisedTensor] = {}
    for name, value in trained.items():
        value, ref = np.asarray(value), np.asarray(reference[name])
        if value.dtype != np.float32 or ref.dtype != np.float32 or value.shape != ref.shape:
            raise ValueError(f"'{name}': only float32 tensors of the global model's shape")
        delta = value.astype(np.float64) - ref.astype(np.float64)
        if delta.size and not np.isfinite(delta).all():
            raise ValueError(f"'{name}': the update is not finite; nothing to quantise")
        low = np.float32(delta.min()) if delta.size else np.float32(0.0)
        high = np.float32(delta.max()) if delta.size else np.float32(0.0)
        scale = np.float32((float(high) - float(low)) / levels)
        codes = np.zeros(delta.shape, dtype=_CODE_DTYPE[bits])
        if scale > 0:
            exact = (delta - float(low)) / float(scale)
            up = rng.uniform(delta.size).reshape(delta.shape) < (exact - np.floor(exact))
            rounded = np.floor(exact) + up
            codes = np.clip(rounded, 0, levels).astype(_CODE_DTYPE[bits])
        out[name] = QuantisedTensor(codes, low, scale)
    return out


def dequantise(
    update: Mapping[str, QuantisedTensor], reference: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """reference + offset + codes * scale, in float32: the same bits at site and coordinator."""
    out: dict[str, np.ndarray] = {}
    for name, part in update.items():
        change = part.offset + part.codes.astype(np.float32) * part.scale
        out[name] = (np.asarray(reference[name], dtype=np.float32) + change).astype(np.float32)
    return out


def compact_update(
    trained: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    bits: int,
    rng: Randomness | None = None,
) -> tuple[dict[str, np.ndarray], bytes]:
    """A site's compact update: the arrays the coordinator will read (what the site attests)
    and the packed codes it sends."""
    update = quantise(trained, reference, bits=bits, rng=rng)
    return dequantise(update, reference), pack_quantised(update, bits=bits)


def pack_quantised(update: Mapping[str, QuantisedTensor], *, bits: int = 8) -> bytes:
    """Version byte, bit width, a JSON index of (name, dtype, shape, offset, scale), the codes."""
    _levels(bits)
    index, chunks = [], []
    for name, part in update.items():
        codes = np.ascontiguousarray(part.codes, dtype=_CODE_DTYPE[bits])
        index.append(
            [name, codes.dtype.str, list(codes.shape), float(part.offset), float(part.scale)]
        )
        chunks.append(codes.tobytes())
    head = json.dumps(index, separators=(",", ":"), allow_nan=False).encode()
    return _HEADER.pack(QUANTISED_FORMAT_VERSION, bits, len(head)) + head + b"".join(chunks)


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a finite number")


def _bounded(name: str, what: str, value: object, bound: float) -> np.float32:
    """A JSON number as float32, finite and within [-bound, bound] (a huge one is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{name}': {what} is not a number")
    as32 = np.float32(value) if math.isfinite(value) and abs(value) < 3.4e38 else np.float32("inf")
    if not np.isfinite(as32) or abs(float(as32)) > bound:
        raise ValueError(f"'{name}': {what} {value!r} is not finite or outside +-{bound:g}")
    return as32


def _entry(
    entry: object, shapes: Mapping[str, tuple[int, ...]], dtype: np.dtype, levels: int, bound: float
) -> tuple[str, tuple[int, ...], np.float32, np.float32]:
    if not isinstance(entry, list) or len(entry) != 5:
        raise ValueError("an index entry is not [name, dtype, shape, offset, scale]")
    name, code_dtype, shape, offset, scale = entry
    if not isinstance(name, str) or name not in shapes:
        raise ValueError(f"tensor {name!r} is not in the global model")
    if code_dtype != dtype.str:
        raise ValueError(f"'{name}': codes of dtype {code_dtype!r}, expected {dtype.str!r}")
    if not isinstance(shape, list) or tuple(shape) != shapes[name]:
        raise ValueError(f"'{name}': shape {shape!r}, the global model's is {list(shapes[name])}")
    low = _bounded(name, "offset", offset, bound)
    step = _bounded(name, "scale", scale, 2 * bound / levels)
    if step < 0 or abs(float(low) + levels * float(step)) > bound:
        raise ValueError(f"'{name}': scale {scale!r} is negative or reaches past +-{bound:g}")
    return name, shapes[name], low, step


def unpack_quantised(
    blob: bytes, shapes: Mapping[str, tuple[int, ...]], *, bits: int, bound: float
) -> dict[str, QuantisedTensor]:
    """Parse a peer's quantised update against the global model's `shapes`; anything else
    (version, bit width, a name, shape, dtype or length, an offset or scale that is not
    finite or whose range passes +-`bound`) raises IntegrityError and allocates nothing big."""
    try:
        if not isinstance(blob, bytes):
            raise TypeError(f"update is {type(blob).__name__}, not bytes")
        version, width, head_len = _HEADER.unpack_from(blob, 0)
        if version != QUANTISED_FORMAT_VERSION:
            raise ValueError(f"format version {version}, expected {QUANTISED_FORMAT_VERSION}")
        if width != bits:
            raise ValueError(f"{width}-bit codes, this run sends {bits}-bit updates")
        levels, dtype = _levels(bits), _CODE_DTYPE[bits]
        if head_len > min(_MAX_INDEX, len(blob) - _HEADER.size):
            raise ValueError("index length past the end of the update")
        offset = _HEADER.size + head_len
        index = json.loads(blob[_HEADER.size : offset], parse_constant=_no_constant)
        if not isinstance(index, list) or len(index) != len(shapes):
            raise ValueError(f"the index does not list the model's {len(shapes)} tensors")
        update: dict[str, QuantisedTensor] = {}
        for entry in index:
            name, shape, low, step = _entry(entry, shapes, dtype, levels, bound)
            if name in update:
                raise ValueError(f"tensor '{name}' listed twice")
            size = math.prod(shape) * dtype.itemsize
            raw = blob[offset : offset + size]
            if len(raw) != size:
                raise ValueError(f"'{name}': truncated codes")
            update[name] = QuantisedTensor(
                np.frombuffer(raw, dtype=dtype).reshape(shape), low, step
            )
            offset += size
        if offset != len(blob):
            raise ValueError("trailing bytes after the last tensor")
        return update
    except (struct.error, ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IntegrityError(
            f"update is not a well-formed {bits}-bit quantised update: {err}"
        ) from None
