"""Helpers shared by the monitor and mirror-scan tests: a real Redis per test class, a client,
collected pub/sub messages, captured log events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, RedisSettings
from tests.fixtures.redis import RedisServer


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


async def eventually(check: Callable[[], Any], timeout: float = 5.0, step: float = 0.02) -> None:
    waited = 0.0
    while not check():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await sleep(step)
        waited += step


class RedisTestCase(unittest.TestCase):
    """A trial test case with one redis-server for the class, flushed before each test."""

    timeout = 60
    server: RedisServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = RedisServer().start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.cleanup()

    def setUp(self) -> None:
        self.server.flush()
        self.r = self.server.client()
        self.client = self.new_client()
        self.messages: list[tuple[str, str]] = []
        self.log_events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)

    def new_client(self, db: int = 0) -> RedisClient:
        settings = RedisSettings(address=self.server.address, db=db)
        client = RedisClient(lambda: settings)
        client.start()
        client.set_ready()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(client.stop()))
        return client

    async def listen(self, channels: tuple[str, ...] = (schema.CHANNEL_MIRROR_UPDATE,
                                                        schema.CHANNEL_MIRROR_FILE_UPDATE)) -> None:
        """Collect the messages of ``channels`` in ``self.messages`` from now on."""
        sub = self.client.subscribe(channels, lambda ch, msg: self.messages.append((ch, msg)))
        self.addCleanup(sub.stop)
        await eventually(lambda: sub.subscribed)

    def logged(self, text: str) -> list[str]:
        """Formatted log lines that contain ``text``."""
        from twisted.logger import formatEvent

        lines = [formatEvent(e) for e in self.log_events]
        return [line for line in lines if text in line]

    def mirror_log(self, mirror_id: int) -> list[dict[str, Any]]:
        import json

        return [json.loads(x) for x in self.r.lrange(schema.mirror_logs_key(mirror_id), 0, -1)]
