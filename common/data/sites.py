"""One site's train/held-out arrays, built from its own rows only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.model_selection import train_test_split

from common.config import DatasetConfig
from common.data.builtin import (
    HEART_SCHEMA,
    HEART_SITES,
    breast_cancer_arrays,
    dataset_info,
    heart_disease_frame,
)
from common.data.partition import partition_dirichlet, partition_iid
from common.data.preprocess import encode_tabular, standardize
from common.errors import DataError

__all__ = ["SiteData", "site_names", "load_site", "load_sites"]


@dataclass(frozen=True)
class SiteData:
    """A site's preprocessed training rows and its seeded, stratified held-out split."""

    site: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_train(self) -> int:
        return len(self.y_train)


def site_names(cfg: DatasetConfig) -> tuple[str, ...]:
    """Site names in partition order: the real hospitals, or site-01..N for a split."""
    info = dataset_info(cfg.name)
    if cfg.partition == "natural":
        return info.natural_sites
    return tuple(f"site-{i + 1:02d}" for i in range(cfg.num_sites))


def _split(y: np.ndarray, cfg: DatasetConfig, salt: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(y))
    counts = np.bincount(y, minlength=2)
    stratify = y if counts.min() >= 2 else None
    train, test = train_test_split(
        idx, test_size=cfg.test_fraction, random_state=cfg.seed + salt, stratify=stratify
    )
    return np.sort(train), np.sort(test)


@cache
def load_site(cfg: DatasetConfig, index: int) -> SiteData:
    """Load site `index`; preprocessing is fitted on that site's training rows alone."""
    names = site_names(cfg)
    if not 0 <= index < len(names):
        raise DataError(f"site index {index} out of range: dataset {cfg.name!r} has {len(names)} sites")
    name = names[index]
    if cfg.name == "heart_disease":
        frame = heart_disease_frame()
        if cfg.partition == "natural":
            rows = frame[frame["dataset"] == HEART_SITES[name]].reset_index(drop=True)
        else:
            y_all = (frame[HEART_SCHEMA.target] > 0).to_numpy(dtype=np.int64)
            rows = frame.iloc[_partition(y_all, cfg)[index]].reset_index(drop=True)
        y = (rows[HEART_SCHEMA.target] > 0).to_numpy(dtype=np.int64)
        train, test = _split(y, cfg, index)
        x_train, x_test = encode_tabular(rows, HEART_SCHEMA, train, test)
    elif cfg.name == "breast_cancer":
        x_all, y_all = breast_cancer_arrays()
        part = _partition(y_all, cfg)[index]
        x, y = x_all[part], y_all[part]
        train, test = _split(y, cfg, index)
        x_train, x_test = standardize(x[train], x[test])
    else:
        dataset_info(cfg.name)  # raises, naming the known data sets
        raise AssertionError("unreachable")
    return SiteData(name, x_train, y[train], x_test, y[test])


def _partition(y: np.ndarray, cfg: DatasetConfig) -> list[np.ndarray]:
    if cfg.partition == "iid":
        return partition_iid(len(y), cfg.num_sites, seed=cfg.seed)
    return partition_dirichlet(y, cfg.num_sites, alpha=cfg.alpha, seed=cfg.seed)


def load_sites(cfg: DatasetConfig) -> list[SiteData]:
    """Every site of a simulated federation, in partition order."""
    return [load_site(cfg, i) for i in range(len(site_names(cfg)))]
