"""The benchmark modules import one another in one direction: no module imports itself back."""
from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_imports(path: Path) -> set[str]:
    """The ``bench`` modules that ``path`` imports anywhere (top level or inside a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("bench."):
                found.add(node.module.split(".")[1])
            elif node.module == "bench":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("bench."))
    return found - {path.stem}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` as the list of modules around it, or ``None``."""
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> list[str] | None:
        if module in trail:
            return trail[trail.index(module):] + [module]
        if module in done or module not in graph:
            return None
        for target in sorted(graph[module]):
            cycle = visit(target, trail + [module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_bench_modules_have_no_import_cycle():
    graph = {path.stem: bench_imports(path) for path in BENCH.glob("*.py")}
    assert graph["procs"], "the parser found procs.py's imports"
    cycle = find_cycle(graph)
    assert cycle is None, "bench modules import each other: " + " -> ".join(cycle or [])
