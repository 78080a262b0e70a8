"""Fixtures of the fault tests: the lifecycle tests' real redis-server seeded with one file."""

from tests.lifecycle.conftest import redis

__all__ = ["redis"]
