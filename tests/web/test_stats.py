"""Download counting through real redirects
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
                # GET then SET is not atomic (Go's own sequence below 6.2): a second request whose
                # GET overtakes the first one's SET counts too, so each check completes first.
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


class _Conf:
    SameDownloadInterval = 0


def _levels(fn: Any, day: tuple[int, int, int]) -> list[bytes]:
    y, m, dd = day
    return [k.encode() for k in (fn(y, m, dd), fn(y, m), fn(y), fn())]


class FlushScript(RedirectorTestCase):
    """The flush is one Lua script: same keys, fields and sums as one HINCRBY per (key, field) would
    write, one script per flush whatever the number of requests, MULTI's error semantics."""

    def direct(self, now: list[float]) -> DownloadStats:
        from mirrorbits.redis.connection import RedisClient, RedisSettings

        client = RedisClient(lambda: RedisSettings(address=self.redis.address), reactor)
        client.start()
        client.set_ready()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(client.stop()))
        return DownloadStats(client, lambda: _Conf(), reactor, clock=lambda: now[0])

    def test_same_writes_as_one_hincrby_per_key_and_field(self) -> defer.Deferred[None]:
        import random
        from collections import Counter

        midnight = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC
        self.assertEqual(time.gmtime(midnight)[3:6], (0, 0, 0))
        paths = ["/a.iso", "/12:34", "/d:1:x/3:y", "/ünï/ço dé.tar", "/bad\udcff.bin", "/z" * 40]
        sizes = {p: (i * 1000 + 7 if i else 0) for i, p in enumerate(paths)}  # /a.iso: size 0
        rng = random.Random(5)
        now = [midnight - 1.5]
        stats = self.direct(now)
        expected: Counter[tuple[bytes, bytes]] = Counter()
        total = 0
        # Evening of one day, morning of the next, then a clock stepped back to the first day.
        for t in (midnight - 1.5, midnight - 0.001, midnight, midnight + 3600, midnight - 30):
            now[0] = t
            day = utc_day(t)
            for _ in range(40):
                p = rng.choice(paths)
                mid = rng.choice([1, 42, 1000, None])
                stats.count(p, mid, sizes[p])
                total += 1
                for k in _levels(schema.stats_file_key, day):
                    expected[(k, p.encode("utf-8", "surrogateescape"))] += 1
                if mid is not None:
                    for k in _levels(schema.stats_mirror_key, day):
                        expected[(k, b"%d" % mid)] += 1
                    if sizes[p]:
                        for k in _levels(schema.stats_mirror_bytes_key, day):
                            expected[(k, b"%d" % mid)] += sizes[p]

        # A mirror that only served empty files: a download count, no bytes field at all (the
        # per-command flush skipped zero increments).
        for _ in range(2):
            stats.count("/a.iso", 7, 0)
            total += 1
            for k in _levels(schema.stats_file_key, utc_day(now[0])):
                expected[(k, b"/a.iso")] += 1
            for k in _levels(schema.stats_mirror_key, utc_day(now[0])):
                expected[(k, b"7")] += 1

        async def run() -> None:
            evals, multis = cmdstat(self.redis, "eval"), cmdstat(self.redis, "multi")
            self.assertTrue(await stats.flush())
            self.assertEqual(stats.pending(), 0)
            self.assertEqual(cmdstat(self.redis, "eval"), evals + 1)  # one script for both days
            self.assertEqual(cmdstat(self.redis, "multi"), multis)
            self.assertTrue(await stats.flush())  # nothing pending: nothing sent
            self.assertEqual(cmdstat(self.redis, "eval"), evals + 1)
            rb = self.redis.client(decode=False)
            got: dict[tuple[bytes, bytes], int] = {}
            for key in rb.keys(b"STATS_*"):
                if key == schema.STATS_TOTAL.encode():
                    continue
                for field, value in rb.hgetall(key).items():
                    got[(key, field)] = int(value)
            self.assertEqual(got, dict(expected))
            self.assertEqual(rb.get(schema.STATS_TOTAL), b"%d" % total)
            self.assertNotIn((schema.stats_mirror_bytes_key().encode(), b"7"), got)
        return d(run())

    def test_redis_work_follows_distinct_keys_not_requests(self) -> defer.Deferred[None]:
        now = [time.time()]
        stats = self.direct(now)

        async def run() -> None:
            before = cmdstat(self.redis, "hincrby"), cmdstat(self.redis, "incrby")
            for i in range(3000):
                stats.count(f"/f{i % 3}", 40 + i % 2, 10)
            self.assertTrue(await stats.flush())
            # 3 paths x 4 levels + 2 mirrors x 4 levels x (count, bytes); one INCRBY of the total.
            self.assertEqual(cmdstat(self.redis, "hincrby") - before[0], 3 * 4 + 2 * 4 * 2)
            self.assertEqual(cmdstat(self.redis, "incrby") - before[1], 1)
            self.assertEqual(self.r.get(schema.STATS_TOTAL), "3000")
            self.assertEqual(self.r.hget(schema.stats_mirror_bytes_key(), "41"), "15000")
        return d(run())

    def test_a_key_of_the_wrong_type_loses_only_its_own_increments(self) -> defer.Deferred[None]:
        now = [time.time()]
        y, m, _ = utc_day(now[0])
        stats = self.direct(now)
        bad = schema.stats_file_key(y, m)
        self.r.set(bad, "not a hash")
        self.r.hset(schema.STATS_TOTAL, "x", "1")  # the script's very first write fails too

        async def run() -> None:
            for _ in range(3):
                stats.count("/testy.tgz", 42, 48)
            self.assertTrue(await stats.flush())
            self.assertEqual(stats.pending(), 0)  # not retried: that would count the rest twice
            self.assertTrue(await stats.flush())
            self.assertEqual(self.r.get(bad), "not a hash")
            self.assertEqual(self.r.hgetall(schema.STATS_TOTAL), {"x": "1"})
            self.r.delete(bad, schema.STATS_TOTAL)
            c = counters(self.r)
            self.assertEqual(c["file"], ["3", None, "3", "3"])
            self.assertEqual(c["mirror"], ["3"] * 4)
            self.assertEqual(c["bytes"], ["144"] * 4)
        return d(run())

    def test_refused_before_any_write_keeps_everything_for_the_retry(self) -> defer.Deferred[None]:
        now = [time.time()]
        stats = self.direct(now)
        self.r.set("filler", "x" * 1000)
        self.r.config_set("maxmemory", "1")  # every write is refused: OOM (noeviction)
        self.addCleanup(self.r.config_set, "maxmemory", "0")

        async def run() -> None:
            for _ in range(5):
                stats.count("/testy.tgz", 42, 48)
            self.assertFalse(await stats.flush())
            self.assertEqual(stats.pending(), 5)
            self.assertEqual(self.r.keys("STATS_*"), [])
            stats.count("/testy.tgz", 42, 48)
            self.r.config_set("maxmemory", "0")
            self.assertTrue(await stats.flush())
            c = counters(self.r)
            self.assertEqual(c["total"], "6")
            self.assertEqual(c["file"], ["6"] * 4)
            self.assertEqual(c["bytes"], ["288"] * 4)
        return d(run())
