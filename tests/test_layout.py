"""The package's shape, checked: no import cycle, data flowing one way, a driver that only sequences.

The import graph is read from the source with `ast` (nothing is imported), counting every import
statement wherever it sits: one inside a function is a dependency as much as one at the top, and a
lazy import that closes a cycle is still a cycle. Imports under `if TYPE_CHECKING:` are for annotations
only (never executed) and do not count. Only explicit imports count; importing a submodule
runs its parent package's `__init__` too, but that edge would make every package a cycle with its own
modules, so `from . import x` counts as an edge to the submodule `x` when there is one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "edge_compress"

# part -> parts it must not import (data flows load -> prune -> export -> build/measure -> report)
FORBIDDEN = {
    "export": ("compress", "deploy"),
    "deploy": ("compress", "export"),
    "device_profiles": ("compress", "export", "deploy"),
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of `from <level dots><target>` written in `module`."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports (anywhere in its source)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:   # `import a.b.c` of a name inside a module: the module
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE + ".") and target != name:
                found.add(target)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_data_flows_one_way(graph, part):
    bad = sorted(f"{src} imports {dst}" for src, dsts in graph.items() if src.split(".")[1:2] == [part]
                 for dst in dsts if dst.split(".")[1] in FORBIDDEN[part])
    assert not bad, f"{PACKAGE}.{part} must not import {', '.join(FORBIDDEN[part])}: " + "; ".join(bad)


# -- the checker itself ----------------------------------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_lazy_import_that_closes_a_cycle_is_found(tmp_path):
    _write(tmp_path, {"__init__.py": "", "compress/__init__.py": "",
                      "compress/criteria.py": "from .pruning import Pruner\n",
                      "compress/pruning.py": "def f():\n    from . import criteria\n    return criteria\n",
                      "compress/units.py": "from edge_compress.compress.pruning import f\n"})
    found = cycles(import_graph(tmp_path))
    assert found == [["edge_compress.compress.criteria", "edge_compress.compress.pruning"]]


def test_type_checking_imports_do_not_count(tmp_path):
    _write(tmp_path, {"__init__.py": "", "a.py": "from .b import f\n",
                      "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import X\n"})
    assert cycles(import_graph(tmp_path)) == []


def test_relative_imports_resolve_from_packages_and_modules(tmp_path):
    _write(tmp_path, {"__init__.py": "", "export/__init__.py": "from .onnx import export\n",
                      "export/onnx.py": "from ..compress.units import fmt\nfrom . import errors\n",
                      "export/errors.py": "", "compress/__init__.py": "", "compress/units.py": ""})
    g = import_graph(tmp_path)
    assert g["edge_compress.export"] == {"edge_compress.export.onnx"}
    assert g["edge_compress.export.onnx"] == {"edge_compress.compress.units", "edge_compress.export.errors"}
    assert cycles(g) == []


# inside compress: pruning removes what it is given, criteria score through a read-only view, the search
# asks both; the metric library is pure tensor functions
INNER_FORBIDDEN = {
    "metrics": ("pruning", "criteria", "search", "passes"),
    "pruning": ("criteria", "search", "passes"),
    "criteria": ("search", "passes"),
    "search": ("passes",),
}


@pytest.mark.parametrize("part", sorted(INNER_FORBIDDEN))
def test_compress_layers(graph, part):
    prefix = f"{PACKAGE}.compress."
    bad = sorted(f"{src} imports {dst}" for src, dsts in graph.items() if src.startswith(prefix + part)
                 for dst in dsts if dst.startswith(prefix) and dst[len(prefix):].split(".")[0] in INNER_FORBIDDEN[part])
    assert not bad, "; ".join(bad)


def test_the_driver_only_sequences_passes():
    driver = ROOT / PACKAGE / "compress" / "pipeline.py"
    lines = len(driver.read_text(encoding="utf-8").splitlines())
    assert lines < 150, f"{driver.name} has {lines} lines: logic belongs in a pass (compress/passes/)"
