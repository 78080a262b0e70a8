"""When the download counters reach Redis: every ``FLUSH_INTERVAL`` (on a ``task.Clock``), and at
once on stop. Redis is real; only the counter's timer runs on the fake clock."""

from __future__ import annotations

from twisted.internet import defer, task

from mirrorbits.config import Config
from mirrorbits.redis import schema
from mirrorbits.web.stats import FLUSH_INTERVAL, DownloadStats
from tests.fixtures.trial import RedisClassTestCase, eventually, sleep


class FlushTimerTests(RedisClassTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.r = self.server.client()
        self.clock = task.Clock()
        self.stats = DownloadStats(self.new_client(), lambda: Config(), self.clock)

    def total(self) -> str | None:
        value = self.r.get(schema.STATS_TOTAL)
        return None if value is None else str(value)

    async def _every_interval(self) -> None:
        self.stats.startService()
        self.addCleanup(self._stop)
        for _ in range(3):
            self.stats.count("/a.iso", 1, 10)
        self.clock.advance(FLUSH_INTERVAL - 0.01)
        await sleep(0.1)
        self.assertEqual((self.stats.pending(), self.total()), (3, None))  # not yet
        self.clock.advance(0.01)
        await eventually(lambda: self.total() == "3")
        self.assertEqual(self.stats.pending(), 0)
        self.stats.count("/a.iso", 1, 10)
        self.clock.advance(FLUSH_INTERVAL)
        await eventually(lambda: self.total() == "4")
        self.assertEqual(self.r.hget(schema.stats_mirror_bytes_key(), "1"), "40")

    def test_flushed_every_interval(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._every_interval())

    async def _stop(self) -> None:
        if self.stats.running:
            stopping = self.stats.stopService()
            self.clock.advance(0)  # the stop lets the services stopped with it run first
            await stopping

    async def _on_stop(self) -> None:
        self.stats.startService()
        for _ in range(2):
            self.stats.count("/a.iso", 1, 10)
        await self._stop()  # no timer tick: the stop itself writes them
        self.assertEqual((self.stats.pending(), self.total()), (0, "2"))

    def test_stop_writes_what_is_pending(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._on_stop())
