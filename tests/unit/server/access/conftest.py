"""Fixtures for access-control tests: the federation PKI (once a session), a live endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _access_pki import Coordinator, Pki, build_pki, running_coordinator


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def coordinator(pki: Pki, tmp_path: Path) -> Iterator[Coordinator]:
    """A live mTLS admin endpoint on 127.0.0.1 (OS-chosen port), stopped after the test."""
    with running_coordinator(pki, tmp_path) as running:
        yield running
