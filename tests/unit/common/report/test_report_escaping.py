"""Escaping is the template environment's default: a hostile name or finding prints as text."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from _report_run import BuiltRun
from jinja2 import StrictUndefined, UndefinedError
from markupsafe import escape

from fedsafe.common.report import build_run_report, render_run_html, render_site_html
from fedsafe.common.report.templating import environment

EVIL = '<script>alert("x&y")</script><img src=x onerror="alert(2)">'
TEMPLATES = Path(__file__).resolve().parents[4] / "common" / "report" / "templates"


class _Elements(HTMLParser):
    """Every element and attribute name a browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs |= {name for name, _ in attrs}


def _assert_inert(html: str, *, at_least: int) -> None:
    parsed = _Elements()
    parsed.feed(html)
    assert "<script" not in html.lower() and "script" not in parsed.tags
    assert "onerror" not in parsed.attrs and "img" not in parsed.tags
    assert html.count(escape(EVIL)) >= at_least


def _poison(value: Any) -> Any:
    """Every string leaf replaced by EVIL; keys, numbers and the structure are kept."""
    if isinstance(value, dict):
        return {k: _poison(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v) for v in value]
    return EVIL if isinstance(value, str) else value


def _rename(mapping: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return {new if k == old else k: v for k, v in mapping.items()}


def test_the_environment_escapes_and_refuses_unknown_names() -> None:
    env = environment()

    assert env.autoescape is True
    assert env.undefined is StrictUndefined
    assert env.from_string("{{ x }}").render(x="\"'<&>") == "&#34;&#39;&lt;&amp;&gt;"
    with pytest.raises(UndefinedError):
        env.from_string("{{ report.no_such_field }}").render(report={})


def test_no_template_turns_escaping_off() -> None:
    templates = sorted(TEMPLATES.glob("*.j2"))

    assert {t.name for t in templates} >= {"run.html.j2", "site.html.j2", "chart.svg.j2"}
    for template in templates:
        text = template.read_text(encoding="utf-8").replace(" ", "")
        assert "|safe" not in text, template.name
        assert "autoescapefalse" not in text.lower(), template.name


def test_a_hostile_site_name_and_finding_stay_text_in_the_run_report(
    built_run: BuiltRun,
) -> None:
    report = build_run_report(built_run.path)
    report["findings"].append({"level": "bad", "text": EVIL})
    # The site's name is a key in several places; the page prints it in tables and charts.
    part = report["participation"]
    report["sites"] = _rename(report["sites"], "hungary", EVIL)
    part["grid"] = _rename(part["grid"], "hungary", EVIL)
    part["counts"] = _rename(part["counts"], "hungary", EVIL)
    report["utility"]["sites"] = _rename(report["utility"]["sites"], "hungary", EVIL)
    poisoned = _poison(report)

    html = render_run_html(poisoned)

    _assert_inert(html, at_least=10)
    assert "Summary" in html and html.count("<svg") == 5


def test_a_hostile_site_name_and_finding_stay_text_in_the_site_report() -> None:
    charge = {
        "index": 1,
        "run_id": EVIL,
        "round": 1,
        "noise_multiplier": 1.5,
        "sample_rate": 0.05,
        "steps": 20,
        "status": EVIL,
        "purpose": EVIL,
        "time": EVIL,
        "epsilon_after": 1.2,
    }
    report = {
        "format": EVIL,
        "generated_at": EVIL,
        "store": EVIL,
        "site": EVIL,
        "findings": [{"level": "bad", "text": EVIL}, {"level": EVIL, "text": EVIL}],
        "datasets": [
            {
                "dataset_id": EVIL,
                "epsilon": 1.2,
                "delta": 1e-5,
                "accountant": EVIL,
                "cap": 3.0,
                "cap_fraction": 0.4,
                "rounds": 1,
                "steps": 20,
                "refusals": 1,
                "runs": [
                    {"run_id": EVIL, "rounds": 1, "steps": 20, "reserved": 0, "refusals": 1}
                    | {"epsilon_after": EVIL}
                ],
                "history": [charge],
                "refusal_list": [
                    {"time": EVIL, "run_id": EVIL, "round": 2, "reason": EVIL, "message": EVIL}
                ],
            }
        ],
    }

    html = render_site_html(report)

    _assert_inert(html, at_least=15)
    assert html.count("<svg") == 1
