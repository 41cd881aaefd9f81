"""The import structure of pgtasks/: layers import only downward, no module cycle, core has no driver.

Every import counts: at module level, inside functions, and under `if TYPE_CHECKING:` (a type-only
import still ties two modules together). The layers are the ones docs/design.md draws.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pgtasks"

# Lowest first. A module may import its own layer and the ones below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("storage", "sql"),
    ("client", "leadership"),
    ("worker",),
    ("otel",),
    ("app",),
    ("ops",),
    ("dashboard",),
    ("testing", "cli"),
    ("__init__", "__main__"),
]
LAYER_OF = {part: index for index, parts in enumerate(LAYERS) for part in parts}
# Imported only by the layers above the composition root.
APP_IMPORTERS = {"ops", "dashboard", "testing", "cli", "__init__"}
DRIVERS = ("psycopg", "psycopg_pool")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(pgtasks module, line) for every import in `path`, resolved to a module where it names one."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in known else base), node.lineno


def part_of(module: str) -> str:
    """The top-level part of pgtasks a module belongs to: core, storage, ..., app, __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def edges() -> list[tuple[str, str, int]]:
    known = modules()
    found = []
    for name, path in known.items():
        for target, line in imported(path, known):
            found.append((name, target, line))
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    unplaced = sorted({part_of(name) for name in modules()} - set(LAYER_OF))
    assert unplaced == [], f"give {unplaced} a layer in tests/test_layers.py and docs/design.md"


def test_layers_import_only_downward() -> None:
    upward = []
    for source, target, line in edges():
        if not target.startswith("pgtasks"):
            continue
        low, high = part_of(source), part_of(target)
        if LAYER_OF[high] > LAYER_OF[low]:
            upward.append(f"{source}:{line} imports {target} ({low} is below {high})")
    assert upward == [], "imports that run up the layers:\n" + "\n".join(upward)


def test_only_the_layers_above_the_composition_root_import_the_app() -> None:
    importers = [f"{source}:{line}" for source, target, line in edges()
                 if target == "pgtasks.app" and part_of(source) not in APP_IMPORTERS]
    assert importers == [], f"modules below the App that import it: {importers}"


def test_core_does_not_import_the_database_driver() -> None:
    found = [f"{source}:{line} imports {target}" for source, target, line in edges()
             if part_of(source) == "core" and target.split(".")[0] in DRIVERS]
    assert found == [], found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_no_module_cycle_type_only_imports_included() -> None:
    graph: dict[str, set[str]] = {}
    for source, target, _line in edges():
        if target.startswith("pgtasks") and target != source:
            graph.setdefault(source, set()).add(target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(("graph", "cyclic"), [
    ({"a": {"b"}, "b": {"c"}}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"a"}}, True),
])
def test_find_cycle_finds_the_cycles_there_are(graph: dict[str, set[str]], cyclic: bool) -> None:
    assert (find_cycle(graph) is not None) is cyclic
