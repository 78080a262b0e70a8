"""Fixtures of the lifecycle tests: a real redis-server seeded with a small world (see helpers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.redis import RedisServer
from tests.lifecycle.helpers import seed_world


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    seed_world(server.client())
    yield server
    server.cleanup()
