"""The codebase's shape, checked from the source: layers, no import cycles, and sizes a reader can hold.

docs/architecture.md draws the layers; this test is what keeps the drawing true. Imports inside functions
count as much as those at the top: hiding a cycle in a function does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "embedeverything"
PLUGINS = ROOT / "plugins"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: Layer of each module by name prefix (the longest matching prefix wins). A module may import its own
#: layer or lower ones, never a higher one.
LAYERS = {
    "embedeverything": 0,
    "embedeverything.ingest": 1,
    "embedeverything.embed": 1,
    "embedeverything.cluster": 1,
    "embedeverything.train": 1,
    "embedeverything.evaluate": 1,
    "embedeverything.demo": 1,
    "embedeverything.search": 1,
    "embedeverything.serve": 2,
    "embedeverything.pairing": 2,
    "embedeverything.pair_api": 2,
    "embedeverything.pair_data": 2,
    "embedeverything.cli": 3,
    "embedeverything.__main__": 3,
}
LAYER_NAMES = {0: "core", 1: "stage", 2: "orchestration", 3: "cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its body (functions included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            subs = [f"{src}.{a.name}" for a in node.names if f"{src}.{a.name}" in known]
            targets = subs if len(subs) == len(node.names) else [src, *subs]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer(name: str) -> int:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS[best]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_cycles_and_function_level_imports(tmp_path):
    """The graph counts an import hidden in a function, and the cycle finder finds a two-module loop."""
    known = {"embedeverything.x": tmp_path / "x.py", "embedeverything.y": tmp_path / "y.py"}
    known["embedeverything.x"].write_text("def f():\n    from .y import g\n")
    assert imports_of("embedeverything.x", known["embedeverything.x"], known) == {"embedeverything.y"}
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_module_imports_a_higher_layer():
    bad = [
        f"{src} ({LAYER_NAMES[layer(src)]}) imports {dst} ({LAYER_NAMES[layer(dst)]})"
        for src, targets in import_graph().items()
        for dst in sorted(targets)
        if layer(dst) > layer(src)
    ]
    assert bad == []


def _is_typer_command(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for d in fn.decorator_list:
        call = d.func if isinstance(d, ast.Call) else d
        if isinstance(call, ast.Attribute) and call.attr in ("command", "callback"):
            return True
    return False


def function_lengths(path: Path) -> list[tuple[str, int]]:
    """(name, lines) of every function; a typer command counts its body only (its options are a table)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = node.body[0].lineno if _is_typer_command(node) else node.lineno
            out.append((node.name, node.end_lineno - start + 1))
    return out


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + sorted(PLUGINS.rglob("*.py"))


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_are_short(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split it along a seam a reader would name"
    long = [f"{name}: {n} lines" for name, n in function_lengths(path) if n > MAX_FUNCTION_LINES]
    assert long == []
