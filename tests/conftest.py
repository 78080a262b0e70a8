"""Shared pytest fixtures: real servers on loopback, started once per session where possible.

The session also checks that it stops what it starts: at the end, any process still alive in a
process group a fixture spawned (``tests.fixtures.processes``), in pytest's own process group, or
as a child of pytest, that did not exist when the tests began, is printed, killed, and fails the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.fixtures import processes
from tests.fixtures.redis import RedisServer

#: Processes alive before any test ran (pytest itself, its parent shell, a pipeline's other end).
_BEFORE = {p.pid for p in processes.processes()}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's redis-server, flushed before and after the test."""
    redis_server.flush()
    yield redis_server
    if redis_server.proc is not None:
        redis_server.flush()


@pytest.fixture
def local_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Switch the process' local zone (TZ + tzset) for one test, restored afterwards: Go texts
    name the local zone (``CET``) or print its offset."""
    def set_tz(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
    yield set_tz
    monkeypatch.undo()
    time.tzset()


def leftover_processes() -> list[processes.ProcessInfo]:
    """Processes the test run started that are still alive."""
    me, my_group = os.getpid(), os.getpgrp()
    return [p for p in processes.processes()
            if p.pid not in _BEFORE and p.pid != me
            and (p.pgid in processes.SPAWNED or p.pgid == my_group or p.ppid == me)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = leftover_processes()
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    title = f"{len(left)} process(es) started by the tests outlived them (killed now)"
    lines = [f"pid {p.pid} (group {p.pgid}, parent {p.ppid}): {p.command}" for p in left]
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", title, red=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join([title, *lines]))
    for p in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    for p in left:
        if p.ppid == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, 0)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
