"""Escaping and number formatting shared by every report page: one place decides how text looks."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["esc", "num", "pct", "table", "tag"]


def esc(value: object) -> str:
    """HTML-escape anything (quotes included): every datum may come from a file someone edited."""
    return html.escape("" if value is None else str(value), quote=True)


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


def tag(name: str, body: str, **attrs: object) -> str:
    """One element; ``body`` must already be HTML, attribute values are escaped here."""
    rendered = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{esc(val)}"'
        for key, val in attrs.items()
        if val is not None
    )
    return f"<{name}{rendered}>{body}</{name}>"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    class_: str | None = None,
) -> str:
    """A table from already-escaped cells; columns listed in ``numeric`` align right."""
    head = "".join(
        tag("th", esc(h), class_="num" if i in numeric else None, scope="col")
        for i, h in enumerate(headers)
    )
    body = "".join(
        tag(
            "tr",
            "".join(
                tag("td", cell, class_="num" if i in numeric else None)
                for i, cell in enumerate(row)
            ),
        )
        for row in rows
    )
    return tag("table", tag("thead", tag("tr", head)) + tag("tbody", body), class_=class_)
