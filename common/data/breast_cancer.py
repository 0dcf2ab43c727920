"""Breast Cancer Wisconsin (569 x 30) as shipped inside scikit-learn; split into simulated sites."""

from __future__ import annotations

from functools import cache

import numpy as np

from common.config import DatasetConfig
from common.data.base import DatasetInfo, SiteData, partition_rows, split_rows
from common.data.preprocess import standardize
from common.data.registry import register_dataset

__all__ = ["breast_cancer_arrays"]


@cache
def breast_cancer_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Features and labels; label 1 = malignant."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    # scikit-learn codes malignant as 0; flip so the positive class is the disease.
    return bunch.data.astype(np.float64), (1 - bunch.target).astype(np.int64)


def _info(_: DatasetConfig | None) -> DatasetInfo:
    return DatasetInfo("breast_cancer", 30, 2, (), "Breast Cancer Wisconsin (diagnostic), 569 x 30")


def _load(cfg: DatasetConfig, index: int, site: str) -> SiteData:
    x_all, y_all = breast_cancer_arrays()
    part = partition_rows(y_all, cfg)[index]
    x, y = x_all[part], y_all[part]
    train, test = split_rows(y, cfg, index)
    x_train, x_test = standardize(x[train], x[test])
    return SiteData(site, x_train, y[train], x_test, y[test])


register_dataset("breast_cancer", info=_info, load=_load)
