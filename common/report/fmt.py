"""Number formatting shared by every report page: one place decides how a figure reads."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["num", "pct"]


def num(value: Any, digits: int = 3, *, none: str = "n/a") -> str:
    """A number for people: fixed decimals for floats, 'inf' spelled out, missing says so."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "infinite" if value > 0 else "-infinite"
        if math.isnan(value):
            return none
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"  # a delta of 1e-05 reads better than 0.000010
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    """A fraction as a whole percentage, or 'n/a'."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.0f}%"
