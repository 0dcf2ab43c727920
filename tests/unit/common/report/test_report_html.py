"""The HTML is one self-contained, printable, escaped document with the summary first."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _report_run import BuiltRun
from markupsafe import escape

from fedsafe.common.report import render_run_html, write_run_report
from fedsafe.common.report.fmt import num, pct

_EXTERNAL = re.compile(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def _html(run: BuiltRun) -> str:
    return write_run_report(run.path).html.read_text(encoding="utf-8")


def test_html_is_self_contained(built_run: BuiltRun) -> None:
    html = _html(built_run)

    assert not _EXTERNAL.search(html)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html
    assert html.count("<svg") == 5  # one epsilon chart per site, accuracy, AUROC
    assert "@media print" in html


def test_sections_read_in_document_order(built_run: BuiltRun) -> None:
    html = _html(built_run)

    ids = re.findall(r'<section id="([a-z]+)"', html)
    assert ids == ["summary", "privacy", "participation", "utility", "manifest", "ledger"]
    assert html.index("<h1>") < html.index('id="summary"')


def _poison(value: object, evil: str) -> object:
    """Every string leaf of a JSON document replaced by `evil` (keys and numbers kept)."""
    if isinstance(value, dict):
        return {k: _poison(v, evil) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v, evil) for v in value]
    return evil if isinstance(value, str) else value


def test_every_value_is_escaped(built_run: BuiltRun) -> None:
    summary = json.loads((built_run.path / "summary.json").read_text())
    evil = '<img src="https://x.test/a.png" onerror="alert(1)">'
    poisoned = _poison(summary, evil)
    assert isinstance(poisoned, dict)
    poisoned["sites"]["cleveland"]["refusals"] = [{"round": 1, "code": 1, "reason": evil}]
    (built_run.path / "summary.json").write_text(json.dumps(poisoned))

    html = _html(built_run)

    assert "<img" not in html and "onerror=" not in html.replace(escape(evil), "")
    assert html.count(escape(evil)) >= 3  # the run name, the refusal, and other fields shown
    assert not _EXTERNAL.search(html)


def test_privacy_off_is_stated_plainly(plain_run: BuiltRun) -> None:
    summary = json.loads((plain_run.path / "summary.json").read_text())
    summary["privacy"]["enabled"] = False
    for site in summary["sites"].values():
        site["epsilon"] = site["delta"] = site["noise_multiplier"] = None
    (plain_run.path / "summary.json").write_text(json.dumps(summary))
    (plain_run.path / "metrics.jsonl").write_text("")

    report = write_run_report(plain_run.path).report

    assert report["findings"][0]["level"] == "bad"
    assert "Differential privacy was OFF" in report["findings"][0]["text"]
    assert "no data" in render_run_html(report)


def test_cut_metrics_line_is_noted_not_fatal(plain_run: BuiltRun) -> None:
    with (plain_run.path / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"round": 4, "pha')

    report = write_run_report(plain_run.path).report

    assert any("is not JSON" in note for note in report["notes"])


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (None, 3, "n/a"),
        (1e-5, 3, "1e-05"),
        (2.97110, 3, "2.971"),
        (float("inf"), 3, "infinite"),
        (float("nan"), 3, "n/a"),
        (24, 3, "24"),
        (True, 3, "yes"),
    ],
)
def test_num_formats_for_people(value: object, digits: int, expected: str) -> None:
    assert num(value, digits) == expected


def test_pct() -> None:
    assert pct(0.849) == "85%"
    assert pct(None) == "n/a"


def test_written_files_are_readable_by_others(plain_run: BuiltRun, tmp_path: Path) -> None:
    written = write_run_report(plain_run.path, tmp_path / "r.html")

    assert written.html.stat().st_mode & 0o044 == 0o044
    assert written.json == tmp_path / "r.json"
