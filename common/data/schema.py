"""A tabular data dictionary: public column metadata every site agrees on, never statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["NumericScale", "TabularSchema", "SCALE_KINDS", "OUTSIDE_RULES"]

SCALE_KINDS = ("linear", "log")
OUTSIDE_RULES = ("clip", "missing")
# Declared bounds stay where a span hi - lo is finite and scaling keeps its precision.
MAX_BOUND = 1e15
ScaleKind = Literal["linear", "log"]
OutsideRule = Literal["clip", "missing"]


@dataclass(frozen=True)
class NumericScale:
    """Declared bounds for one numeric column, from domain knowledge, never fitted on rows.

    A value is mapped into [-1, 1] by the declared range alone: `linear` scales x itself,
    `log` scales log1p(x - lo) (for heavy-tailed amounts). A value outside [lo, hi] is
    clipped, or treated as missing where the dictionary says such a value is not a
    measurement (a cholesterol of 0 means "not taken"). Because nothing is estimated from
    the site's rows, adding or removing one record never moves another record's features.
    """

    lo: float
    hi: float
    kind: ScaleKind = "linear"
    outside: OutsideRule = "clip"

    def __post_init__(self) -> None:
        bounded = all(math.isfinite(v) and abs(v) <= MAX_BOUND for v in (self.lo, self.hi))
        if not (bounded and self.lo < self.hi):
            raise ValueError(
                f"NumericScale: need lo < hi within +-{MAX_BOUND:g}, got [{self.lo}, {self.hi}]"
            )
        if self.kind not in SCALE_KINDS:
            raise ValueError(f"NumericScale: kind {self.kind!r}; allowed: {SCALE_KINDS}")
        if self.outside not in OUTSIDE_RULES:
            raise ValueError(f"NumericScale: outside {self.outside!r}; allowed: {OUTSIDE_RULES}")


@dataclass(frozen=True)
class TabularSchema:
    """Columns, their kinds, declared categorical levels and declared numeric scales.

    The levels and scales are declared, not learned, so every site encodes into the same
    feature space without revealing which levels or values its own rows contain. A numeric
    column without a declared scale is encoded by asinh(x), which needs no statistic either.
    """

    numeric: tuple[str, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]
    target: str
    scales: tuple[tuple[str, NumericScale], ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted({name for name, _ in self.scales} - set(self.numeric))
        if unknown:
            raise ValueError(f"TabularSchema: scales declared for non-numeric columns {unknown}")

    def scale_of(self, column: str) -> NumericScale | None:
        return dict(self.scales).get(column)

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = [*self.numeric, *(f"{c}__missing" for c in self.numeric)]
        for column, levels in self.categorical:
            names.extend(f"{column}={level}" for level in levels)
        return tuple(names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)
