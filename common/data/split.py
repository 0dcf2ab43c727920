"""Train / held-out split decided record by record, by a keyed hash of the record itself.

A seeded shuffle or a stratified split depends on every row: one added record moves other
records between training and held-out, so the training sets of two neighbouring data sets
differ in many records and DP-SGD's guarantee (one record changes the sum by at most C)
does not hold for the site's data. Here a record is held out iff a keyed BLAKE2b hash of
its own content falls below `test_fraction`, so each record's side depends only on itself.
A deployed site keys the split with a secret derived from its own signing key
(`client.site_config`): the coordinator cannot compute which side a record lands on, so it
cannot choose a seed that puts one target record alone on the training side. A simulation
keys it with the run's seed and the site's index (one operator plays every party).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from fedsafe.common.errors import DataError

__all__ = ["record_hashes", "array_record_hashes", "hash_split", "split_key"]

_DOMAIN = b"fedsafe-split-v1"


def record_hashes(rows: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """A 64-bit content hash per (row, label): equal records hash equally, in any order."""
    frame = rows.reset_index(drop=True).copy()
    frame["__label__"] = np.asarray(y)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy().astype(np.uint64)


def array_record_hashes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The same for numeric arrays (one example per leading index), from their bytes."""
    flat = np.ascontiguousarray(np.asarray(x).reshape(len(y), -1))
    labels = np.asarray(y, dtype="<i8")
    out = np.empty(len(y), dtype=np.uint64)
    for i in range(len(y)):
        digest = hashlib.blake2b(flat[i].tobytes(), digest_size=8)
        digest.update(labels[i].tobytes())
        out[i] = int.from_bytes(digest.digest(), "little")
    return out


def split_key(seed: int) -> bytes:
    """The split key of a simulation: public, from the run's seed (and the site's index)."""
    return hashlib.sha256(_DOMAIN + f":{int(seed)}".encode()).digest()


def hash_split(
    hashes: np.ndarray,
    *,
    test_fraction: float,
    seed: int = 0,
    key: bytes | None = None,
    site: str = "site",
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, held-out) indices: record i is held out iff its keyed hash < fraction.

    `key` (32 bytes, a deployed site's secret) overrides `seed`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"{site}: test_fraction must be in (0, 1), got {test_fraction}")
    if key is None:
        key = split_key(seed)
    elif not isinstance(key, bytes) or len(key) != 32:
        raise ValueError("split key must be 32 bytes")
    threshold = int(test_fraction * 2**64)
    held_out = np.empty(len(hashes), dtype=bool)
    for i, h in enumerate(np.asarray(hashes, dtype="<u8")):
        digest = hashlib.blake2b(h.tobytes(), digest_size=8, key=key).digest()
        held_out[i] = int.from_bytes(digest, "little") < threshold
    train, test = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    if len(train) == 0:
        raise DataError(
            f"{site}: no row is left to train on after the held-out split "
            f"(test_fraction {test_fraction}); lower dataset.test_fraction"
        )
    return train, test
