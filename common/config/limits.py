"""The names and bounds every config value is checked against, and the two checks themselves.

One name registry per kind: each kind's names are written once, as the Literal type the config
schema declares; the tuple used in messages and checks is derived from it, and each runtime
registry (data sets, models, accountants, strategies) is tested to hold exactly these names.
They live here so that a config can be checked without importing torch.
"""

from __future__ import annotations

import math
import typing
from typing import Literal

from fedsafe.common.errors import ConfigError

__all__ = [
    "AccountantName",
    "DatasetName",
    "ModelName",
    "StrategyName",
    "DATASETS",
    "MODELS",
    "STRATEGIES",
    "ACCOUNTANTS",
    "NATURAL_SITES",
    "MAX_ROUNDS",
    "MAX_EPSILON",
    "MAX_CAP",
    "MAX_NOISE",
    "MAX_DELTA",
    "MAX_TIMEOUT_S",
]

DatasetName = Literal[
    "heart_disease",
    "breast_cancer",
    "lending_club",
    "credit_data",
    "digits",
    "fashion_mnist",
    "site_files",
]
ModelName = Literal["logreg", "mlp", "cnn", "scatter_linear"]
StrategyName = Literal[
    "fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"
]
AccountantName = Literal["rdp", "prv"]

DATASETS: tuple[DatasetName, ...] = typing.get_args(DatasetName)
MODELS: tuple[ModelName, ...] = typing.get_args(ModelName)
STRATEGIES: tuple[StrategyName, ...] = typing.get_args(StrategyName)
ACCOUNTANTS: tuple[AccountantName, ...] = typing.get_args(AccountantName)
# Data sets whose rows already belong to real sites (hospitals, regional banks, site files).
NATURAL_SITES: tuple[DatasetName, ...] = ("heart_disease", "lending_club", "site_files")


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _within(key: str, value: float, low: float, high: float, *, low_open: bool = True) -> None:
    """A finite number in (low, high] (or [low, high]): infinities and NaN never pass."""
    above = value > low if low_open else value >= low
    ok = math.isfinite(value) and above and value <= high
    _check(ok, key, value, f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}]")


# Upper bounds: far beyond any sensible run, low enough that nothing hangs or overflows later.
MAX_ROUNDS = 1_000
MAX_EPSILON = 1_000.0
MAX_CAP = 1e9  # a cap this high means "no cap" (benchmarks); infinity fails inside the site
MAX_NOISE = 100.0
MAX_DELTA = 0.1
MAX_TIMEOUT_S = 7 * 24 * 3600.0
