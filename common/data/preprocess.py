"""Per-site preprocessing fitted on that site's training rows only: no statistic leaves the site."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from common.data.schema import TabularSchema

__all__ = ["encode_tabular", "standardize"]


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale with the training rows' mean and std; constant columns are only centred."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def encode_tabular(
    frame: pd.DataFrame, schema: TabularSchema, train_idx: np.ndarray, test_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Impute, flag missing values, one-hot to declared levels and scale; fit on train rows.

    Numeric columns: median of the site's training rows (0 after scaling when a site has
    no value at all), plus a missing-indicator column. Categorical: one-hot over the
    declared levels; a missing value is all zeros.
    """
    numeric = frame.loc[:, list(schema.numeric)].apply(pd.to_numeric, errors="coerce")
    missing = numeric.isna().to_numpy(dtype=np.float32)
    values = numeric.to_numpy(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column a site never observed
        medians = np.nan_to_num(np.nanmedian(values[train_idx], axis=0))
    values = np.where(np.isnan(values), medians, values)
    x_num_train, x_num_test = standardize(values[train_idx], values[test_idx])
    blocks_train = [x_num_train, missing[train_idx]]
    blocks_test = [x_num_test, missing[test_idx]]
    for column, levels in schema.categorical:
        col = frame[column].astype("string")
        onehot = np.stack(
            [(col == str(level)).fillna(False).to_numpy() for level in levels], axis=1
        )
        onehot = onehot.astype(np.float32)
        blocks_train.append(onehot[train_idx])
        blocks_test.append(onehot[test_idx])
    return np.concatenate(blocks_train, axis=1), np.concatenate(blocks_test, axis=1)
