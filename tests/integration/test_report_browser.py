"""A real headless Chromium renders and prints the run report without errors or fetches."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fedsafe.simulations.report_cli import write_report

CHROMIUM = Path("/usr/bin/chromium")
HELPER = Path(__file__).resolve().parents[1] / "unit" / "common" / "report" / "_report_run.py"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason="/usr/bin/chromium is missing (apt-get install -y chromium); .ci/run installs it",
    ),
]


def _helper() -> ModuleType:
    """The unit tests' run-folder builder, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_report_run_browser", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _console_errors(stderr: str) -> list[str]:
    # The report has no script, so any console line at all (Chromium logs console.error as
    # INFO:CONSOLE, without the word "error") means something unexpected ran.
    return [line for line in stderr.splitlines() if "Uncaught" in line or ":CONSOLE" in line]


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    run = _helper().build_run(tmp_path / "run")
    html = write_report(run.path)
    png = tmp_path / "report.png"

    result = _chromium(
        tmp_path,
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        html.as_uri(),
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert png.is_file() and png.stat().st_size > 20_000
    assert _console_errors(result.stderr) == []


def test_tampered_report_prints_to_pdf(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    run = _helper().build_run(tmp_path / "run")
    engine = create_engine(f"sqlite:///{run.path / 'ledger.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE ledger_entries SET payload = '{}' WHERE seq = 2"))
    engine.dispose()
    html = write_report(run.path)
    assert "LEDGER TAMPERED" in html.read_text(encoding="utf-8")
    pdf = tmp_path / "report.pdf"

    result = _chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", html.as_uri())

    assert result.returncode == 0, result.stderr[-2000:]
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000
