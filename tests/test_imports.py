"""Imports: the norms and plain backbones load without Lightning, and normzoo's modules import no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import normzoo

HEAVY = ("lightning", "pytorch_lightning", "tensorboard", "torchmetrics", "matplotlib")
"""Packages that the norms and the plain backbones must not import."""


@pytest.mark.parametrize(
    "modules",
    ["normzoo.norms", "normzoo.models.mlp, normzoo.models.vgg, normzoo.models.resnet"],
    ids=["norms", "backbones"],
)
def test_the_norms_and_plain_backbones_import_without_lightning(modules):
    code = f"import sys, {modules}; print(sorted({set(HEAVY)!r} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"import {modules} loads {result.stdout.strip()}"


def test_subpackages_load_on_first_access():
    assert set(normzoo.__all__) == {"__version__", "callbacks", "data", "models", "norms", "speed"}
    assert set(normzoo.__all__) <= set(dir(normzoo))
    assert normzoo.speed.SpeedUp.__module__ == "normzoo.speed"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = normzoo.nope


# --------------------------------------------------------------------------- import cycles


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: not in functions, not under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _module_level_imports(node.body)
            found += _module_level_imports(node.orelse)
        elif isinstance(node, (ast.Try, ast.With, ast.ClassDef)):
            for block in ("body", "orelse", "finalbody"):
                found += _module_level_imports(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                found += _module_level_imports(handler.body)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Edges from each module to the modules of the same tree it imports at module level.

    ``import a.b`` is an edge to ``a.b``; ``from a import b`` to ``a.b`` when that is a
    module, else to ``a``; relative imports are resolved against the importing module.
    """
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _module_level_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a closed path of modules) per strongly connected group of mutually importing modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_within(sorted(group)[0], group, graph) for group in groups]


def _cycle_within(start: str, group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``group`` (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")


def test_normzoo_modules_import_no_cycle():
    root = Path(normzoo.__file__).parent
    cycles = import_cycles(import_graph(module_files(root, "normzoo")))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_check_finds_cycles_and_ignores_deferred_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg import a\n",
        "a.py": "from pkg.sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "from .. import a\n",  # a -> pkg.sub.b -> a
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\n",
        "d.py": "def f():\n    from pkg import c\n\nimport pkg.c\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(module_files(package, "pkg"))
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.c"] == set() and graph["pkg.d"] == {"pkg.c"}
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]


# --------------------------------------------------------------------------- public surface

PACKAGES = ("normzoo.callbacks", "normzoo.data", "normzoo.errors", "normzoo.models", "normzoo.norms",
            "normzoo.report", "normzoo.studies")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_and_none_is_private(package):
    import importlib

    module = importlib.import_module(package)
    assert module.__all__ and not [name for name in module.__all__ if name.startswith("_")]
    assert [name for name in module.__all__ if not hasattr(module, name)] == []


def test_every_error_class_lives_in_errors():
    """A class deriving from Exception (not BaseException control flow, not a private helper) is defined in errors."""
    defined_elsewhere = []
    for path in sorted(Path(normzoo.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(base) for base in node.bases}
                if any(base.endswith(("Error", "Exception")) and base != "BaseException" for base in bases):
                    defined_elsewhere.append(f"{path.name}:{node.name}")
    assert [entry for entry in defined_elsewhere if not entry.startswith("errors.py:")] == []
