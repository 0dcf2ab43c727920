"""Inline SVG line charts drawn from numbers: no plotting library, nothing fetched to view them.

This module only computes coordinates; ``templates/chart.svg.j2`` draws them, so every label
(a site name, a run id) is escaped by the template environment, never by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from fedsafe.common.report.templating import render

__all__ = ["PALETTE", "Series", "Rule", "cap_rules", "line_chart", "nice_ticks"]

# Okabe-Ito colours (safe for colour-blind readers); dashes keep lines apart on a b/w printout.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#6b6b6b", "#000000")
_DASHES = ("", "6 3", "2 3", "8 3 2 3", "4 4", "1 2", "10 4", "3 6")
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 28, 44  # margins around the plot area


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


def cap_rules(cap: float | None, near: float) -> list[Rule]:
    """A budget chart's two rules: the cap, and the share of it a finding calls "near"."""
    if not isinstance(cap, float | int) or isinstance(cap, bool):
        return []
    return [
        Rule(float(cap), f"cap {cap:g}", "cap"),
        Rule(float(cap) * near, f"{near:.0%} of cap", "near", at_start=True),
    ]


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


@dataclass(frozen=True)
class _Plot:
    """The plot area and the data range it shows: maps data to SVG coordinates."""

    width: int
    height: int
    x_low: float
    x_high: float
    y_ticks: list[float]

    @property
    def plot_w(self) -> int:
        return self.width - _LEFT - _RIGHT

    @property
    def plot_h(self) -> int:
        return self.height - _TOP - _BOTTOM

    def px(self, x: float) -> float:
        return _LEFT + (x - self.x_low) / (self.x_high - self.x_low) * self.plot_w

    def py(self, y: float) -> float:
        low, high = self.y_ticks[0], self.y_ticks[-1]
        return _TOP + (1 - (y - low) / (high - low)) * self.plot_h


def _plot(
    series: Sequence[Series],
    rules: Sequence[Rule],
    size: tuple[int, int],
    y_bounds: tuple[float | None, float | None],
    x_range: tuple[float, float] | None,
) -> _Plot | None:
    """The ranges that hold every point and rule; None when there is nothing to draw."""
    xs = [x for s in series for x, y in s.points if y is not None and math.isfinite(y)]
    ys = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    ys += [r.value for r in rules if math.isfinite(r.value)]
    if not xs:
        return None
    y_floor, y_ceiling = y_bounds
    y_low = min(ys) if y_floor is None else min(y_floor, *ys)
    y_high = max(ys) if y_ceiling is None else max(y_ceiling, *ys)
    x_low, x_high = min(xs), max(xs)
    if x_range is not None:  # e.g. every round of the run, not only those a site trained
        x_low, x_high = min(x_low, x_range[0]), max(x_high, x_range[1])
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    return _Plot(size[0], size[1], x_low, x_high, nice_ticks(y_low, y_high))


def _axes(plot: _Plot, x_label: str, y_label: str) -> dict[str, object]:
    """Grid lines and tick labels on both axes, and the two axis labels."""
    y_ticks = [
        {
            "y": f"{plot.py(t):.1f}",
            "x": _LEFT - 6,
            "label_y": f"{plot.py(t) + 4:.1f}",
            "label": _label(t),
        }
        for t in plot.y_ticks
    ]
    x_ticks, step = [], max(1, math.ceil((plot.x_high - plot.x_low) / 10))
    x = math.ceil(plot.x_low)
    while x <= plot.x_high:
        x_ticks.append({"x": f"{plot.px(x):.1f}", "y": _TOP + plot.plot_h + 16, "label": x})
        x += step
    return {
        "right": _LEFT + plot.plot_w,
        "bottom": _TOP + plot.plot_h,
        "y_ticks": y_ticks,
        "x_ticks": x_ticks,
        "x_label": {"x": _LEFT + plot.plot_w / 2, "y": _TOP + plot.plot_h + 34, "text": x_label},
        "y_label": {"y": _TOP + plot.plot_h / 2, "text": y_label},
    }


def _rules(plot: _Plot, rules: Sequence[Rule]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for rule in rules:
        if not math.isfinite(rule.value):
            continue
        y = plot.py(rule.value)
        out.append(
            {
                "css": rule.css_class,
                "y": f"{y:.1f}",
                "label_x": _LEFT + 4 if rule.at_start else _LEFT + plot.plot_w - 4,
                "label_y": f"{y - 5:.1f}",
                "anchor": "start" if rule.at_start else "end",
                "label": rule.label,
            }
        )
    return out


def _line(plot: _Plot, s: Series) -> dict[str, object]:
    """One series as runs of joined points; a missing value starts a new run."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in s.points:
        if y is None or not math.isfinite(y):
            runs.append([])
        else:
            runs[-1].append((plot.px(x), plot.py(y)))
    return {
        "name": s.name,
        "colour": PALETTE[s.index % len(PALETTE)],
        "dash": _DASHES[s.index % len(_DASHES)],
        "stroke": 3 if s.emphasis else 1.8,
        "radius": 3.2 if s.emphasis else 2.4,
        "runs": [
            {
                "points": " ".join(f"{a:.1f},{b:.1f}" for a, b in run) if len(run) > 1 else "",
                "dots": [{"x": f"{a:.1f}", "y": f"{b:.1f}"} for a, b in run],
            }
            for run in runs
        ],
    }


def _legend(series: Sequence[Series], y0: int) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for i, s in enumerate(series):
        x, y = _LEFT + (i % 3) * 165, y0 + (i // 3) * 18 + 12
        items.append(
            {
                "x": x,
                "x2": x + 22,
                "line_y": y - 4,
                "text_x": x + 28,
                "y": y,
                "colour": PALETTE[s.index % len(PALETTE)],
                "dash": _DASHES[s.index % len(_DASHES)],
                "stroke": 3 if s.emphasis else 2,
                "name": s.name,
            }
        )
    return items


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
) -> Markup:
    """An SVG line chart with axes, ticks, legend and optional reference rules.

    The chart scales to its container (viewBox) so the same markup fits screen and paper.
    It is Markup because the template escaped every label: a page embeds it as it is.
    """
    legend_rows = math.ceil(len(series) / 3) if len(series) > 1 else 0
    frame = {
        "width": width,
        "total_height": height + 18 * legend_rows,
        "title": title,
        "left": _LEFT,
    }
    plot = _plot(series, rules, (width, height), (y_floor, y_ceiling), x_range)
    if plot is None:
        return Markup(render("chart.svg.j2", **frame, no_data={"x": width / 2, "y": height / 2}))
    return Markup(
        render(
            "chart.svg.j2",
            **frame,
            **_axes(plot, x_label, y_label),
            no_data=None,
            top=_TOP,
            rules=_rules(plot, rules),
            lines=[_line(plot, s) for s in series],
            legend=_legend(series, height + 4) if legend_rows else [],
        )
    )
