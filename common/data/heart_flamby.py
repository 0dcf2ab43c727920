"""FLamby's Fed-Heart-Disease protocol for the four hospitals, so fedsafe's figures sit beside
FLamby's published ones (du Terrail et al., "FLamby", NeurIPS 2022 Datasets and Benchmarks).

What the protocol fixes, written from its public description and code (not copied):
- columns: slope, ca and thal are dropped (mostly missing outside Cleveland), and so is every
  row still missing a value: 740 of the 920 patients remain;
- split: each hospital on its own, 66% train / 34% test, shuffled with random_state 43 and
  stratified by the binarised label where both classes have more than 2 rows;
- metric: the mean over the four hospitals of each one's test accuracy.
Cleveland 199/104, Hungary 172/89, Switzerland 30/16, VA Long Beach 85/45 (train/test).

The features are then encoded as every fedsafe data set is, from declared ranges and levels
(never from the rows); FLamby feeds the raw values with cp and restecg one-hot, which is the
same information up to a fixed affine map per column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsafe.common.data.schema import TabularSchema

__all__ = ["FLAMBY_COLUMNS", "FLAMBY_SPLIT_SEED", "flamby_rows", "flamby_schema", "flamby_split"]

FLAMBY_COLUMNS = (
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalch",
    "exang",
    "oldpeak",
)
FLAMBY_SPLIT_SEED = 43
_TRAIN_FRACTION = 0.66

_DROPPED = ("slope", "ca", "thal")


def flamby_schema(full: TabularSchema) -> TabularSchema:
    """The hospitals' data dictionary without the columns FLamby drops: the same declared
    levels and clinical ranges (a cholesterol of 0, all of Switzerland, stays "not measured")."""
    return TabularSchema(
        numeric=tuple(c for c in full.numeric if c not in _DROPPED),
        categorical=tuple((c, levels) for c, levels in full.categorical if c not in _DROPPED),
        target=full.target,
        scales=tuple((c, scale) for c, scale in full.scales if c not in _DROPPED),
    )


def flamby_rows(hospital_rows: pd.DataFrame) -> pd.DataFrame:
    """One hospital's rows as FLamby keeps them: the file's order, no row missing a kept value."""
    return hospital_rows.dropna(subset=list(FLAMBY_COLUMNS)).reset_index(drop=True)


def flamby_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FLamby's per-hospital split of rows 0..n-1 (sorted index arrays: train, test)."""
    from sklearn.model_selection import train_test_split  # 0.9 s: only where FLamby's split is used

    n = len(y)
    levels, counts = np.unique(y, return_counts=True)
    stratify = y if len(levels) > 1 and bool((counts > 2).all()) else None
    train, test = train_test_split(
        np.arange(n),
        test_size=1.0 - _TRAIN_FRACTION,
        train_size=_TRAIN_FRACTION,
        random_state=FLAMBY_SPLIT_SEED,
        shuffle=True,
        stratify=stratify,
    )
    return np.sort(train), np.sort(test)
