"""Fixtures for report tests: a run folder with a signed ledger, and one without a ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from _report_run import BuiltRun, build_run


@pytest.fixture
def built_run(tmp_path: Path) -> BuiltRun:
    return build_run(tmp_path / "run")


@pytest.fixture
def plain_run(tmp_path: Path) -> BuiltRun:
    return build_run(tmp_path / "plain", ledger=False)
