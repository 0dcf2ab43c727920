"""Fixtures for ledger tests: a ledger per backend (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ledger_helpers import Tamperer
from sqlalchemy import create_engine, text

from fedsafe.common import crypto
from fedsafe.common.ledger import Ledger

POSTGRES_URL = os.environ.get("FEDSAFE_TEST_POSTGRES_URL")

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not POSTGRES_URL, reason="set FEDSAFE_TEST_POSTGRES_URL to run PostgreSQL tests"
        ),
    ),
]


def _drop(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS ledger_entries"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    assert POSTGRES_URL is not None
    _drop(POSTGRES_URL)
    yield POSTGRES_URL
    _drop(POSTGRES_URL)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger.open(ledger_url) as opened:
        yield opened


@pytest.fixture(scope="session")
def server_keys() -> tuple[bytes, bytes]:
    return crypto.generate_signing_key()


@pytest.fixture(scope="session")
def site_keypairs() -> dict[str, tuple[bytes, bytes]]:
    return {site: crypto.generate_signing_key() for site in ("cleveland", "hungary")}


@pytest.fixture
def tamper(ledger_url: str) -> Iterator[Tamperer]:
    tamperer = Tamperer(ledger_url)
    yield tamperer
    tamperer.engine.dispose()
