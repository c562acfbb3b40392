"""The floors of the package, checked on the source: imports run one way, downward, and never in a circle.

    modelgate.cli, modelgate.__main__   the command: composes the server and the clients
    modelgate.clients                   speak to a server over the wire
    modelgate.server                    the gateway: composes backends
    modelgate.backends                  one package per backend behind backends/base.py
    modelgate.kernels                   Triton kernels and their references
    modelgate.core                      what everyone shares

Every import counts, at module level or inside a function, under TYPE_CHECKING or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folder in the checkout -> the package it is installed as (see setup.py).
SOURCE_FOLDERS = {
    "modelgate": "modelgate",
    "server": "modelgate.server",
    "backends": "modelgate.backends",
    "kernels": "modelgate.kernels",
    "clients": "modelgate.clients",
}
FLOORS = [
    "modelgate.core",
    "modelgate.kernels",
    "modelgate.backends",
    "modelgate.server",
    "modelgate.clients",
    "modelgate.cli",
    "modelgate.__main__",
]
# A floor may import its own and the floors below it, nothing above. Narrower rules for three floors:
CLIENTS_MAY_IMPORT = ("modelgate.core", "modelgate.clients")
BACKEND_SHARED = ("modelgate.core", "modelgate.kernels", "modelgate.backends.base")


def source_modules() -> dict[str, Path]:
    modules = {}
    for folder, package in SOURCE_FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modelgate modules `name` imports (a `from package import module` counts as the module)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, is_package)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module.split(".")[0] == "modelgate"}


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = name.split(".") if is_package else name.split(".")[:-1]
    anchor = package[: len(package) - node.level + 1]
    return ".".join(anchor + ([node.module] if node.module else []))


def floor_of(module: str) -> int:
    matches = [i for i, floor in enumerate(FLOORS) if module == floor or module.startswith(floor + ".")]
    assert matches, f"{module} belongs to no floor: add it to FLOORS"
    return matches[0]


def backend_of(module: str) -> str:
    return ".".join(module.split(".")[:3])  # modelgate.backends.<name>


def is_allowed(importer: str, imported: str) -> bool:
    if floor_of(imported) > floor_of(importer):
        return False
    if importer.startswith("modelgate.clients."):
        return imported.startswith(CLIENTS_MAY_IMPORT)
    if importer.startswith("modelgate.server.") and imported.startswith("modelgate.backends."):
        return imported == "modelgate.backends.base"  # concrete backends are loaded by name, lazily
    if importer.startswith("modelgate.backends.") and imported.startswith("modelgate.backends."):
        return imported.startswith(BACKEND_SHARED) or backend_of(imported) == backend_of(importer)
    return True


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) & known for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for successor in edges:
                if successor not in index:
                    index[successor] = low[successor] = counter[0]
                    counter[0] += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
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
                    if len(component) > 1 or node in graph[node]:
                        found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_source_folders_are_found():
    modules = source_modules()
    for floor in (
        "modelgate.core.errors",
        "modelgate.kernels.fp8_gemm",
        "modelgate.backends.base",
        "modelgate.server.dataplane",
        "modelgate.clients.bench.cli",
        "modelgate.cli",
    ):
        assert floor in modules
    assert "modelgate.core.errors" in import_graph()["modelgate.server.runtime"]


def test_no_import_points_up_a_floor_or_across_backends():
    graph = import_graph()
    wrong = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if not is_allowed(a, b))
    assert wrong == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("modelgate.backends.llm.engine", "modelgate.server.metrics", False),
        ("modelgate.backends.llm.engine", "modelgate.backends.python.backend", False),
        ("modelgate.backends.llm.engine", "modelgate.backends.base", True),
        ("modelgate.backends.llm.engine", "modelgate.kernels.fp8_gemm", True),
        ("modelgate.clients.size.memory", "modelgate.backends.llm.models.model_config", False),
        ("modelgate.server.cli", "modelgate.clients.bench.cli", False),
        ("modelgate.core.errors", "modelgate.server.dataplane", False),
        ("modelgate.cli", "modelgate.server.cli", True),
        ("modelgate.server.model_manager", "modelgate.backends.base", True),
        ("modelgate.server.model_manager", "modelgate.backends.python.backend", False),
    ],
)
def test_the_rules_themselves(importer, imported, allowed):
    assert is_allowed(importer, imported) is allowed


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
