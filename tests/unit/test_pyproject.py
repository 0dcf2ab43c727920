"""pyproject.toml: the Flower app declares fedsafe's own builders and honest run-config defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedsafe.common.config import ExperimentConfig, from_flat, to_flat

ROOT = Path(__file__).resolve().parents[2]
FLWR = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]


def test_flower_components_are_the_shared_app_builders() -> None:
    assert FLWR["app"]["components"] == {
        "serverapp": "fedsafe.server.app:app",
        "clientapp": "fedsafe.client.app:app",
    }


def test_declared_run_config_keys_equal_the_defaults_except_the_short_run() -> None:
    declared = FLWR["app"]["config"]
    defaults = to_flat(ExperimentConfig())
    differing = {
        key: value
        for key, value in declared.items()
        if key not in ("experiment.name", "training.rounds") and defaults[key] != value
    }
    assert differing == {}
    assert from_flat(declared).training.rounds == 3


def test_every_package_folder_installs_under_fedsafe() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        "fedsafe." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("common", "server", "client", "simulations", "conf")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == folders
    assert setuptools["package-dir"] == {
        f"fedsafe.{top}": top for top in ("common", "server", "client", "simulations", "conf")
    }


def test_no_legacy_federation_table_for_flower_to_rewrite() -> None:
    assert "federations" not in FLWR
