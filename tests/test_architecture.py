"""The shape of the package holds: no import circle, no stage importing one above it, and the tree in
docs/architecture.md is the tree of the code.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a deferred import is still a
dependency, and a circle through one only waits for the day the import moves to the top."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "batchflow"

# The stages from the bottom up: a package may import those below it, never one above. Packages on one floor
# (a tuple) import none of each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "logs"),
    ("libs",),
    ("spec",),
    ("state",),
    ("sources",),
    ("request",),
    ("emulator",),
    ("backends",),
    ("destinations",),
    ("answers",),
    ("prepare",),
    ("execute",),
    ("commands",),
    ("api",),
    ("cli",),
    ("__main__", "__init__"),
]
# Inside the emulator, the same rule: the wire rules at the bottom, the HTTP server on top.
EMULATOR_LAYERS: list[tuple[str, ...]] = [
    ("wire",),
    ("faults",),
    ("jobs",),
    ("model",),
    ("gemini", "vertex"),
    ("engine",),
    ("routes",),
    ("http",),
    ("server",),
    ("__init__",),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> Iterator[str]:
    """The batchflow modules ``path`` imports (``from pkg import module`` names the module, not the package)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "batchflow":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield full if full in modules else node.module


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {m: {d for d in _imports(p, modules) if d != m} for m, p in files.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
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


def _floor(layers: list[tuple[str, ...]], unit: str) -> int:
    for n, floor in enumerate(layers):
        if unit in floor:
            return n
    raise AssertionError(f"{unit!r} is on no floor of the layers: add it where it belongs")


def _unit(module: str, depth: int) -> str:
    """``batchflow.answers.keep`` -> ``answers`` (depth 1); the package's own ``__init__`` is ``__init__``."""
    parts = module.split(".")
    return parts[depth] if len(parts) > depth else "__init__"


def _upward(graph: dict[str, set[str]], layers: list[tuple[str, ...]], prefix: str) -> list[str]:
    depth = prefix.count(".") + 1
    wrong = []
    for module, deps in graph.items():
        if not (module == prefix or module.startswith(prefix + ".")):
            continue
        mine = _floor(layers, _unit(module, depth))
        for dep in deps:
            if not dep.startswith(prefix + ".") or _unit(dep, depth) == _unit(module, depth):
                continue
            theirs = _floor(layers, _unit(dep, depth))
            if theirs >= mine:
                wrong.append(f"{module} -> {dep}")
    return sorted(wrong)


def test_no_import_circle() -> None:
    assert _circles(_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_no_stage_imports_one_above_it() -> None:
    assert _upward(_graph(), LAYERS, "batchflow") == []


def test_no_part_of_the_emulator_imports_one_above_it() -> None:
    assert _upward(_graph(), EMULATOR_LAYERS, "batchflow.emulator") == []


def test_an_import_up_is_found() -> None:
    graph = {"batchflow.spec.spec": {"batchflow.state.state"}, "batchflow.state.state": set()}
    assert _upward(graph, LAYERS, "batchflow") == ["batchflow.spec.spec -> batchflow.state.state"]


def test_the_emulator_stands_apart_from_the_runner() -> None:
    """The emulator is a product of its own (``batchflow emulator``): it never imports the runner's stages."""
    graph = _graph()
    allowed = ("batchflow.emulator", "batchflow.errors", "batchflow.spec", "batchflow.libs")
    wrong = [f"{m} -> {d}" for m, deps in graph.items() if m.startswith("batchflow.emulator")
             for d in deps if not d.startswith(allowed)]
    assert wrong == []


def _tree(directory: Path, indent: str = "") -> Iterator[str]:
    """The package as docs/architecture.md draws it: folders first, then files, comments stripped."""
    entries = sorted(p for p in directory.iterdir() if p.name != "__pycache__" and not p.name.endswith(".pyc"))
    for p in [e for e in entries if e.is_dir()] + [e for e in entries if e.is_file()]:
        yield f"{indent}{p.name}/" if p.is_dir() else f"{indent}{p.name}"
        if p.is_dir():
            yield from _tree(p, indent + "  ")


def _documented_tree() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("<!-- tree -->", 2)
    assert len(block) == 3, "docs/architecture.md has the tree between <!-- tree --> markers"
    lines = [line for line in block[1].splitlines() if line.strip() and not line.startswith("```")]
    return [line.split("  #", 1)[0].rstrip() for line in lines]


def test_the_documented_tree_is_the_code() -> None:
    expected = ["batchflow/", *("  " + line for line in _tree(PACKAGE))]
    documented = _documented_tree()
    missing = [line for line in expected if line not in documented]
    extra = [line for line in documented if line not in expected]
    assert (missing, extra) == ([], []), "docs/architecture.md's tree differs from batchflow/ (missing, extra)"
    assert documented == expected, "docs/architecture.md lists the tree in another order (folders first, sorted)"


@pytest.mark.parametrize("layers", [LAYERS, EMULATOR_LAYERS])
def test_every_package_is_on_a_floor(layers: list[tuple[str, ...]]) -> None:
    prefix = PACKAGE if layers is LAYERS else PACKAGE / "emulator"
    units = {p.stem if p.is_file() else p.name for p in prefix.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    on_floors = {u for floor in layers for u in floor}
    assert units - on_floors == set()
