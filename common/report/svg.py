"""Inline SVG line charts drawn from numbers: no plotting library, nothing fetched to view them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedsafe.common.report.fmt import esc

__all__ = ["PALETTE", "Series", "Rule", "line_chart", "nice_ticks"]

# Okabe-Ito colours (safe for colour-blind readers); dashes keep lines apart on a b/w printout.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#6b6b6b", "#000000")
_DASHES = ("", "6 3", "2 3", "8 3 2 3", "4 4", "1 2", "10 4", "3 6")


@dataclass(frozen=True)
class Series:
    """One line; ``None`` y values leave a gap rather than inventing a number."""

    name: str
    points: Sequence[tuple[float, float | None]]
    emphasis: bool = False
    index: int = 0


@dataclass(frozen=True)
class Rule:
    """A horizontal reference line such as a site's epsilon cap."""

    value: float
    label: str
    css_class: str = "rule"
    at_start: bool = False  # label at the left end, so two close rules do not overprint


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks, value = [], start
    while value < high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.1e}"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    rules: Sequence[Rule] = (),
    y_floor: float | None = None,
    y_ceiling: float | None = None,
    x_range: tuple[float, float] | None = None,
    width: int = 560,
    height: int = 250,
) -> str:
    """An SVG line chart with axes, ticks, legend and optional reference rules.

    The chart scales to its container (viewBox) so the same markup fits screen and paper.
    """
    xs = [x for s in series for x, y in s.points if y is not None and math.isfinite(y)]
    ys = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    ys += [r.value for r in rules if math.isfinite(r.value)]
    left, right, top, bottom = 56, 16, 28, 44
    legend_rows = math.ceil(len(series) / 3) if len(series) > 1 else 0
    total_h = height + 18 * legend_rows
    head = (
        f'<svg class="chart" role="img" '
        f'viewBox="0 0 {width} {total_h}" preserveAspectRatio="xMidYMid meet">'
        f"<title>{esc(title)}</title>"
        f'<text class="chart-title" x="{left}" y="16">{esc(title)}</text>'
    )
    if not xs:
        return (
            head + f'<text class="no-data" x="{width / 2}" y="{height / 2}" '
            f'text-anchor="middle">no data</text></svg>'
        )
    y_low = min(ys) if y_floor is None else min(y_floor, *ys)
    y_high = max(ys) if y_ceiling is None else max(y_ceiling, *ys)
    yt = nice_ticks(y_low, y_high)
    x_low, x_high = min(xs), max(xs)
    if x_range is not None:  # e.g. every round of the run, not only those a site trained
        x_low, x_high = min(x_low, x_range[0]), max(x_high, x_range[1])
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - yt[0]) / (yt[-1] - yt[0])) * plot_h

    parts = [head]
    for t in yt:
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{py(t):.1f}" '
            f'y2="{py(t):.1f}"/><text class="tick" x="{left - 6}" y="{py(t) + 4:.1f}" '
            f'text-anchor="end">{esc(_label(t))}</text>'
        )
    x_step = max(1, math.ceil((x_high - x_low) / 10))
    x = math.ceil(x_low)
    while x <= x_high:
        parts.append(
            f'<text class="tick" x="{px(x):.1f}" y="{top + plot_h + 16}" '
            f'text-anchor="middle">{x}</text>'
        )
        x += x_step
    parts.append(
        f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>'
        f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}"/>'
        f'<text class="axis-label" x="{left + plot_w / 2}" y="{top + plot_h + 34}" '
        f'text-anchor="middle">{esc(x_label)}</text>'
        f'<text class="axis-label" transform="translate(14 {top + plot_h / 2}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_label)}</text>'
    )
    for rule in rules:
        if not math.isfinite(rule.value):
            continue
        y = py(rule.value)
        parts.append(
            f'<line class="{esc(rule.css_class)}" x1="{left}" x2="{left + plot_w}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/><text class="{esc(rule.css_class)}-label" '
            f'x="{left + 4 if rule.at_start else left + plot_w - 4}" y="{y - 5:.1f}" '
            f'text-anchor="{"start" if rule.at_start else "end"}">{esc(rule.label)}</text>'
        )
    for s in series:
        parts.append(_polyline(s, px, py))
    parts.append(_legend(series, left, height + 4) if legend_rows else "")
    parts.append("</svg>")
    return "".join(parts)


def _polyline(s: Series, px: Callable[[float], float], py: Callable[[float], float]) -> str:
    colour = PALETTE[s.index % len(PALETTE)]
    dash = _DASHES[s.index % len(_DASHES)]
    stroke = 3 if s.emphasis else 1.8
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in s.points:
        if y is None or not math.isfinite(y):
            runs.append([])
        else:
            runs[-1].append((px(x), py(y)))
    out = []
    for run in runs:
        if len(run) > 1:
            coords = " ".join(f"{a:.1f},{b:.1f}" for a, b in run)
            out.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="{stroke}" '
                f'stroke-dasharray="{dash}" points="{coords}"/>'
            )
        for a, b in run:
            out.append(
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{3.2 if s.emphasis else 2.4}" '
                f'fill="{colour}"/>'
            )
    return f'<g class="series"><title>{esc(s.name)}</title>{"".join(out)}</g>'


def _legend(series: Sequence[Series], left: int, y0: int) -> str:
    items = []
    for i, s in enumerate(series):
        x = left + (i % 3) * 165
        y = y0 + (i // 3) * 18 + 12
        colour = PALETTE[s.index % len(PALETTE)]
        dash = _DASHES[s.index % len(_DASHES)]
        items.append(
            f'<line x1="{x}" x2="{x + 22}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" '
            f'stroke-width="{3 if s.emphasis else 2}" stroke-dasharray="{dash}"/>'
            f'<text class="legend" x="{x + 28}" y="{y}">{esc(s.name)}</text>'
        )
    return f'<g class="legend">{"".join(items)}</g>'
