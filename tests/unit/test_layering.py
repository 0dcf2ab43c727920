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


def _module_graph() -> dict[str, set[str]]:
    """fedsafe module -> the fedsafe modules it imports (lazy imports inside functions too).

    An import of a module's own parent package is left out: a package's __init__ re-exporting
    its submodules is how a package is built, not a cycle between rooms.
    """
    files: dict[str, Path] = {}
    for top in ("common", "server", "client", "simulations"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(["fedsafe", *parts])] = path
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
        graph[module] = {
            t for t in targets if t in files and t != module and not module.startswith(t + ".")
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(_module_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
