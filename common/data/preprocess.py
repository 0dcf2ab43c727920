"""Per-record encoding from the public data dictionary: no statistic of any row is used.

Each record's features are a function of that record and the dictionary alone, so adding
or removing one record leaves every other record's features unchanged: the DP-SGD
sensitivity stays the clipping norm C (tests/unit/common/data/test_data_record_level.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsafe.common.data.schema import NumericScale, TabularSchema

__all__ = ["encode_tabular", "encode_records", "scale_column", "scale_by_range"]


def scale_column(values: np.ndarray, scale: NumericScale | None) -> np.ndarray:
    """Declared range -> [-1, 1] (NaN stays NaN); no declared range -> asinh(x)."""
    if scale is None:
        return np.arcsinh(values)
    x = values.astype(np.float64, copy=True)
    if scale.outside == "missing":
        x[(x < scale.lo) | (x > scale.hi)] = np.nan
    x = np.clip(x, scale.lo, scale.hi)
    if scale.kind == "log":
        unit = np.log1p(x - scale.lo) / np.log1p(scale.hi - scale.lo)
    else:
        unit = (x - scale.lo) / (scale.hi - scale.lo)
    return 2.0 * unit - 1.0


def scale_by_range(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Each column into [-1, 1] by its declared [lo, hi] (clipped), as float32."""
    unit = (np.clip(x, lo, hi) - lo) / (hi - lo)
    return (2.0 * unit - 1.0).astype(np.float32)


def encode_records(frame: pd.DataFrame, schema: TabularSchema) -> np.ndarray:
    """Scale, flag missing values and one-hot to declared levels, one record at a time.

    Numeric columns: scaled by the declared range; a missing value becomes 0 (the middle
    of the range) and sets its missing-indicator column. Categorical: one-hot over the
    declared levels; a missing or undeclared value is all zeros.
    """
    numeric = frame.loc[:, list(schema.numeric)].apply(pd.to_numeric, errors="coerce")
    raw = numeric.to_numpy(dtype=np.float64)
    scaled = (
        np.stack(
            [scale_column(raw[:, j], schema.scale_of(c)) for j, c in enumerate(schema.numeric)],
            axis=1,
        )
        if schema.numeric
        else np.zeros((len(frame), 0))
    )
    missing = np.isnan(scaled)
    blocks = [np.where(missing, 0.0, scaled), missing.astype(np.float64)]
    for column, levels in schema.categorical:
        col = frame[column].astype("string")
        onehot = np.stack([(col == str(lv)).fillna(False).to_numpy() for lv in levels], axis=1)
        blocks.append(onehot.astype(np.float64))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def encode_tabular(
    frame: pd.DataFrame, schema: TabularSchema, train_idx: np.ndarray, test_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The encoded training and held-out rows (the same per-record encoding for both)."""
    x = encode_records(frame, schema)
    return x[train_idx], x[test_idx]
