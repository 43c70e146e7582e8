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


# Imports each module in a child forked from one interpreter that has loaded only third-party
# libraries (torch's and transformers' seconds of import are paid once, not per module): in the
# child neither myelin nor benchmarks is imported yet, so a cycle still fails its module.
_EACH_ALONE = """
import importlib, importlib.util, os, sys, traceback
import numpy, torch
for name in ("matplotlib.pyplot", "transformers", "peft"):
    if importlib.util.find_spec(name.split(".")[0]) is not None:
        importlib.import_module(name)
assert not [m for m in sys.modules if m.split(".")[0] in ("myelin", "benchmarks")]
failed = []
for module in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            from myelin.importance import ESTIMATORS
            from myelin.methods import METHODS
            names = lambda: ([e.name for e in ESTIMATORS.entries()],
                             [e.name for e in METHODS.entries()])
            before = names()
            importlib.import_module(module)
            assert before == names(), (before, names())
            os._exit(0)
        except BaseException:
            os.write(w, traceback.format_exc()[-1500:].encode())
            os._exit(1)
    os.close(w)
    with os.fdopen(r) as pipe:
        message = pipe.read()
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(f"{module}: {message}")
print("\\n".join(failed), file=sys.stderr)
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_module_imports_alone_and_registers_nothing():
    """Each module in a fresh child (a cycle would fail one of them); the library's
    registries are the same before and after importing it."""
    proc = subprocess.run([sys.executable, "-c", _EACH_ALONE, *MODULES], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
