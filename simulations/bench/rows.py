"""One benchmark figure as a row, and the table that prints a list of them."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Row", "summarize", "format_table", "rows_to_json"]


@dataclass
class Row:
    """A figure (min and median over repeats), and its ratio to a baseline from the same run."""

    bench: str
    name: str
    unit: str
    minimum: float
    median: float
    n: int = 1
    baseline: str | None = None
    ratio_min: float | None = None
    ratio_median: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(samples: list[float]) -> tuple[float, float, int]:
    """(min, median, n) of a list of samples; NaN for an empty list."""
    if not samples:
        return math.nan, math.nan, 0
    return min(samples), statistics.median(samples), len(samples)


def _num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2e}"


def format_table(rows: list[Row]) -> str:
    """A fixed-width table: bench, figure, unit, min, median, n, ratio (min/median), target."""
    head = (
        f"{'bench':<18}{'figure':<44}{'unit':<9}{'min':>10}{'median':>10}{'n':>4}"
        f"{'ratio min':>11}{'ratio med':>11}  {'target':<12}{'met':<5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append(
            f"{r.bench:<18}{r.name[:43]:<44}{r.unit:<9}{_num(r.minimum):>10}{_num(r.median):>10}"
            f"{r.n:>4}{_num(r.ratio_min, 'x'):>11}{_num(r.ratio_median, 'x'):>11}  "
            f"{(r.target or ''):<12}{met:<5}"
        )
        if r.note:
            lines.append(f"{'':<18}  note: {r.note}")
    return "\n".join(lines)


def rows_to_json(rows: list[Row]) -> list[dict[str, Any]]:
    """Rows as plain data; NaN becomes None so the file is strict JSON."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(asdict(r)) for r in rows]
