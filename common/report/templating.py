"""The one Jinja environment every report renders through: autoescape on, no silent blanks.

Every datum on a report page may come from a file someone edited (summary.json, the ledger, a
site's store), so escaping is the environment's default rather than something each call
remembers. A misspelt field raises (StrictUndefined) instead of printing nothing.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from fedsafe.common.report.findings import worst_first
from fedsafe.common.report.fmt import num, pct

__all__ = ["LEVEL_NAMES", "environment", "render"]

LEVEL_NAMES = {"bad": "problem", "warn": "attention", "ok": "ok", "info": "note"}


def _finalize(value: Any) -> Any:
    # A missing value prints as nothing, never as the word "None".
    return "" if value is None else value


def _level_name(level: Any) -> Any:
    return LEVEL_NAMES.get(level, level) if isinstance(level, str) else level


@cache
def environment() -> Environment:
    """The shared environment; templates are package data in ``templates/``."""
    env = Environment(
        loader=PackageLoader("fedsafe.common.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=num, pct=pct, level_name=_level_name, worst_first=worst_first)
    return env


def render(name: str, **context: Any) -> str:
    """Render one template with ``context``; every value is escaped unless it is Markup."""
    return environment().get_template(name).render(**context)
