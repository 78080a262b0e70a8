"""Download counting (http.md §9.4, §10; data-and-scanning §2.8, §2.9) through real redirects
served by a real listener, counted into a real redis-server."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor, task

from mirrorbits.redis import schema
from mirrorbits.web.stats import DownloadStats, utc_day
from tests.fixtures.redis import RedisServer
from tests.web.test_http_cases import Harness, RedirectorTestCase, cmdstat, d, put_file, put_mirror


def today() -> tuple[int, int, int]:
    return utc_day(time.time())


def counters(r: Any, path: str = "/testy.tgz", mid: str = "42") -> dict[str, Any]:
    y, m, dd = today()
    out: dict[str, Any] = {"total": r.get(schema.STATS_TOTAL)}
    for name, fn, field in (("file", schema.stats_file_key, path), ("mirror", schema.stats_mirror_key, mid),
                            ("bytes", schema.stats_mirror_bytes_key, mid)):
        out[name] = [r.hget(k, field) for k in (fn(y, m, dd), fn(y, m), fn(y), fn())]
    return out


class CountingBase(RedirectorTestCase):
    async def counting_harness(self, **overrides: Any) -> tuple[Harness, DownloadStats]:
        h = await self.harness(**overrides)
        stats = h.app.get_download_stats()
        stats.startService()
        self.addCleanup(lambda: stats.stopService() if stats.running else None)
        return h, stats

    async def settle(self, stats: DownloadStats, timeout: float = 5.0) -> None:
        """Wait until nothing is pending in memory (flushed by the 500 ms timer)."""
        for _ in range(int(timeout / 0.05)):
            if not stats.pending() and not stats._dedupes and not stats._busy:
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"{stats.pending()} downloads still pending")


class Counting(CountingBase):
    def setUp(self) -> None:
        super().setUp()
        put_file(self.r, size=48)
        put_mirror(self.r, 42, "http://example.mirror/")

    def test_n_redirects_give_exactly_n(self) -> defer.Deferred[None]:
        async def run() -> None:
            h, stats = await self.counting_harness()
            n = 7
            for _ in range(n):
                resp = await h.request("/testy.tgz")
                self.assertEqual(resp.status, 302)
            # HEAD and JSON never count.
            await h.request("/testy.tgz", method="HEAD")
            h.set_config(OutputMode="json")
            resp = await h.request("/testy.tgz")
            self.assertEqual(resp.status, 200)
            await self.settle(stats)
            c = counters(self.r)
            self.assertEqual(c["total"], str(n))
            self.assertEqual(c["file"], [str(n)] * 4)
            self.assertEqual(c["mirror"], [str(n)] * 4)
            self.assertEqual(c["bytes"], [str(48 * n)] * 4)
        return d(run())

    def test_go_and_python_counters_add_up(self) -> defer.Deferred[None]:
        async def run() -> None:
            y, m, dd = today()
            # What a Go node already wrote today (same keys, same fields).
            for k in (schema.stats_file_key(y, m, dd), schema.stats_file_key()):
                self.r.hincrby(k, "/testy.tgz", 10)
            self.r.hincrby(schema.stats_mirror_key(y, m, dd), "42", 10)
            self.r.hincrby(schema.stats_mirror_bytes_key(y, m, dd), "42", 480)
            self.r.incrby(schema.STATS_TOTAL, 10)
            h, stats = await self.counting_harness()
            for _ in range(3):
                await h.request("/testy.tgz")
            await self.settle(stats)
            c = counters(self.r)
            self.assertEqual(c["total"], "13")
            self.assertEqual(c["file"], ["13", "3", "3", "13"])
            self.assertEqual(c["mirror"][0], "13")
            self.assertEqual(c["bytes"][0], str(480 + 3 * 48))
        return d(run())

    def test_fallback_not_counted_under_fake_ids(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.r.delete(schema.file_mirrors_key("/testy.tgz"))
            h, stats = await self.counting_harness()
            resp = await h.request("/testy.tgz")
            self.assertEqual(resp.header("Location"), "http://fallback.mirror/testy.tgz")
            await self.settle(stats)
            c = counters(self.r, mid="0")
            self.assertEqual(c["file"], ["1"] * 4)
            self.assertEqual(c["total"], "1")
            # Go would write field "0" (quirk 3); no mirror counter at all here.
            self.assertEqual(c["mirror"], [None] * 4)
            self.assertEqual(self.r.keys("STATS_MIRROR*"), [])
        return d(run())

    def test_range_dedup_with_set_get(self) -> defer.Deferred[None]:
        async def run() -> None:
            h, stats = await self.counting_harness(SameDownloadInterval=60)
            self.assertTrue(h.app.get_redis().server_version)
            before_get = cmdstat(self.redis, "get")
            for _ in range(3):
                await h.request("/testy.tgz", headers={"Range": "bytes=0-9", "User-Agent": "ua1"})
            await h.request("/testy.tgz", headers={"Range": "bytes=10-19", "User-Agent": "ua2"})
            await h.request("/testy.tgz", headers={"User-Agent": "ua1"})  # no Range: always counts
            await self.settle(stats)
            gets = cmdstat(self.redis, "get")
            self.assertEqual(counters(self.r)["file"][0], "3")
            keys = sorted(self.r.keys("DOWNLOADED_*"))
            self.assertEqual(len(keys), 2)
            import hashlib

            digest = hashlib.sha256(b"127.0.0.1/ua1").hexdigest()
            self.assertIn(f"DOWNLOADED_{digest}_/testy.tgz", keys)
            ttl = self.r.ttl(keys[0])
            self.assertTrue(0 < ttl <= 60, ttl)
            # Redis >= 6.2: SET ... GET, never a separate GET.
            self.assertEqual(gets, before_get)
        return d(run())

    def test_range_dedup_old_redis_get_then_set(self) -> defer.Deferred[None]:
        async def run() -> None:
            h, stats = await self.counting_harness(SameDownloadInterval=60)
            h.app.get_redis().server_version = "6.0.9"  # as Go behaves below 6.2 (or in sentinel mode)
            before_get = cmdstat(self.redis, "get")
            for _ in range(2):
                await h.request("/testy.tgz", headers={"Range": "bytes=0-9", "User-Agent": "ua"})
            await self.settle(stats)
            self.assertEqual(cmdstat(self.redis, "get"), before_get + 2)
            self.assertEqual(counters(self.r)["file"][0], "1")
        return d(run())

    def test_range_counts_every_time_when_interval_zero(self) -> defer.Deferred[None]:
        async def run() -> None:
            h, stats = await self.counting_harness(SameDownloadInterval=0)
            for _ in range(3):
                await h.request("/testy.tgz", headers={"Range": "bytes=0-9"})
            await self.settle(stats)
            self.assertEqual(counters(self.r)["file"][0], "3")
            self.assertEqual(self.r.keys("DOWNLOADED_*"), [])
        return d(run())

    def test_clean_stop_flushes_right_after_the_last_request(self) -> defer.Deferred[None]:
        async def run() -> None:
            h, stats = await self.counting_harness()
            for _ in range(5):
                await h.request("/testy.tgz")
            self.assertEqual(self.r.get(schema.STATS_TOTAL), None)  # still in memory (< 500 ms)
            # As the daemon stops: the Redis client is stopped in the same tick as the stats.
            dd = stats.stopService()
            await h.app.get_redis().stop()
            await dd
            self.assertEqual(counters(self.r)["file"], ["5"] * 4)
            self.assertEqual(stats.pending(), 0)
        return d(run())


class Outage(CountingBase):
    """Redis stopped for a while in the middle: nothing lost, nothing counted twice."""

    def test_counts_kept_while_redis_is_down(self) -> defer.Deferred[None]:
        # A server of its own, with persistence, so that a stop/start keeps what was written.
        own = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
        self.addCleanup(own.cleanup)
        r = own.client()

        async def run() -> None:
            put_file(r, size=48)
            put_mirror(r, 42, "http://example.mirror/")
            h = Harness(own, self.repo)
            self.addCleanup(lambda: defer.Deferred.fromCoroutine(h.stop()))
            await h.start()
            stats = h.app.get_download_stats()
            stats.startService()
            self.addCleanup(lambda: stats.stopService() if stats.running else None)
            for _ in range(4):
                await h.request("/testy.tgz")
            await self.settle(stats)
            self.assertEqual(counters(r)["total"], "4")
            own.stop()
            # The view answers from memory while Redis is away; 6 more redirects.
            for _ in range(6):
                resp = await h.request("/testy.tgz")
                self.assertEqual(resp.header("Location"), "http://example.mirror/testy.tgz")
            await task.deferLater(reactor, 1.2, lambda: None)  # a few failed flushes
            self.assertEqual(stats.pending(), 6)
            own.start()
            await self.settle(stats, timeout=10)
            c = counters(own.client())
            self.assertEqual(c["total"], "10")
            self.assertEqual(c["file"], ["10"] * 4)
            self.assertEqual(c["mirror"], ["10"] * 4)
            self.assertEqual(c["bytes"], [str(480)] * 4)
            # Stop only once the view's subscriber is back (stopping it while it sleeps between
            # retries trips over a deferLater it already fired: connection.Subscription.stop).
            await h.wait_for(lambda: h.view.subscribed, timeout=10)
        return d(run())
