"""The admin surface is declared once (``mirrorbits.admin.interface.AdminAPI``): the implementation on
Redis, the AMP channel (server and client), the CLI commands and the manhole must all agree with it.
Each test fails when an operation exists in one place and not in the others."""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from collections.abc import Callable
from types import ModuleType

import pytest
from twisted.internet import defer

from mirrorbits.admin import cli, manhole, rpc
from mirrorbits.admin.commands import AdminCommands
from mirrorbits.admin.interface import OPERATIONS, AdminAPI, wire_types


def _public_coroutines(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if not name.startswith("_") and inspect.iscoroutinefunction(member)
            and member.__qualname__ == f"{cls.__name__}.{name}"}  # not a field holding a function


def _shape(sig: inspect.Signature) -> list[tuple[str, object, object]]:
    """Parameter names, kinds and defaults (annotations are compared by mypy, which sees their types)."""
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("implementation", [AdminCommands, rpc.RemoteAdmin])
def test_implementations_offer_exactly_the_declared_operations(implementation: type) -> None:
    assert AdminAPI in implementation.__mro__
    offered = _public_coroutines(implementation)
    assert sorted(offered) == sorted(OPERATIONS), "operations missing from, or extra in, " + implementation.__name__
    for name, op in OPERATIONS.items():
        assert _shape(offered[name]) == _shape(op.signature), name
        assert typing.get_type_hints(getattr(implementation, name)) == \
            typing.get_type_hints(getattr(AdminAPI, name)), name


def test_the_channel_accepts_the_declared_operations_and_carries_their_types() -> None:
    assert rpc.METHODS == frozenset(OPERATIONS)
    names = {t.__name__ for t in wire_types()}
    assert {"Mirror", "MirrorRef", "AddResult", "GeoUpdateResult", "ScanReply", "StatsMirrorReply",
            "VersionInfo"} <= names
    # The remote deadlines are the declared ones (remove 60 s, no deadline for refresh and scan).
    assert OPERATIONS["remove_mirror"].deadline == 60.0
    assert OPERATIONS["refresh"].deadline is None and OPERATIONS["scan_mirror"].deadline is None
    assert OPERATIONS["list_mirrors"].deadline == 10.0


def _operations_called(func: Callable[..., object], module: ModuleType, seen: set[str]) -> set[str]:
    """Operations a CLI command calls on its ``admin`` object, following the module's helpers."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = node.func
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                and target.value.id == "admin":
            found.add(target.attr)
        elif isinstance(target, ast.Name) and target.id not in seen:
            helper = vars(module).get(target.id)
            if inspect.isfunction(helper) and helper.__module__ == module.__name__:
                seen.add(target.id)
                found |= _operations_called(helper, module, seen)
    return found


def test_cli_commands_call_the_operations_they_declare() -> None:
    table = cli.COMMAND_FUNCTIONS
    declared: dict[str, set[str]] = {name: set() for name in table}
    for op in OPERATIONS.values():
        for command in op.cli:
            assert command in table, f"{op.name} names the CLI command {command!r}, which does not exist"
            declared[command].add(op.name)
    used_by_cli = set()
    for name, func in table.items():
        module = inspect.getmodule(func)
        assert module is not None
        called = _operations_called(func, module, set())
        assert called <= set(OPERATIONS), f"{name} calls {called - set(OPERATIONS)}, not in AdminAPI"
        assert called == declared[name], f"CLI command {name!r}: calls {sorted(called)}, " \
                                         f"AdminAPI declares {sorted(declared[name])}"
        used_by_cli |= called
    # Every operation is reachable from the CLI, except ping (the channel's password check).
    assert set(OPERATIONS) - used_by_cli == {"ping"}
    assert OPERATIONS["ping"].cli == ()


def test_the_manhole_offers_every_cli_command() -> None:
    """The manhole's command functions come from the CLI table; each builds the CLI command line."""
    lines: list[list[str]] = []

    def call(argv: list[str]) -> defer.Deferred[manhole.Text]:
        lines.append(argv)
        return defer.succeed(manhole.Text(""))

    functions = manhole.cli_functions(call)
    assert set(functions) == set(cli.COMMAND_FUNCTIONS)
    functions["list"](down=True)
    functions["enable"]("m1")
    functions["scan"]("m1", timeout=30)
    assert lines == [["list", "-down=true"], ["enable", "m1"], ["scan", "-timeout=30", "m1"]]
