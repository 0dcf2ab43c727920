"""Shared data types, record fingerprints and the per-record split every data set family uses."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.partition import partition_dirichlet, partition_iid
from fedsafe.common.data.preprocess import encode_tabular
from fedsafe.common.data.schema import TabularSchema
from fedsafe.common.data.split import array_record_hashes, hash_split, record_hashes

__all__ = [
    "DatasetInfo",
    "SiteData",
    "split_arrays",
    "split_frame",
    "partition_rows",
    "tabular_site",
    "rows_fingerprint",
    "arrays_fingerprint",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What the server may know about a data set: its shape, never its rows.

    `input_shape` is the shape of one example as the model sees it: `(n_features,)` for
    tabular data, `(channels, height, width)` for images; `n_features` is its product.
    """

    name: str
    n_features: int
    n_classes: int
    natural_sites: tuple[str, ...]
    description: str
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.input_shape:
            object.__setattr__(self, "input_shape", (self.n_features,))
        if math.prod(self.input_shape) != self.n_features:
            raise ValueError(
                f"DatasetInfo {self.name!r}: input_shape {self.input_shape} does not hold "
                f"n_features={self.n_features} values"
            )


@dataclass(frozen=True)
class SiteData:
    """A site's encoded training rows and its held-out rows (split record by record)."""

    site: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # Content hashes of the site's raw records (all rows, before the split), where the loader
    # had raw rows: what its budget is kept for. Else derived from the arrays.
    raw_hashes: np.ndarray | None = None
    # The encoded features' names (tabular data): they order the columns of `overlap_hashes`.
    feature_names: tuple[str, ...] = ()
    # `overlap_hashes` of the records before a fixed feature transform (scattering): the same
    # images encoded another way are the same records, so they share one budget.
    pre_feature_hashes: np.ndarray | None = None

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_rows(self) -> int:
        return len(self.y_train) + len(self.y_test)

    @cached_property
    def record_hashes(self) -> np.ndarray:
        """One 64-bit content hash per record (raw rows where known, else encoded arrays)."""
        if self.raw_hashes is not None:
            return self.raw_hashes
        x = np.concatenate([self.x_train, self.x_test])
        y = np.concatenate([self.y_train, self.y_test])
        flat = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(len(y), -1))
        return record_hashes(pd.DataFrame(flat), y)

    @cached_property
    def overlap_hashes(self) -> np.ndarray:
        """One hash per record of what training sees (encoded features and label), canonical:
        columns in feature-name order, -0.0 as 0.0. Two files whose records encode alike
        (columns reordered, -0 for 0, values clipped to the same bound) share these hashes,
        so a re-exported or re-typed copy of a data set cannot pass as a new one."""
        if self.pre_feature_hashes is not None:
            return self.pre_feature_hashes
        x = np.concatenate([self.x_train, self.x_test])
        y = np.concatenate([self.y_train, self.y_test])
        flat = np.asarray(x, dtype=np.float64).reshape(len(y), -1) + 0.0
        if self.feature_names and len(self.feature_names) == flat.shape[1]:
            flat = flat[:, np.argsort(np.asarray(self.feature_names))]
        return array_record_hashes(np.ascontiguousarray(flat), y)

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the multiset of records: the identity the site's budget is kept for."""
        return _combine(self.record_hashes)


def _combine(row_hashes: np.ndarray) -> str:
    """Order-independent: sort the per-row hashes, then SHA-256 them with the row count."""
    ordered = np.sort(row_hashes.astype(np.uint64))
    digest = hashlib.sha256(f"fedsafe-rows-v1:{len(ordered)}:".encode())
    digest.update(ordered.astype("<u8").tobytes())
    return digest.hexdigest()


def rows_fingerprint(rows: pd.DataFrame, y: np.ndarray) -> str:
    """SHA-256 over the multiset of (row, label): the same records in any order, any name."""
    return _combine(record_hashes(rows, y))


def arrays_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """The same, over numeric arrays (one row per example)."""
    flat = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(len(y), -1))
    return _combine(record_hashes(pd.DataFrame(flat), y))


def split_frame(
    rows: pd.DataFrame, y: np.ndarray, cfg: DatasetConfig, salt: int, site: str
) -> tuple[np.ndarray, np.ndarray]:
    """The configured per-record split of one site's rows (keyed by seed + site index)."""
    return hash_split(
        record_hashes(rows, y), test_fraction=cfg.test_fraction, seed=cfg.seed + salt, site=site
    )


def split_arrays(
    x: np.ndarray, y: np.ndarray, cfg: DatasetConfig, salt: int, site: str
) -> tuple[np.ndarray, np.ndarray]:
    """The same for numeric arrays (images, pre-encoded features)."""
    return hash_split(
        array_record_hashes(x, y), test_fraction=cfg.test_fraction, seed=cfg.seed + salt, site=site
    )


def partition_rows(y: np.ndarray, cfg: DatasetConfig) -> list[np.ndarray]:
    """Rows of each simulated site of a pooled set, by the configured partitioner."""
    if cfg.partition == "iid":
        return partition_iid(len(y), cfg.num_sites, seed=cfg.seed)
    return partition_dirichlet(y, cfg.num_sites, alpha=cfg.alpha, seed=cfg.seed)


def tabular_site(
    rows: pd.DataFrame,
    y: np.ndarray,
    schema: TabularSchema,
    cfg: DatasetConfig,
    index: int,
    site: str,
    *,
    split: tuple[np.ndarray, np.ndarray] | None = None,
) -> SiteData:
    """Split one site's rows record by record, then encode each record by the dictionary.

    `split` is a protocol's own fixed split (FLamby's), given as row positions; by default the
    split is per record, keyed by the config's seed and the site."""
    train, test = split if split is not None else split_frame(rows, y, cfg, index, site)
    x_train, x_test = encode_tabular(rows.reset_index(drop=True), schema, train, test)
    return SiteData(
        site, x_train, y[train], x_test, y[test], record_hashes(rows, y), schema.feature_names
    )
