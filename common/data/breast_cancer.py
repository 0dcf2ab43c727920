"""Breast Cancer Wisconsin (569 x 30) as shipped inside scikit-learn; split into simulated sites."""

from __future__ import annotations

from functools import cache

import numpy as np

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.base import DatasetInfo, SiteData, partition_rows, split_arrays
from fedsafe.common.data.preprocess import scale_by_range
from fedsafe.common.data.registry import register_dataset

__all__ = ["breast_cancer_arrays", "BREAST_CANCER_RANGES"]

# (min, max) of each of the 30 features in scikit-learn's order, as the data set's own
# documentation publishes them ("Summary Statistics" in load_breast_cancer().DESCR). Public
# metadata every site reads the same way: no site fits a scale on its own rows.
BREAST_CANCER_RANGES: tuple[tuple[float, float], ...] = (
    (6.981, 28.11), (9.71, 39.28), (43.79, 188.5), (143.5, 2501.0), (0.053, 0.163),
    (0.019, 0.345), (0.0, 0.427), (0.0, 0.201), (0.106, 0.304), (0.05, 0.097),
    (0.112, 2.873), (0.36, 4.885), (0.757, 21.98), (6.802, 542.2), (0.002, 0.031),
    (0.002, 0.135), (0.0, 0.396), (0.0, 0.053), (0.008, 0.079), (0.001, 0.03),
    (7.93, 36.04), (12.02, 49.54), (50.41, 251.2), (185.2, 4254.0), (0.071, 0.223),
    (0.027, 1.058), (0.0, 1.252), (0.0, 0.291), (0.156, 0.664), (0.055, 0.208),
)  # fmt: skip


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
    train, test = split_arrays(x, y, cfg, index, site)
    lo, hi = (np.asarray(v) for v in zip(*BREAST_CANCER_RANGES, strict=True))
    x_scaled = scale_by_range(x, lo, hi)
    return SiteData(site, x_scaled[train], y[train], x_scaled[test], y[test])


register_dataset("breast_cancer", info=_info, load=_load)
