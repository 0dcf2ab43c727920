"""The site keeps its last sent update, so a replayed round (server resumed) costs no new privacy.

Re-sending the same output is post-processing: no new release, no new charge. Training again
would be a new release, which the site refuses instead.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsafe.common.storage import write_atomic
from fedsafe.common.wire import pack_arrays, unpack_arrays

__all__ = ["CachedUpdate", "save_update", "load_update"]

_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class CachedUpdate:
    """The update a site sent for one round, and the global model digest it was trained on."""

    input_digest: str
    state: dict[str, torch.Tensor]
    metrics: dict[str, float]
    attestation: dict[str, Any]
    encoded: bytes | None = None  # the 8-bit codes sent, when the run sends compact updates


def _path(folder: Path, run_id: str, server_round: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return folder / "updates" / f"{safe}.round-{server_round}.bin"


def save_update(
    folder: Path,
    run_id: str,
    server_round: int,
    *,
    input_digest: str,
    state: dict[str, torch.Tensor],
    metrics: dict[str, float],
    attestation: dict[str, Any],
    encoded: bytes | None = None,
) -> Path:
    """Write atomically, then drop this run's older rounds: only the last one can be replayed."""
    path = _path(folder, run_id, server_round)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = json.dumps(
        {
            "input_digest": input_digest,
            "metrics": metrics,
            "attestation": {
                "payload": attestation["payload"],
                "signature": bytes(attestation["signature"]).hex(),
            },
            "encoded_bytes": None if encoded is None else len(encoded),
        }
    ).encode()
    body = pack_arrays({k: v.numpy() for k, v in state.items()}) + (encoded or b"")
    write_atomic(path, _LEN.pack(len(head)) + head + body)  # 0600: a noised update, not public
    for older in path.parent.glob(f"{path.name.split('.round-')[0]}.round-*.bin"):
        if older != path:
            older.unlink(missing_ok=True)
    return path


def load_update(folder: Path, run_id: str, server_round: int) -> CachedUpdate | None:
    path = _path(folder, run_id, server_round)
    if not path.exists():
        return None
    blob = path.read_bytes()
    (length,) = _LEN.unpack_from(blob, 0)
    head = json.loads(blob[_LEN.size : _LEN.size + length])
    tail = int(head.get("encoded_bytes") or 0)  # the codes after the arrays, if any
    end = len(blob) - tail
    arrays = unpack_arrays(blob[_LEN.size + length : end])
    attestation = head["attestation"]
    return CachedUpdate(
        input_digest=head["input_digest"],
        state={k: torch.from_numpy(np.array(v)) for k, v in arrays.items()},
        metrics=head["metrics"],
        attestation={
            "payload": attestation["payload"],
            "signature": bytes.fromhex(attestation["signature"]),
        },
        encoded=blob[end:] if tail else None,
    )
