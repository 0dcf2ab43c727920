"""Shared data types and the seeded row split every data set family uses."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from common.config import DatasetConfig
from common.data.partition import partition_dirichlet, partition_iid
from common.data.preprocess import encode_tabular
from common.data.schema import TabularSchema

__all__ = [
    "DatasetInfo",
    "SiteData",
    "split_indices",
    "split_rows",
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
    """A site's preprocessed training rows and its seeded, stratified held-out split."""

    site: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # Identity of the site's records (all rows, before the split): what its budget is kept for.
    raw_fingerprint: str = ""

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_rows(self) -> int:
        return len(self.y_train) + len(self.y_test)

    @property
    def fingerprint(self) -> str:
        """The raw rows' fingerprint where the loader had them, else the encoded arrays'."""
        return self.raw_fingerprint or arrays_fingerprint(
            np.concatenate([self.x_train, self.x_test]), np.concatenate([self.y_train, self.y_test])
        )


def _combine(row_hashes: np.ndarray) -> str:
    """Order-independent: sort the per-row hashes, then SHA-256 them with the row count."""
    ordered = np.sort(row_hashes.astype(np.uint64))
    digest = hashlib.sha256(f"fedsafe-rows-v1:{len(ordered)}:".encode())
    digest.update(ordered.astype("<u8").tobytes())
    return digest.hexdigest()


def rows_fingerprint(rows: pd.DataFrame, y: np.ndarray) -> str:
    """SHA-256 over the multiset of (row, label): the same records in any order, any name."""
    frame = rows.reset_index(drop=True).copy()
    frame["__label__"] = np.asarray(y)
    return _combine(pd.util.hash_pandas_object(frame, index=False).to_numpy())


def arrays_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """The same, over numeric arrays (one row per example)."""
    flat = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(len(y), -1))
    frame = pd.DataFrame(flat)
    frame["__label__"] = np.asarray(y)
    return _combine(pd.util.hash_pandas_object(frame, index=False).to_numpy())


def _strata(y: np.ndarray) -> np.ndarray | None:
    """Labels to stratify on; classes with a single row are pooled so a split stays possible."""
    classes, counts = np.unique(y, return_counts=True)
    strata = y.copy()
    rare = classes[counts < 2]
    if len(rare):
        strata[np.isin(y, rare)] = -1
        if int((strata == -1).sum()) == 1:  # one lonely row: ride with the largest class
            strata[strata == -1] = classes[counts.argmax()]
    return strata if len(np.unique(strata)) > 1 else None


def split_indices(
    y: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/held-out row indices (plain split when strata are too small)."""
    idx = np.arange(len(y))
    try:
        train, test = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=_strata(y)
        )
    except ValueError:  # too few held-out rows for every stratum: fall back to a plain split
        train, test = train_test_split(idx, test_size=test_fraction, random_state=seed)
    return np.sort(train), np.sort(test)


def split_rows(y: np.ndarray, cfg: DatasetConfig, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """The configured split for one site, salted by the site index so sites differ."""
    return split_indices(y, test_fraction=cfg.test_fraction, seed=cfg.seed + salt)


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
) -> SiteData:
    """Split one site's rows, then encode with statistics of its own training rows only."""
    train, test = split_rows(y, cfg, index)
    x_train, x_test = encode_tabular(rows.reset_index(drop=True), schema, train, test)
    return SiteData(site, x_train, y[train], x_test, y[test], rows_fingerprint(rows, y))
