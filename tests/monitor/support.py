"""Helpers shared by the monitor and mirror-scan tests: a real Redis per test class, a client,
collected pub/sub messages, captured log events."""

from __future__ import annotations

from typing import Any

from twisted.logger import globalLogPublisher

from mirrorbits.redis import schema
from tests.fixtures.trial import RedisClassTestCase, eventually, sleep  # noqa: F401 - re-exported


class RedisTestCase(RedisClassTestCase):
    """A trial test case with one redis-server for the class, flushed before each test."""

    def setUp(self) -> None:
        super().setUp()
        self.r = self.server.client()
        self.client = self.new_client()
        self.messages: list[tuple[str, str]] = []
        self.log_events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)

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
