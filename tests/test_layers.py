"""The package's import structure: no import cycle between modules, no import of a higher layer.

Every module of ``src/fuse4seg`` is parsed (``ast``); every ``import`` / ``from ... import``
of a fuse4seg module counts, at any depth (function-level imports too). ``from pkg import
name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``. A
subpackage's ``__init__`` run by importing one of its modules is not an edge (Python imports
the parents of every module; that is no dependency of the importer on the parent's other
modules).

Layers, lowest first (see docs/architecture.md). A module may import its own layer and the
layers below; imports inside one layer must not form a cycle. ``fuse4seg.plugins`` is the one
list of plugin packages; it imports them by name (``importlib``), at run time, never at import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "fuse4seg"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: lowest first; a module belongs to the longest prefix listed
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fuse4seg", "fuse4seg.errors", "fuse4seg.io", "fuse4seg.device", "fuse4seg.plugins"),
    (
        "fuse4seg.data",
        "fuse4seg.models",
        "fuse4seg.losses",
        "fuse4seg.metrics",
        "fuse4seg.degradations",
        "fuse4seg.fusion_rules",
    ),
    # method packages (v1, rmr) sit beside the trainer: they may import the model, loss,
    # data and metric layers and the train-level registries, never the reverse
    ("fuse4seg.train", "fuse4seg.inference", "fuse4seg.v1", "fuse4seg.rmr"),
    ("fuse4seg.benchmark",),
    ("fuse4seg.cli", "fuse4seg.__main__"),
)


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    mods = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str:
    """The longest existing module that ``name`` (a module or a name in one) lies in."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str, path: Path) -> set[str]:
    """fuse4seg modules imported anywhere in ``path`` (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [
                f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source
                for a in node.names
            ]
        else:
            continue
        found |= {_resolve(n) for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}
    found.discard(module)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> int:
    best = max(
        (len(prefix), i)
        for i, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    )
    return best[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
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
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
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


def test_the_walk_sees_the_package():
    assert len(MODULES) > 50
    assert "fuse4seg.models.model_file" in GRAPH["fuse4seg.train.trainer"]
    # a function-level import (save_backbone_model_file checks the rule name) counts
    assert "fuse4seg.fusion_rules" in GRAPH["fuse4seg.models.backbones"]
    # relative imports are resolved
    assert "fuse4seg.models.model_file" in GRAPH["fuse4seg.models.backbones"]


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)  # ValueError (max of nothing) for a module outside every layer


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycle_finder_on_small_graphs(graph, expected):
    assert sorted(_cycles(graph)) == expected
