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


PROJECT = ("common", "server", "client", "simulations", "conf")


def _modules(path: Path) -> set[str]:
    """Every absolute module name a file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imports(path: Path) -> set[str]:
    """Project packages (`fedsafe.X` -> X) and third-party top-level names a file imports."""
    out: set[str] = set()
    for name in _modules(path):
        parts = name.split(".")
        out.add(parts[1] if parts[0] == "fedsafe" and len(parts) > 1 else parts[0])
    return out


def test_project_code_is_imported_only_through_the_fedsafe_package() -> None:
    """A bare `import common` would load a second copy of the package beside `fedsafe.common`."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _modules(path) if n.split(".")[0] in PROJECT)
        for folder in (*PROJECT, "tests")
        for path in (ROOT / folder).rglob("*.py")
        if any(n.split(".")[0] in PROJECT for n in _modules(path))
    }
    assert offenders == {}


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
