"""The redirector's in-memory view (mirrorbits.cache) against a real redis-server: what it reads and
keeps, the LRU, pub/sub refreshes from the Go channels, reconnect handling, deadlines and the warm-up."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from mirrorbits.cache import LRU, MirrorView
from mirrorbits.redis import schema
from mirrorbits.redis.connection import CommandTimeout, RedisClient, RedisSettings, RedisUnavailable
from mirrorbits.selection import ClientLocation, select_mirrors
from tests.fixtures.trial import RedisClassTestCase

MODTIME = "2025-06-01 06:00:00.123456789 +0200 CEST"
PATH = "/test/file.tgz"


def d(coro: Any) -> defer.Deferred[Any]:
    return defer.Deferred.fromCoroutine(coro)


class LRUTests(unittest.SynchronousTestCase):
    def test_lru_semantics(self) -> None:
        lru = LRU(3)
        for k in ("key1", "key2", "key3"):
            lru.set(k, k.upper(), 1)
        self.assertEqual(lru.size, 3)
        lru.set("key4", "KEY4", 1)
        self.assertEqual(lru.size, 3)
        self.assertNotIn("key1", lru)  # the least recently used went
        for k in ("key3", "key2", "key4"):
            self.assertIsNotNone(lru.get(k))
        lru.set("key0", "KEY0", 1)
        self.assertNotIn("key3", lru)
        self.assertEqual(set(lru.keys()), {"key0", "key4", "key2"})
        lru.set("key2", "x", 3)  # re-set: cost difference, then eviction down to capacity
        self.assertEqual(lru.size, 3)
        self.assertEqual(lru.keys(), ["key2"])
        self.assertFalse(lru.delete("nope"))
        self.assertTrue(lru.delete("key2"))
        self.assertEqual(lru.size, 0)

    def test_evict_callback_and_set_cost(self) -> None:
        gone: list[Any] = []
        lru = LRU(10, on_evict=lambda k, v: gone.append(k))
        lru.set("a", 1, 4)
        lru.set("b", 2, 4)
        lru.set_cost("a", 8)  # a is now the largest and most recent: b (older) is evicted first
        self.assertEqual(gone, ["b"])
        self.assertEqual(lru.size, 8)


class ViewTestCase(RedisClassTestCase):
    timeout = 30

    def setUp(self) -> None:
        super().setUp()  # the class's redis-server, restarted if a test stopped it, flushed
        self.redis = self.server
        self.r = self.redis.client()
        self.client = RedisClient(lambda: RedisSettings(address=self.redis.address), reactor)
        self.client.start()
        self.client.set_ready()
        self.view = MirrorView(self.client, reactor)
        self.addCleanup(lambda: d(self.client.stop()))
        self.addCleanup(self.view.stop)

    async def subscribed(self) -> None:
        self.view.start(warm=False)
        await self.wait_for(lambda: self.view.subscribed)

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if predicate():
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("condition not reached in time")

    def evals(self) -> int:
        info = self.r.info("commandstats")
        return int(info.get("cmdstat_eval", {}).get("calls", 0)) + \
            int(info.get("cmdstat_hgetall", {}).get("calls", 0))

    def put_world(self) -> None:
        self.r.hset(schema.file_key(PATH), mapping={"size": "43000", "modTime": MODTIME, "sha1": "s1",
                                                     "sha256": "s256", "md5": "m5"})
        for mid, lat, lon in ((1, "52.5167", "13.3833"), (2, "51.5072", "0.1275")):
            self.r.hset(schema.mirror_key(mid), mapping={
                "ID": str(mid), "name": f"m{mid}", "http": f"http://m{mid}.mirror/", "enabled": "true",
                "httpUp": "true", "httpsUp": "false", "latitude": lat, "longitude": lon,
                "countryCodes": "FR UK", "asnum": "444"})
            self.r.sadd(schema.file_mirrors_key(PATH), str(mid))
            self.r.hset(schema.file_info_key(mid, PATH), mapping={"size": "43000", "modTime": MODTIME})


class ViewCases(ViewTestCase):
    def test_file_info_parsed_and_cached(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_world()
            e = await self.view.load(PATH)
            fi = e.info
            self.assertEqual((fi.path, fi.size, fi.sha1, fi.sha256, fi.md5), (PATH, 43000, "s1", "s256", "m5"))
            self.assertEqual(fi.mod_time_ns, 1748750400123456789)
            self.assertEqual(fi.mod_time_rfc3339(), "2025-06-01T06:00:00.123456789+02:00")
            before = self.evals()
            self.assertIs(self.view.lookup(PATH), e)  # no Redis command for the second read
            self.assertEqual(self.evals(), before)
        return d(run())

    def test_unknown_file_is_a_cached_zero_record(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.r.hset(schema.file_key(PATH), mapping={k: "" for k in schema.FILE_FIELDS})
            e = await self.view.load(PATH)
            self.assertEqual((e.info.size, e.info.mod_time_ns, e.info.sha256), (0, None, ""))
            self.assertFalse(e.known)
            before = self.evals()
            self.assertIs(self.view.lookup("/test/file.tgz"), e)
            self.assertEqual(self.evals(), before)
            e2 = await self.view.load("/never/seen")
            self.assertIsNone(e2.info.mod_time_ns)
        return d(run())

    def test_members_mirrors_fileinfo_distances(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_world()
            self.r.sadd(schema.file_mirrors_key(PATH), "9")  # listed, but no MIRROR_9 hash
            e = await self.view.load(PATH)
            self.assertEqual(sorted(e.ids), [1, 2, 9])
            self.assertEqual(sorted(c.id for c, _ in e.pairs), [1, 2])  # the vanished one is skipped
            m1 = self.view.get_mirror(1)
            src = m1.source.mirror
            self.assertEqual((src.name, src.http_url, src.enabled, src.http_up, src.https_up, src.asnum),
                             ("m1", "http://m1.mirror/", True, True, False, 444))
            self.assertEqual(m1.country_list, ("FR", "UK"))
            self.assertEqual(e.mfiles[1].size, 43000)
            self.assertEqual(e.mfiles[1].mod_time_ns, e.info.mod_time_ns)
            client = ClientLocation("FR", "EU", 0, 48.8567, 2.3508)
            sel = select_mirrors(PATH, e.info.size, e.info.mod_time_ns, e.pairs, client,
                                 for_mirrorlist=True, rng=__import__("random").Random(1))
            self.assertEqual(sorted(int(c.distance) for c in sel.selected), [334, 876])
        return d(run())

    def test_bad_mirror_field_is_skipped_and_fixed_by_update(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_world()
            self.r.hset(schema.mirror_key(2), "latitude", "north")
            await self.subscribed()
            e = await self.view.load(PATH)
            self.assertEqual([c.id for c, _ in e.pairs], [1])
            self.r.hset(schema.mirror_key(2), "latitude", "-20.000000")
            self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "2")
            await self.wait_for(lambda: self.view.get_mirror(2) is not None)
            self.assertEqual(self.view.get_mirror(2).latitude, -20.0)
            self.assertEqual(sorted(c.id for c, _ in self.view.lookup(PATH).pairs), [1, 2])
        return d(run())

    def test_clear(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_world()
            await self.view.load(PATH)
            self.assertEqual(len(self.view), 1)
            self.view.clear()
            self.assertEqual(len(self.view), 0)
            self.assertIsNone(self.view.lookup(PATH))
            self.assertEqual(self.view.mirrors(), {})
        return d(run())

    def test_pubsub_refreshes_each_kind(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_world()
            await self.subscribed()
            e = await self.view.load(PATH)
            old_pairs = e.pairs
            # A Go scan rewrote the local file: FILE_ + file_update.
            self.r.hset(schema.file_key(PATH), "size", "44000")
            self.r.publish(schema.CHANNEL_FILE_UPDATE, PATH)
            await self.wait_for(lambda: self.view.peek(PATH).info.size == 44000)
            # A mirror scan found it on mirror 3: FILEMIRRORS_, FILEINFO_ + mirror_file_update.
            self.r.hset(schema.mirror_key(3), mapping={"ID": "3", "name": "m3", "http": "m3.mirror/",
                                                       "enabled": "1", "httpUp": "1", "httpsUp": "1"})
            self.r.sadd(schema.file_mirrors_key(PATH), "3")
            self.r.hset(schema.file_info_key(3, PATH), mapping={"size": "44000", "modTime": MODTIME})
            self.r.publish(schema.CHANNEL_MIRROR_FILE_UPDATE, f"3 {PATH}")
            # The refresh applies the path's members first, then fetches the mirror it did not know
            # (a second round trip): until that reply the entry cannot be composed and a lookup
            # misses (a request would load it from Redis). Wait for the refresh to be whole.
            await self.wait_for(lambda: self.view.get_mirror(3) is not None)
            self.assertIn(3, self.view.peek(PATH).ids)
            e = self.view.lookup(PATH)
            self.assertIsNotNone(e)
            self.assertIsNot(e.pairs, old_pairs)
            self.assertEqual(sorted(c.id for c, _ in e.pairs), [1, 2, 3])
            # Mirror 1 disabled by a Go node: MIRROR_ + mirror_update.
            gen = self.view.gen
            self.r.hset(schema.mirror_key(1), "enabled", "0")
            self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "1")
            await self.wait_for(lambda: not self.view.get_mirror(1).mirror.enabled)
            self.assertGreater(self.view.gen, gen)
            # An unchanged record (a health check) keeps the candidate object and the generation.
            cand, gen = self.view.get_mirror(2), self.view.gen
            refreshes = self.view.stats["refreshes"]
            self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "2")
            self.r.publish(schema.CHANNEL_MIRROR_FILE_UPDATE, "no-space")  # Go crashes; a no-op
            self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "x")
            # Not a pause (on a loaded machine the refresh could come after it, and the assertions
            # below would hold vacuously): wait for the refresh to be sent, then for a PING sent
            # after it on the same connection, whose reply comes after the refresh's own.
            await self.wait_for(lambda: self.view.stats["refreshes"] > refreshes)
            self.assertEqual(await self.client.execute("PING"), "PONG")
            self.assertIs(self.view.get_mirror(2), cand)
            self.assertEqual(self.view.gen, gen)
            # A removed mirror (empty hash) disappears from the pairs.
            self.r.delete(schema.mirror_key(2))
            self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "2")
            await self.wait_for(lambda: self.view.get_mirror(2) is None)
            self.assertEqual(sorted(c.id for c, _ in self.view.lookup(PATH).pairs), [1, 3])
        return d(run())

    def test_end_of_scan_record_update_keeps_the_plans(self) -> defer.Deferred[None]:
        """A mirror scan ends by rewriting the mirror's sync times (as Go's does) and announcing the
        record: the view keeps the candidate and its generation (so the redirector's plans stay
        valid) but shows the new times; any other change still makes a new candidate."""
        async def run() -> None:
            self.put_world()
            await self.subscribed()
            e = await self.view.load(PATH)
            self.assertIsNotNone(e)
            cand, gen = self.view.get_mirror(1), self.view.gen
            cand.source.json_parts = ([], [])  # what a JSON answer leaves cached on the record
            self.r.hset(schema.mirror_key(1), mapping={
                "lastSync": "1764979200", "lastSuccessfulSync": "1764979200",
                "lastSuccessfulSyncProtocol": "1", "lastModTime": "1764975600"})
            self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "1")
            await self.wait_for(lambda: self.view.get_mirror(1).mirror.last_sync is not None)
            self.assertIs(self.view.get_mirror(1), cand)
            self.assertEqual(self.view.gen, gen)
            self.assertIs(self.view.lookup(PATH).pairs, e.pairs)
            self.assertIs(cand.source.mirror, cand.mirror)
            self.assertIsNone(cand.source.json_parts)
            self.assertIsNotNone(cand.mirror.last_successful_sync)
            self.assertIsNotNone(cand.mirror.last_mod_time)
            # The same announcement with a field selection reads: a new candidate, a new generation.
            self.r.hset(schema.mirror_key(1), "score", "7")
            self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "1")
            await self.wait_for(lambda: self.view.get_mirror(1).score == 7)
            self.assertIsNot(self.view.get_mirror(1), cand)
            self.assertGreater(self.view.gen, gen)
        return d(run())

    def test_reconnect_clears_and_rewarms(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_world()
            self.r.sadd(schema.FILES, PATH)
            self.r.hset(schema.MIRRORS, mapping={"1": "m1", "2": "m2"})
            self.view.start(warm=True)
            await self.wait_for(lambda: self.view.lookup(PATH) is not None and self.view.subscribed)
            clears = self.view.stats["clears"]
            # A change made while the subscriber is away is never announced to us...
            self.r.client_kill_filter(_type="pubsub")
            self.r.hset(schema.file_key(PATH), "size", "1")
            # ...so the reconnect clears the view, and the re-warm picks the change up.
            await self.wait_for(lambda: self.view.stats["clears"] > clears, timeout=10)
            await self.wait_for(lambda: (self.view.peek(PATH) is not None
                                         and self.view.peek(PATH).info.size == 1))
        return d(run())

    def test_warm_loads_every_file_and_mirror(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_world()
            paths = [f"/f/{i}" for i in range(120)] + [PATH]
            for p in paths[:-1]:
                self.r.hset(schema.file_key(p), mapping={"size": "1", "modTime": MODTIME})
                self.r.sadd(schema.file_mirrors_key(p), "1")
                self.r.hset(schema.file_info_key(1, p), mapping={"size": "1", "modTime": MODTIME})
            self.r.sadd(schema.FILES, *paths)
            self.r.hset(schema.MIRRORS, mapping={"1": "m1", "2": "m2"})
            await self.view.warm()
            self.assertEqual(len(self.view), len(paths))
            before = self.evals()
            for p in paths:
                self.assertIsNotNone(self.view.lookup(p), p)
            self.assertEqual(self.evals(), before)
        return d(run())

    def test_redis_down_keeps_the_view_and_fails_fast(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_world()
            await self.view.load(PATH)
            self.redis.kill()
            try:
                self.assertIsNotNone(self.view.lookup(PATH))
                with self.assertRaises(RedisUnavailable):
                    await self.view.load("/other")
            finally:
                self.redis.start()
        return d(run())

    def test_hung_load_leaves_the_inflight_table_at_its_deadline(self) -> defer.Deferred[None]:
        """A miss while Redis does not answer (``CLIENT PAUSE``) fails at the view's load deadline,
        for the first caller and for the one that joined it, and leaves nothing in flight: the next
        miss after Redis is back asks Redis again and gets the file."""
        async def run() -> None:
            self.put_world()
            await self.client.execute("PING")
            self.view.load_timeout = 0.3
            self.r.client_pause(1500)
            first = d(self.view.load(PATH))
            joined = d(self.view.load(PATH))  # shares the first load
            for waiting in (first, joined):
                with self.assertRaises(CommandTimeout):
                    await waiting
            self.assertNotIn(PATH, self.view._inflight)
            self.view.load_timeout = 5.0
            e = await self.view.load(PATH)  # waits out the pause on a fresh load
            self.assertIsNotNone(e)
            assert e is not None and e.info is not None
            self.assertEqual(e.info.size, 43000)
            self.assertEqual(e.ids, (1, 2))
        return d(run())
