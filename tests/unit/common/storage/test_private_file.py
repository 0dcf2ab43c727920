"""Budget stores and consent registries are readable by their owner only (another local user)."""

from __future__ import annotations

import stat
from pathlib import Path

from fedsafe.client.budget import BudgetStore
from fedsafe.common.storage import private_file
from fedsafe.server.consent import ConsentRegistry


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_budget_store_and_consent_registry_are_0600(tmp_path: Path) -> None:
    BudgetStore.open(tmp_path / "site" / "budget.sqlite").close()
    ConsentRegistry.open(tmp_path / "consent.sqlite").close()

    assert _mode(tmp_path / "site" / "budget.sqlite") == 0o600
    assert _mode(tmp_path / "consent.sqlite") == 0o600


def test_an_existing_world_readable_store_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "budget.sqlite"
    BudgetStore.open(path).close()
    path.chmod(0o644)

    BudgetStore.open(path).close()

    assert _mode(path) == 0o600


def test_private_file_keeps_content(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"kept")
    path.chmod(0o666)

    private_file(path)

    assert path.read_bytes() == b"kept" and _mode(path) == 0o600
