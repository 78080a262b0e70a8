"""The package's import graph has no cycle.

Dependencies point one way (entry points -> service tree -> subsystems -> model/schema/gocompat): a
cycle means two modules cannot be understood, tested or loaded one without the other, and a
function-level import is the usual way one hides.  So this walks every module of ``mirrorbits`` with
:mod:`ast` and collects both module-level and function-level imports; only imports under
``if TYPE_CHECKING:`` are left out (they exist for the type checker alone, never at run time).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "mirrorbits"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, except those guarded by ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:  # the ``else:`` branch does run
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    yield sub
                yield from _imports(sub)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _imports(child)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for stmt in _imports(tree):
        if isinstance(stmt, ast.Import):
            targets = [alias.name for alias in stmt.names]
        else:
            if stmt.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[:len(base) - (stmt.level - 1)]
                prefix = ".".join(base + ([stmt.module] if stmt.module else []))
            else:
                prefix = stmt.module or ""
            # ``from pkg import mod`` imports the submodule ``pkg.mod``; ``from mod import name``
            # imports ``mod`` (and its package's __init__, which is not an edge of ours).
            targets = [f"{prefix}.{alias.name}" for alias in stmt.names] + [prefix]
        for target in targets:
            if not target.startswith(PACKAGE):
                continue
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            for child in children:
                if colour.get(child, BLACK) == GREY:
                    path = [n for n, _ in stack]
                    return path[path.index(child):] + [child]
                if colour.get(child) == WHITE:
                    colour[child] = GREY
                    stack.append((child, iter(sorted(graph.get(child, ())))))
                    break
            else:
                colour[node] = BLACK
                stack.pop()
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50, "the walk found the package's modules"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_is_found_and_named() -> None:
    """The search itself: a cycle hidden behind a function-level import is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_function_level_imports_count_and_type_checking_ones_do_not(tmp_path: Path) -> None:
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from mirrorbits.app import Mirrorbits\n"
        "def f():\n"
        "    from mirrorbits.web import resource\n"
        "    from . import config\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(src)
    modules = {"mirrorbits.app": path, "mirrorbits.web.resource": path, "mirrorbits.web.config": path,
               "mirrorbits.web.mod": path, "mirrorbits.web": path}
    assert imported_modules("mirrorbits.web.mod", path, modules) == {
        "mirrorbits.web.resource", "mirrorbits.web.config", "mirrorbits.web"}


@pytest.mark.parametrize("module", ["mirrorbits.admin.cli", "mirrorbits.admin.manhole"])
def test_the_command_table_does_not_reach_the_daemon(module: str) -> None:
    """The CLI commands (also the manhole's) are a client: they never pull in the daemon's assembly."""
    graph = import_graph()
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    assert not seen & {"mirrorbits.service", "mirrorbits.lifecycle.daemon"}, sorted(seen)
