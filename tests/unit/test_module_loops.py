"""No import loop between the modules of one package, hidden inside functions or not.

``scripts/import_graph.py`` checks the packages against each other; inside a package two modules
that import each other (one of them inside a function, so the interpreter does not notice) are
one design split in two. This reads the sources with ``ast``, nothing is imported.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def module_graph(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of the same package it imports (anywhere in it)."""
    folder = ROOT / PACKAGES[package]
    names = {path.stem for path in folder.glob("*.py") if path.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in names:
        found: set[str] = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module if not node.level else f"{package}.{node.module}"
                if module == package:
                    found.update(alias.name for alias in node.names if alias.name in names)
                elif module.startswith(package + ".") and module.split(".")[-1] in names:
                    found.add(module.split(".")[-1])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[-1] for a in node.names if a.name.startswith(package + "."))
        graph[name] = (found & names) - {name}
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once, from the node it closes on)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_walk_finds_a_loop() -> None:
    assert loops({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b", "a"]]


@pytest.mark.parametrize("package", ["prelabel.train", "prelabel.stack", "prelabel.studio", "prelabel.export",
                                     "prelabel.ranking", "prelabel.quality", "prelabel.prediction",
                                     "prelabel.jobs", "prelabel.ml_backend",
                                     "prelabel.label_config"])
def test_no_module_import_loop_inside_a_package(package: str) -> None:
    assert loops(module_graph(package)) == []
