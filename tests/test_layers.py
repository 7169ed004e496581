"""The import graph of src/: no module imports itself back through others (function-local imports
count: they only hide a cycle), and every package imports only the packages below it.

The layers, bottom to top (the README's layout section says the same):
utils < data, losses, nets < models < sampling < metrics < config < runs, callbacks < population,
report < the entry-point scripts (src/*.py). Top-level scripts may import each other (benchmark
helpers); the cycle check still covers them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from src.utils import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
LAYERS = [
    {"utils"},
    {"data", "losses", "nets"},
    {"models"},
    {"sampling"},
    {"metrics"},
    {"config"},
    {"runs", "callbacks"},
    {"population", "report"},
]
SCRIPT_LAYER = len(LAYERS)


def module_files() -> dict[str, Path]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the src modules it imports anywhere in its file (top level or in a function)."""
    modules = module_files()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            else:
                continue
            for name in names:
                found = resolve(name) if name.startswith("src.") or name == "src" else None
                if found and found != module:
                    targets.add(found)
        graph[module] = targets
    return graph


def layer_of(module: str) -> int:
    """The layer of ``src.<package>...``; a module right under src/ is an entry-point script."""
    parts = module.split(".")
    if len(parts) == 1:  # src/__init__.py
        return -1
    package = parts[1]
    if len(parts) == 2 and (SRC / f"{package}.py").is_file():
        return SCRIPT_LAYER if package != "losses" else 1
    for rank, layer in enumerate(LAYERS):
        if package in layer:
            return rank
    raise AssertionError(f"src/{package}/ is in no layer: add it to LAYERS in {__file__}")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_one():
    # the checker itself: a cycle three modules long is found, a chain is not
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_src_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_packages_import_only_lower_layers():
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
        or (
            layer_of(target) == layer_of(module) < SCRIPT_LAYER
            and _package(target) != _package(module)
        )
    ]
    assert not upward, "upward or sideways imports:\n" + "\n".join(sorted(upward))


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else module
