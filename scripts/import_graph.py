"""Print the package-level import graph of prelabel and its cycles.

Why: the subsystems live in root folders mapped into the ``prelabel`` namespace
(``[tool.setuptools] package-dir`` in pyproject.toml), so an import cycle between two of
them is easy to create and hard to see. This reads the sources with ``ast`` (nothing is
imported or run) and prints one ``a -> b (n)`` line per edge, ``n`` the number of
importing modules, ``lazy`` when every such import sits inside a function (a cycle
hidden from the interpreter, still a cycle in the design), then every cycle.

The root package ``prelabel/`` is a bag of shared modules (settings, logs, CLI), so each
of its modules is a node of its own (``prelabel.cli``, ``prelabel.settings``); every
mapped subsystem folder is one node.

Usage: ``python scripts/import_graph.py [--strict] [-v]``; ``--strict`` exits 1 on a cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Edge:
    """The modules of one package that import another, and whether all of them do it lazily."""

    modules: set[str] = field(default_factory=set)
    eager: bool = False


def package_dirs(root: Path) -> dict[str, Path]:
    """Each ``prelabel.<sub>`` package and its folder, as pyproject.toml maps them."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in mapping.items()}


def node_of(module: str, packages: list[str]) -> str | None:
    """The graph node of a module: its subsystem, or ``prelabel.<module>`` for root modules."""
    for name in sorted(packages, key=len, reverse=True):
        if name != "prelabel" and (module == name or module.startswith(name + ".")):
            return name
    if module.startswith("prelabel."):
        return ".".join(module.split(".")[:2])
    return None


def imports(path: Path, package: str) -> list[tuple[str, bool]]:
    """(absolute module name, imported at module level) for each import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    eager_nodes = {id(node) for node in tree.body}
    for node in tree.body:  # imports under `if TYPE_CHECKING:` / try at module level count as eager
        if isinstance(node, ast.If | ast.Try):
            eager_nodes.update(id(child) for child in ast.walk(node))
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        eager = id(node) in eager_nodes
        if isinstance(node, ast.Import):
            found.extend((alias.name, eager) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from prelabel import jobs` names a package; `from x import y` may name a module.
            found.extend((f"{module}.{alias.name}", eager) for alias in node.names)
    return found


def edges(root: Path) -> dict[tuple[str, str], Edge]:
    """(importer node, imported node) -> the edge."""
    dirs = package_dirs(root)
    names = list(dirs)
    result: dict[tuple[str, str], Edge] = defaultdict(Edge)
    for package, folder in dirs.items():
        for path in sorted(folder.glob("*.py")):
            module = package if path.stem == "__init__" else f"{package}.{path.stem}"
            source = node_of(module, names) or module
            for target, eager in imports(path, package):
                other = node_of(target, names)
                if other is None or other == source or other == "prelabel.__init__":
                    continue
                if other not in names and not (root / "prelabel" / f"{other.split('.')[1]}.py").exists():
                    other = "prelabel"  # `from prelabel import <attribute>` re-exported by __init__
                edge = result[(source, other)]
                edge.modules.add(module)
                edge.eager = edge.eager or eager
    return result


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when packages import each other in a cycle")
    parser.add_argument("-v", "--verbose", action="store_true", help="name the importing modules of each edge")
    args = parser.parse_args()
    found = edges(ROOT)
    graph: dict[str, set[str]] = defaultdict(set)
    for (src, dst), edge in sorted(found.items()):
        graph[src].add(dst)
        print(f"{src} -> {dst} ({len(edge.modules)}{'' if edge.eager else ', lazy'})")
        if args.verbose:
            print(f"    {', '.join(sorted(edge.modules))}")
    loops = cycles(graph)
    for component in loops:
        mutual = [
            f"{a} <-> {b}"
            for i, a in enumerate(component)
            for b in component[i + 1 :]
            if b in graph[a] and a in graph[b]
        ]
        print(f"cycle: {', '.join(component)}")
        if mutual:
            print(f"  mutual: {'; '.join(mutual)}")
    print(f"{len(found)} edges, {len(loops)} cycle(s)")
    return 1 if loops and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
