"""`benchmarks` is a package: no import cycle, no sys.path edits, no private myelin names, and
importing it registers nothing into the library."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "benchmarks").glob("*.py"))
MODULES = [f"benchmarks.{f.stem}" for f in FILES if f.stem != "__init__"]


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in `path`, relative ones made absolute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = "benchmarks" + (f".{module}" if module else "")
            found.append((module, [alias.name for alias in node.names]))
    return found


def _graph() -> dict[str, set[str]]:
    """benchmarks module -> the benchmarks modules it imports (anywhere in the file)."""
    graph = {}
    for path in FILES:
        name = "benchmarks" if path.stem == "__init__" else f"benchmarks.{path.stem}"
        deps = set()
        for module, names in _imports(path):
            if module == "benchmarks":              # from benchmarks import x
                deps |= {f"benchmarks.{n}" for n in names}
            elif module.startswith("benchmarks."):
                deps.add(module)
        graph[name] = deps - {name}
    return graph


def test_the_module_import_graph_is_acyclic():
    graph = _graph()
    assert graph["benchmarks.catalogue"].isdisjoint(
        {"benchmarks.runner", "benchmarks.report", "benchmarks.reproduce"})
    assert "benchmarks.reproduce" not in graph["benchmarks.report"]
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle: {' -> '.join([*path, node])}"
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*path, node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_sys_path_edits_and_no_private_myelin_names(path):
    assert "sys.path" not in path.read_text()
    for module, names in _imports(path):
        assert module.split(".")[0] not in {f.stem for f in FILES}, module   # as a package
        if module == "myelin" or module.startswith("myelin."):
            assert not any(part.startswith("_") for part in module.split(".")), module
            assert not [n for n in names if n.startswith("_")], (module, names)


def test_every_module_imports_alone_and_registers_nothing():
    """Each module in a fresh interpreter (a cycle would fail one of them); the library's
    registries are the same before and after importing them all."""
    code = ("import importlib, sys\n"
            "from myelin.importance import ESTIMATORS\n"
            "from myelin.methods import METHODS\n"
            "before = ([e.name for e in ESTIMATORS.entries()], "
            "[e.name for e in METHODS.entries()])\n"
            "importlib.import_module(sys.argv[1])\n"
            "after = ([e.name for e in ESTIMATORS.entries()], "
            "[e.name for e in METHODS.entries()])\n"
            "assert before == after, (before, after)\n")
    from concurrent.futures import ThreadPoolExecutor

    def check(module: str) -> tuple[str, subprocess.CompletedProcess]:
        return module, subprocess.run([sys.executable, "-c", code, module], cwd=ROOT,
                                      capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:    # two interpreters at once: 2 cores
        for module, proc in pool.map(check, MODULES):
            assert proc.returncode == 0, f"{module}: {proc.stderr[-1500:]}"
