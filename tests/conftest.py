"""Shared pytest fixtures: real servers on loopback, started once per session where possible."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.redis import RedisServer


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
