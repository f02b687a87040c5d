"""The shape of the house: no import circles inside ul_pipeline/, no Dagster in it, short modules.

The import graph is read statically from the sources (every `import` and `from ... import`, also
those inside functions), so a circle hidden behind a function-local import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ul_pipeline.versioning import imported_modules, library_modules

LIB = Path(__file__).resolve().parents[1] / "ul_pipeline"
MAX_LINES = 320  # "no module much over 300 lines"


def import_graph() -> dict[str, set[str]]:
    """Module -> the ul_pipeline modules it imports (the same reading the stage code versions use)."""
    modules = library_modules()
    return {m: imported_modules(m, f, modules) for m, f in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_cycle_finder_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circles_in_the_library():
    graph = import_graph()
    assert len(graph) > 50  # the walk saw the library
    assert "ul_pipeline.data.sources.video" in graph["ul_pipeline.data.sources"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_library_never_imports_dagster():
    offenders = []
    for name, path in library_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{name}: {m}" for m in mods if m.split(".")[0].startswith("dagster")]
    assert offenders == []


@pytest.mark.parametrize("path", sorted(LIB.rglob("*.py")), ids=lambda p: str(p.relative_to(LIB)))
def test_modules_stay_short(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_tests_mirror_the_library_packages():
    packages = {p.parent.name for p in LIB.glob("*/__init__.py")}
    test_dirs = {p.name for p in (LIB.parent / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert packages <= test_dirs, f"library packages without a tests/ folder: {sorted(packages - test_dirs)}"
