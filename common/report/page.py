"""The HTML document shell shared by run and site reports: one self-contained file, no script."""

from __future__ import annotations

from typing import Any

from fedsafe.common.report.findings import worst_first
from fedsafe.common.report.fmt import esc, tag
from fedsafe.common.report.style import CSS

__all__ = ["LEVEL_NAMES", "document", "findings_list"]

LEVEL_NAMES = {"bad": "problem", "warn": "attention", "ok": "ok", "info": "note"}


def document(title: str, body: str, *, footer: str) -> str:
    """A complete HTML page; the stylesheet is inline and nothing is loaded from elsewhere."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body>{body}<footer>{footer}</footer></body></html>\n"
    )


def findings_list(findings: list[dict[str, Any]]) -> str:
    """The summary's findings, worst first; the level is written out so print stays readable."""
    items = "".join(
        tag(
            "li",
            tag("span", esc(LEVEL_NAMES.get(f["level"], f["level"])), class_="lvl")
            + esc(f["text"]),
            class_=f["level"],
        )
        for f in worst_first(findings)
    )
    return tag("ul", items, class_="findings")
