"""A tabular data dictionary: public column metadata every site agrees on, never statistics."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TabularSchema"]


@dataclass(frozen=True)
class TabularSchema:
    """Columns, their kinds and declared categorical levels.

    The levels are declared, not learned, so every site one-hot encodes into the same
    feature space without revealing which levels its own rows contain.
    """

    numeric: tuple[str, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]
    target: str

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = [*self.numeric, *(f"{c}__missing" for c in self.numeric)]
        for column, levels in self.categorical:
            names.extend(f"{column}={level}" for level in levels)
        return tuple(names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)
