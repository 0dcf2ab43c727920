"""Model arrays as one versioned byte string: what a sealed update encrypts."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np

from fedsafe.common.errors import IntegrityError

__all__ = ["pack_arrays", "unpack_arrays", "sealing_context", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_HEADER = struct.Struct(">BI")  # version, length of the JSON index


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Version byte, a JSON index of (name, dtype, shape, size), then raw little-endian bytes."""
    index, chunks = [], []
    for name, value in arrays.items():
        array = np.ascontiguousarray(value)
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        raw = array.tobytes()
        index.append([name, array.dtype.str, list(array.shape), len(raw)])
        chunks.append(raw)
    head = json.dumps(index, separators=(",", ":")).encode()
    return _HEADER.pack(FORMAT_VERSION, len(head)) + head + b"".join(chunks)


def unpack_arrays(blob: bytes) -> dict[str, np.ndarray]:
    """The inverse of pack_arrays; any inconsistency raises IntegrityError (a corrupt update)."""
    try:
        version, head_len = _HEADER.unpack_from(blob, 0)
        if version != FORMAT_VERSION:
            raise ValueError(f"unknown format version {version}")
        offset = _HEADER.size + head_len
        index = json.loads(blob[_HEADER.size : offset])
        arrays: dict[str, np.ndarray] = {}
        for name, dtype, shape, size in index:
            raw = blob[offset : offset + size]
            if len(raw) != size:
                raise ValueError("truncated array data")
            arrays[str(name)] = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
            offset += size
        if offset != len(blob):
            raise ValueError("trailing bytes after the last array")
        return arrays
    except (struct.error, ValueError, TypeError, json.JSONDecodeError) as err:
        raise IntegrityError(f"update is not a well-formed array bundle: {err}") from None


def sealing_context(run_id: str, server_round: int, site: str) -> bytes:
    """What a sealed update is bound to: replaying it into another run, round or site fails."""
    return f"fedsafe-update-v1|run={run_id}|round={server_round}|site={site}".encode()
