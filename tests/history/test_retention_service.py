"""The daily prune: soon after start-up, then shortly after each 00:00 UTC, one node at a time."""

from __future__ import annotations

from datetime import UTC, date, datetime

from twisted.internet import task

from mirrorbits.config import Config, StatsRetention
from mirrorbits.history.retention import DAILY_OFFSET, FIRST_DELAY, LOCK_NAME, RetentionService
from mirrorbits.redis import schema
from tests.fixtures.statsseed import seed
from tests.fixtures.trial import RedisClassTestCase, eventually, run

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()


class RetentionServiceTest(RedisClassTestCase):
    def _service(self, retention: StatsRetention) -> tuple[RetentionService, task.Clock]:
        clock = task.Clock()
        clock.advance(NOW)
        config = Config(Repository="/srv", StatsRetention=retention)
        svc = RetentionService(self.new_client(), lambda: config, clock)
        svc.startService()
        self.addCleanup(svc.stopService)
        return svc, clock

    def test_prunes_after_start_then_daily(self) -> None:
        return run(self._daily())

    async def _daily(self) -> None:
        r = self.server.client()
        seed(r, date(2026, 3, 10), 20, ["/a"], [1])
        old = {k for k in r.keys("STATS_*_2026_0*_*") if k[-10:] < "2026_03_06"}
        assert len(old) > 30
        svc, clock = self._service(StatsRetention(DailyDays=5))
        clock.advance(FIRST_DELAY - 1)
        assert svc.last is None
        clock.advance(1)
        report = await eventually(lambda: svc.last)
        assert {k.name for k in report.keys} == old and not r.keys("STATS_*_2026_02_*")
        assert r.exists("STATS_MIRROR_2026_03_06", "STATS_MIRROR_2026_02", "STATS_MIRROR_2026")
        assert not r.exists(schema.lock_key(LOCK_NAME)), "the lock is released"
        # The next run: at 00:05 UTC the next day, when 03_06 leaves the window.
        svc.last = None
        clock.advance(12 * 3600 - FIRST_DELAY + DAILY_OFFSET - 1)
        day6 = set(r.keys("STATS_*_2026_03_06"))
        assert svc.last is None and "STATS_MIRROR_2026_03_06" in day6
        clock.advance(1)
        report = await eventually(lambda: svc.last)
        assert {k.name for k in report.keys} == day6 and not r.keys("STATS_*_2026_03_06")


    def test_another_node_holding_the_lock_prunes_instead(self) -> None:
        return run(self._locked())

    async def _locked(self) -> None:
        r = self.server.client()
        seed(r, date(2026, 3, 10), 20, ["/a"], [1])
        r.set(schema.lock_key(LOCK_NAME), "other", px=60000)
        svc, _ = self._service(StatsRetention(DailyDays=5))
        assert await svc.run_once() is None
        assert r.exists("STATS_FILE_2026_02_20")

    def test_without_retention_nothing_is_touched(self) -> None:
        return run(self._off())

    async def _off(self) -> None:
        r = self.server.client()
        seed(r, date(2026, 3, 10), 3, ["/a"], [1])
        svc, _ = self._service(StatsRetention())
        assert await svc.run_once() is None
        assert r.exists("STATS_FILE_2026_03_08") and not r.exists(schema.lock_key(LOCK_NAME))


class TopFilesTest(RedisClassTestCase):
    """The top files are chosen by a script in Redis: the same list as a sort here would give."""

    def test_top_files_match_a_full_sort(self) -> None:
        return run(self._top())

    async def _top(self) -> None:
        import random

        from mirrorbits.history.keys import Level
        from mirrorbits.history.reader import top_files

        r = self.server.client()
        rng = random.Random(3)
        counts = {f"/f{i:05d}": rng.randint(1, 30) for i in range(3000)}  # many ties
        r.hset("STATS_FILE_2026_03", mapping=counts)
        client = self.new_client()
        for n in (1, 20, 100):
            top, total, pruned = await top_files(client, (Level.MONTH, date(2026, 3, 1)), n, StatsRetention(),
                                                 date(2026, 3, 10))
            assert top == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
            assert total == 3000 and not pruned
        top, total, pruned = await top_files(client, (Level.MONTH, date(2025, 1, 1)), 20,
                                             StatsRetention(MonthlyMonths=3), date(2026, 3, 10))
        assert top == [] and total == 0 and pruned
