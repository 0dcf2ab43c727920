"""The one-way data flow, checked on the source: config -> entry points -> apps -> common."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> project packages it must never import
FORBIDDEN = {
    "common": {"server", "client", "simulations", "conf"},
    "server": {"client", "simulations"},
    "client": {"server", "simulations"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_flow_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_only_simulations_sees_hydra() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("common", "server", "client")
        for path in (ROOT / package).rglob("*.py")
        if {"hydra", "omegaconf"} & _imports(path)
    ]
    assert offenders == []
