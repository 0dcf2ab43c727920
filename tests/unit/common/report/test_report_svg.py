"""Inline SVG charts: round ticks, gaps for missing values, escaped labels, an empty state."""

from __future__ import annotations

import math

from markupsafe import Markup, escape

from fedsafe.common.report.svg import Rule, Series, line_chart, nice_ticks


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert nice_ticks(0.0, 2.97) == [0.0, 1.0, 2.0, 3.0]
    assert nice_ticks(0.0, 10.0) == [0.0, 2.5, 5.0, 7.5, 10.0]
    ticks = nice_ticks(0.37, 0.92)
    assert ticks[0] <= 0.37 and ticks[-1] >= 0.92


def test_nice_ticks_survive_degenerate_ranges() -> None:
    assert nice_ticks(2.0, 2.0)[-1] > 2.0
    assert nice_ticks(math.nan, 1.0) == [0.0, 1.0]


def test_missing_values_break_the_line() -> None:
    svg = line_chart(
        [Series("a", [(1, 1.0), (2, None), (3, 2.0), (4, 2.5)])],
        title="t",
        x_label="round",
        y_label="eps",
    )

    assert svg.count("<polyline") == 1  # only rounds 3-4 join; round 1 stands alone
    assert svg.count("<circle") == 3


def test_labels_are_escaped_and_rules_drawn() -> None:
    svg = line_chart(
        [Series("<b>site</b>", [(1, 1.0), (2, 2.0)]), Series("other", [(1, 0.5), (2, 1.0)])],
        title='a "title" & <more>',
        x_label="round",
        y_label="eps",
        rules=[Rule(3.0, "cap 3", "cap"), Rule(2.4, "80% of cap", "near", at_start=True)],
    )

    assert isinstance(svg, Markup)  # escaped by its template: a page embeds it as it is
    assert "<b>" not in svg and "&lt;b&gt;site&lt;/b&gt;" in svg
    assert escape('a "title" & <more>') in svg and '"title"' not in svg
    assert 'class="cap"' in svg and "cap 3" in svg and 'text-anchor="start"' in svg
    assert "http" not in svg


def test_no_points_says_no_data() -> None:
    svg = line_chart([Series("a", [(1, None)])], title="t", x_label="x", y_label="y")

    assert "no data" in svg and "<polyline" not in svg
