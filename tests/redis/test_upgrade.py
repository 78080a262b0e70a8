"""Schema version check and the v0→v1→v2 upgraders against a real redis-server.

The databases are built the way the Go original writes them, and the results are
compared key by key and field by field; keys an upgrade must not touch are compared by their DUMP.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from mirrorbits.redis import upgrade
from mirrorbits.redis.connection import RedisClient, RedisSettings
from mirrorbits.redis.upgrade import (
    UnsupportedSchema,
    UpgradeError,
    check_and_upgrade,
    copy_key,
    order_renames,
)
from tests.fixtures import processes
from tests.fixtures.redis import RedisServer, redis_server_binary
from tests.fixtures.servers import free_port
from tests.fixtures.trial import RedisClassTestCase, run, sleep

Snapshot = dict[bytes, tuple[bytes, int]]


def snapshot(r: Any) -> Snapshot:
    """Every key with its DUMP payload and TTL (a byte-exact picture of the database)."""
    return {k: (r.dump(k), r.pttl(k)) for k in r.keys(b"*")}


def contents(r: Any) -> dict[bytes, Any]:
    """Every key's value as Python data (bytes), for field-by-field comparisons."""
    out: dict[bytes, Any] = {}
    for k in r.keys(b"*"):
        kind = r.type(k)
        if kind == b"string":
            out[k] = r.get(k)
        elif kind == b"hash":
            out[k] = r.hgetall(k)
        elif kind == b"set":
            out[k] = r.smembers(k)
        elif kind == b"list":
            out[k] = r.lrange(k, 0, -1)
        else:
            raise AssertionError(f"unexpected type {kind!r} of {k!r}")
    return out


NON_UTF8 = b"/caf\xe9.iso"  # a Latin-1 file name: must survive byte for byte


def build_v2(r: Any) -> None:
    """A v2 database as the Go original writes it."""
    r.set(b"MIRRORBITS_DB_VERSION", b"2")
    r.set(b"LAST_MID", b"2")
    r.hset(b"MIRRORS", mapping={b"1": b"alpha", b"2": b"beta"})
    r.hset(b"MIRROR_1", mapping={
        b"ID": b"1", b"name": b"alpha", b"http": b"https://alpha.example.org/pub/",
        b"rsync": b"rsync://alpha.example.org/pub/", b"ftp": b"", b"sponsorName": b"",
        b"continentOnly": b"0", b"countryOnly": b"0", b"asOnly": b"0", b"score": b"0",
        b"latitude": b"48.8582", b"longitude": b"2.2945", b"continentCode": b"EU",
        b"countryCodes": b"FR DE", b"excludedCountryCodes": b"", b"asnum": b"0",
        b"allowredirects": b"0", b"enabled": b"1", b"httpUp": b"0", b"httpsUp": b"1",
        b"httpsDownReason": b"", b"stateSince": b"1707052800", b"lastSync": b"1707052800",
        b"lastSuccessfulSync": b"1707052800", b"lastSuccessfulSyncProtocol": b"0",
        b"lastSuccessfulSyncPrecision": b"1000000000", b"tzoffset": b"-3600000"})
    r.hset(b"MIRROR_2", mapping={
        b"ID": b"2", b"name": b"beta", b"http": b"beta.example.org/", b"enabled": b"0",
        b"httpUp": b"1", b"httpsUp": b"0", b"httpsDownReason": b"Unreachable"})
    r.sadd(b"FILES", b"/a", NON_UTF8)
    r.hset(b"FILE_/a", mapping={b"size": b"10", b"modTime": b"2019-03-04 12:34:56.5 +0100 CET",
                                b"sha1": b"", b"sha256": b"ab" * 32, b"md5": b""})
    r.hset(b"FILE_" + NON_UTF8, mapping={b"size": b"3", b"modTime": b"0001-01-01 00:00:00 +0000 UTC"})
    r.sadd(b"FILEMIRRORS_/a", b"1", b"2")
    r.sadd(b"FILEMIRRORS_" + NON_UTF8, b"1")
    r.hset(b"FILEINFO_1_/a", mapping={b"size": b"10", b"modTime": b"2019-03-04 11:34:56 +0000 UTC"})
    r.sadd(b"MIRRORFILES_1", b"/a", NON_UTF8)
    r.sadd(b"HANDLEDFILES_1", b"/a", NON_UTF8)
    r.rpush(b"MIRRORLOGS_1", b'{"Type":2,"MirrorID":1,"Timestamp":"2024-01-02T03:04:05.5+01:00"}')
    r.set(b"STATS_TOTAL", b"42")
    r.hset(b"STATS_FILE_2024_01_02", b"/a", b"40")
    r.hset(b"STATS_MIRROR_2024_01_02", mapping={b"1": b"30", b"2": b"10"})
    r.hset(b"STATS_MIRROR", b"1", b"30")
    r.hset(b"STATS_MIRROR_BYTES_2024", b"1", b"300")
    r.set(b"DOWNLOADED_" + b"0" * 64 + b"_/a", b"1", ex=3600)


def build_v1(r: Any) -> None:
    """A v1 database: one ``up``/``excludeReason`` per mirror."""
    r.set(b"MIRRORBITS_DB_VERSION", b"1")
    r.set(b"LAST_MID", b"4")
    r.hset(b"MIRRORS", mapping={b"1": b"tls", b"2": b"plain", b"3": b"noscheme", b"4": b"fresh"})
    r.hset(b"MIRROR_1", mapping={b"ID": b"1", b"name": b"tls", b"http": b"https://tls.example.org/",
                                 b"enabled": b"1", b"up": b"1", b"excludeReason": b"",
                                 b"score": b"5"})
    r.hset(b"MIRROR_2", mapping={b"ID": b"2", b"name": b"plain", b"http": b"http://plain.example.org/",
                                 b"enabled": b"1", b"up": b"false",
                                 b"excludeReason": b"Got status code 503"})
    r.hset(b"MIRROR_3", mapping={b"ID": b"3", b"name": b"noscheme", b"http": b"ns.example.org/",
                                 b"up": b"T", b"excludeReason": NON_UTF8})
    # Never checked: neither field exists.
    r.hset(b"MIRROR_4", mapping={b"ID": b"4", b"name": b"fresh", b"http": b"https://fresh.example.org/",
                                 b"enabled": b"0"})
    r.sadd(b"FILES", b"/a")
    r.hset(b"FILE_/a", mapping={b"size": b"10", b"modTime": b"2019-03-04 12:34:56 +0100 CET"})
    r.sadd(b"FILEMIRRORS_/a", b"1", b"2")
    r.hset(b"FILEINFO_1_/a", b"size", b"10")
    r.sadd(b"MIRRORFILES_1", b"/a")
    r.sadd(b"HANDLEDFILES_1", b"/a")
    r.hset(b"STATS_MIRROR_2024", mapping={b"1": b"7", b"2": b"1"})


def build_v0(r: Any) -> None:
    """A legacy v0 database: mirrors identified by name."""
    r.set(b"LAST_MID", b"10")  # ids continue from here: 11, 12, 13
    r.rpush(b"MIRRORS", b"alpha", b"beta", b"gamma")
    r.hset(b"MIRROR_alpha", mapping={b"ID": b"alpha", b"http": b"http://a.example.org/",
                                     b"up": b"1", b"excludeReason": b"x", b"score": b"3"})
    r.hset(b"MIRROR_beta", mapping={b"ID": b"beta", b"http": b"https://b.example.org/", b"up": b"0"})
    r.hset(b"MIRROR_gamma", mapping={b"ID": b"gamma", b"http": b"c.example.org/"})
    r.sadd(b"MIRROR_alpha_FILES", b"/a", NON_UTF8)
    r.hset(b"FILEINFO_alpha_/a", b"size", b"1")
    r.hset(b"FILEINFO_alpha_" + NON_UTF8, b"size", b"2")
    r.sadd(b"HANDLEDFILES_alpha", b"/a")
    r.sadd(b"MIRROR_beta_FILES", b"/a")
    r.hset(b"FILEINFO_beta_/a", b"size", b"1")
    r.sadd(b"FILES", b"/a", b"/c", NON_UTF8)
    r.sadd(b"FILEMIRRORS_/a", b"alpha", b"beta")
    r.sadd(b"FILEMIRRORS_" + NON_UTF8, b"alpha", b"removed")
    r.sadd(b"FILEMIRRORS_/c", b"removed")  # no name maps: stays name-based (quirk)
    r.sadd(b"FILEMIRRORS_/z", b"alpha")  # not in FILES: never converted (quirk)
    r.hset(b"STATS_MIRROR_2024_01_02", mapping={b"alpha": b"5", b"beta": b"3", b"removed": b"9"})
    r.hset(b"STATS_MIRROR_BYTES_2024", b"alpha", b"100")
    r.hset(b"STATS_MIRROR_BYTES", b"beta", b"1")  # matches STATS_MIRROR_*: converted
    r.hset(b"STATS_MIRROR", b"alpha", b"7")  # all-time: not converted (quirk)
    r.hset(b"STATS_FILE", b"/a", b"8")
    # Left over by an earlier failed upgrade: must be wiped, not renamed over FILEMIRRORS_/c.
    r.sadd(b"V1_FILEMIRRORS_/c", b"99")
    r.hset(b"V2_MIRROR_1", b"junk", b"1")


class UpgradeTestBase(RedisClassTestCase):
    timeout = 30

    def setUp(self) -> None:
        super().setUp()
        self.r = self.server.client(decode=False)
        self.logs: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if str(event.get("log_namespace", "")).startswith("mirrorbits.redis"):
                self.logs.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def clock_round(self, clock: task.Clock, waiters: int = 1, timeout: float = 10.0) -> None:
        """Once ``waiters`` checks wait on ``clock`` (their Redis round trips are real), move it on
        by one retry delay."""
        for _ in range(int(timeout / 0.005)):
            await sleep(0.005)
            if len(clock.getDelayedCalls()) >= waiters:
                clock.advance(upgrade.RETRY_DELAY)
                return
        raise AssertionError(f"{waiters} check(s) never waited on the clock")

    def new_client(self, address: str | None = None) -> RedisClient:
        settings = RedisSettings(address=address or self.server.address)
        client = RedisClient(lambda: settings)
        client.start()
        self.addCleanup(lambda: run(client.stop()))
        return client

    def count_logs(self, text: str) -> int:
        return sum(1 for line in self.logs if text in line)


class VersionCheckTests(UpgradeTestBase):
    async def _fresh(self) -> None:
        client = self.new_client()
        self.assertEqual(await check_and_upgrade(client), 2)
        self.assertTrue(client.ready)
        self.assertEqual(contents(self.r), {b"MIRRORBITS_DB_VERSION": b"2"})

    def test_fresh_db_is_stamped_2(self) -> defer.Deferred[Any]:
        return run(self._fresh())

    async def _v2(self) -> None:
        build_v2(self.r)
        before = snapshot(self.r)
        client = self.new_client()
        self.assertEqual(await check_and_upgrade(client), 2)
        self.assertTrue(client.ready)
        after = snapshot(self.r)
        self.assertEqual(after.keys(), before.keys())
        for key, (dump, ttl) in before.items():
            self.assertEqual(after[key][0], dump, key)
            self.assertEqual(after[key][1] == -1, ttl == -1, key)  # TTLs neither added nor lost
        self.assertEqual(self.count_logs("upgrade"), 0)

    def test_go_v2_database_is_left_byte_identical(self) -> defer.Deferred[Any]:
        return run(self._v2())

    async def _newer(self, value: bytes, message: str) -> None:
        build_v2(self.r)
        self.r.set(b"MIRRORBITS_DB_VERSION", value)
        before = snapshot(self.r)
        client = self.new_client()
        with self.assertRaises(UnsupportedSchema) as caught:
            await check_and_upgrade(client)
        self.assertEqual(str(caught.exception), message)
        self.assertFalse(client.ready)
        after = snapshot(self.r)
        self.assertEqual({k: v[0] for k, v in after.items()}, {k: v[0] for k, v in before.items()})
        self.assertEqual(self.count_logs(message), 1)  # said clearly, not a silent hang

    def test_version_3_is_refused_without_touching_the_db(self) -> defer.Deferred[Any]:
        return run(self._newer(b"3", "unsupported database version 3 (this program handles version 2)"))

    def test_garbled_version_is_refused(self) -> defer.Deferred[Any]:
        return run(self._newer(b"2x", "invalid database version '2x' in MIRRORBITS_DB_VERSION "
                                      "(this program handles version 2)"))

    async def _down(self) -> None:
        port = free_port()
        client = self.new_client(f"127.0.0.1:{port}")
        clock = task.Clock()  # the check's waits between attempts; the dials are real
        d = run(check_and_upgrade(client, reactor=clock))
        for _ in range(5):
            await self.clock_round(clock)
        self.assertFalse(d.called)  # still retrying, not failed
        self.assertFalse(client.ready)
        late = RedisServer(port=port).start()
        self.addCleanup(late.cleanup)
        late.client().set("MIRRORBITS_DB_VERSION", "2")
        while not d.called:
            await self.clock_round(clock, waiters=0)
        self.assertEqual(await d, 2)
        self.assertTrue(client.ready)

    def test_retries_while_redis_is_down(self) -> defer.Deferred[Any]:
        return run(self._down())

    async def _loading(self) -> None:
        # A restarted Redis answers -LOADING while it reads its dump: the check waits it out.
        src = RedisServer().start()
        self.addCleanup(src.cleanup)
        blob = os.urandom(1 << 20)  # incompressible, so loading takes a while
        setup = src.client(decode=False)
        for i in range(12):
            setup.set(b"blob%d" % i, blob[i:])
        setup.set(b"MIRRORBITS_DB_VERSION", b"2")
        setup.save()
        src.stop()
        proc = processes.spawn(
            [redis_server_binary(), "--port", str(src.port), "--bind", "127.0.0.1", "--dir", src.dir,
             "--save", "", "--key-load-delay", "50000"],  # 50 ms per key: ~0.6 s of loading
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(processes.stop, proc)
        probe = None
        for _ in range(200):
            try:
                probe = socket.create_connection(("127.0.0.1", src.port))
                break
            except OSError:
                await sleep(0.01)
        assert probe is not None
        probe.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n")
        self.assertTrue(probe.recv(100).startswith(b"-LOADING"))
        probe.close()
        client = self.new_client(src.address)
        self.assertEqual(await check_and_upgrade(client), 2)
        self.assertTrue(client.ready)
        self.assertEqual(src.client().get("MIRRORBITS_DB_VERSION"), "2")

    def test_waits_while_redis_is_loading(self) -> defer.Deferred[Any]:
        return run(self._loading())

    async def _dump(self) -> None:
        payloads = [bytes(range(256)) * 3, b"\r\n\x00\xff\xfe" * 10, os.urandom(200_000),
                    "é€😀".encode()]
        for i, p in enumerate(payloads):
            self.r.set(b"src%d" % i, p)
        small = {NON_UTF8: b"\xff\x00", b"k": b"\x80\x81"}  # listpack: DUMP order is stable
        big = {NON_UTF8: b"\xff\x00", b"k": os.urandom(5000)}  # hashtable: only contents are
        self.r.hset(b"srch", mapping=small)
        self.r.hset(b"srcH", mapping=big)
        client = self.new_client()
        for src in [b"src%d" % i for i in range(len(payloads))] + [b"srch"]:
            dst = b"dst" + src[3:]
            self.assertTrue(await copy_key(client, src.decode(), dst.decode()))
            self.assertEqual(self.r.dump(dst), self.r.dump(src))
        self.assertTrue(await copy_key(client, "srcH", "dstH"))
        self.assertEqual(self.r.hgetall(b"dstH"), big)
        self.assertFalse(await copy_key(client, "missing", "dstx"))
        self.assertEqual(self.r.exists(b"dstx"), 0)

    def test_dump_payload_survives_the_client_byte_exactly(self) -> defer.Deferred[Any]:
        return run(self._dump())


class OrderRenamesTests(unittest.SynchronousTestCase):
    def test_target_moved_away_first(self) -> None:
        plan = {"F_x_/a": "F_2_/a", "F_2_/a": "F_1_/a", "other": "dst"}
        self.assertEqual(order_renames(plan),
                         [("F_2_/a", "F_1_/a"), ("F_x_/a", "F_2_/a"), ("other", "dst")])

    def test_cycle_keeps_every_rename(self) -> None:
        out = order_renames({"A": "B", "B": "A"})
        self.assertEqual(sorted(out), [("A", "B"), ("B", "A")])


V2_FROM_V1 = {
    b"MIRROR_1": {b"ID": b"1", b"name": b"tls", b"http": b"https://tls.example.org/", b"enabled": b"1",
                  b"score": b"5", b"httpsUp": b"1", b"httpsDownReason": b""},
    b"MIRROR_2": {b"ID": b"2", b"name": b"plain", b"http": b"http://plain.example.org/",
                  b"enabled": b"1", b"httpUp": b"0", b"httpDownReason": b"Got status code 503"},
    b"MIRROR_3": {b"ID": b"3", b"name": b"noscheme", b"http": b"ns.example.org/", b"httpUp": b"1",
                  b"httpDownReason": NON_UTF8},
    b"MIRROR_4": {b"ID": b"4", b"name": b"fresh", b"http": b"https://fresh.example.org/",
                  b"enabled": b"0"},
}


class UpgradeTests(UpgradeTestBase):
    async def _v1(self) -> None:
        build_v1(self.r)
        before = contents(self.r)
        dumps = snapshot(self.r)
        client = self.new_client()
        self.assertEqual(await check_and_upgrade(client), 1)
        self.assertTrue(client.ready)
        after = contents(self.r)
        expected = dict(before)
        expected.update(V2_FROM_V1)
        expected[b"MIRRORBITS_DB_VERSION"] = b"2"
        self.assertEqual(after, expected)
        # Everything but the mirror hashes and the version is byte-identical.
        for key in set(before) - set(V2_FROM_V1) - {b"MIRRORBITS_DB_VERSION"}:
            self.assertEqual(self.r.dump(key), dumps[key][0], key)
        self.assertEqual(self.count_logs("Upgrading database from version 1 to version 2..."), 1)
        self.assertEqual(self.count_logs("Database upgrade successful (took "), 1)
        self.assertTrue(any(line.endswith("), starting normally") for line in self.logs))

    async def _relock(self) -> None:
        # The instance we waited for finished between our version read and our lock: the version
        # is read again under the lock and nothing is run twice.
        build_v2(self.r)
        before = snapshot(self.r)
        client = self.new_client()
        self.assertIs(await upgrade._upgrade_locked(client, reactor), False)
        self.assertEqual({k: v[0] for k, v in snapshot(self.r).items()},
                         {k: v[0] for k, v in before.items()})

    def test_version_is_read_again_under_the_lock(self) -> defer.Deferred[Any]:
        return run(self._relock())

    def test_v1_upgrades_to_the_exact_v2_layout(self) -> defer.Deferred[Any]:
        return run(self._v1())

    async def _v0(self) -> None:
        build_v0(self.r)
        client = self.new_client()
        self.assertEqual(await check_and_upgrade(client), 0)
        self.assertTrue(client.ready)
        expected = {
            b"MIRRORBITS_DB_VERSION": b"2",
            b"LAST_MID": b"13",
            b"MIRRORS": {b"11": b"alpha", b"12": b"beta", b"13": b"gamma"},
            b"MIRROR_11": {b"ID": b"11", b"name": b"alpha", b"http": b"http://a.example.org/",
                           b"score": b"3", b"httpUp": b"1", b"httpDownReason": b"x"},
            b"MIRROR_12": {b"ID": b"12", b"name": b"beta", b"http": b"https://b.example.org/",
                           b"httpsUp": b"0"},
            b"MIRROR_13": {b"ID": b"13", b"name": b"gamma", b"http": b"c.example.org/"},
            b"MIRRORFILES_11": {b"/a", NON_UTF8},
            b"FILEINFO_11_/a": {b"size": b"1"},
            b"FILEINFO_11_" + NON_UTF8: {b"size": b"2"},
            b"HANDLEDFILES_11": {b"/a"},
            b"MIRRORFILES_12": {b"/a"},
            b"FILEINFO_12_/a": {b"size": b"1"},
            b"FILES": {b"/a", b"/c", NON_UTF8},
            b"FILEMIRRORS_/a": {b"11", b"12"},
            b"FILEMIRRORS_" + NON_UTF8: {b"11"},
            b"FILEMIRRORS_/c": {b"removed"},
            b"FILEMIRRORS_/z": {b"alpha"},
            b"STATS_MIRROR_2024_01_02": {b"11": b"5", b"12": b"3"},
            b"STATS_MIRROR_BYTES_2024": {b"11": b"100"},
            b"STATS_MIRROR_BYTES": {b"12": b"1"},
            b"STATS_MIRROR": {b"alpha": b"7"},
            b"STATS_FILE": {b"/a": b"8"},
        }
        self.assertEqual(contents(self.r), expected)
        self.assertEqual(self.count_logs("Upgrading database from version 0 to version 1..."), 1)
        self.assertEqual(self.count_logs("Upgrading database from version 1 to version 2..."), 1)

    def test_v0_upgrades_to_v2_through_v1(self) -> defer.Deferred[Any]:
        return run(self._v0())

    async def _numeric(self) -> None:
        # v0 mirror "2" gets id 1, and mirror "x" gets id 2: FILEINFO_2_/a must move to
        # FILEINFO_1_/a before FILEINFO_x_/a lands on FILEINFO_2_/a.
        r = self.r
        r.rpush(b"MIRRORS", b"2", b"x")
        r.hset(b"MIRROR_2", mapping={b"http": b"http://two/", b"score": b"2"})
        r.hset(b"MIRROR_x", mapping={b"http": b"http://x/", b"score": b"9"})
        r.sadd(b"MIRROR_2_FILES", b"/a")
        r.sadd(b"MIRROR_x_FILES", b"/a")
        r.hset(b"FILEINFO_2_/a", b"size", b"222")
        r.hset(b"FILEINFO_x_/a", b"size", b"999")
        r.sadd(b"HANDLEDFILES_2", b"/a")
        client = self.new_client()
        self.assertEqual(await check_and_upgrade(client), 0)
        self.assertEqual(r.hgetall(b"FILEINFO_1_/a"), {b"size": b"222"})
        self.assertEqual(r.hgetall(b"FILEINFO_2_/a"), {b"size": b"999"})
        self.assertEqual(r.hgetall(b"MIRROR_1"),
                         {b"http": b"http://two/", b"score": b"2", b"ID": b"1", b"name": b"2"})
        self.assertEqual(r.hgetall(b"MIRROR_2"),
                         {b"http": b"http://x/", b"score": b"9", b"ID": b"2", b"name": b"x"})
        self.assertEqual(r.smembers(b"HANDLEDFILES_1"), {b"/a"})
        self.assertEqual(r.exists(b"MIRROR_x", b"FILEINFO_x_/a", b"HANDLEDFILES_2"), 0)

    def test_v0_numeric_mirror_names(self) -> defer.Deferred[Any]:
        return run(self._numeric())

    async def _missing_http(self) -> None:
        build_v1(self.r)
        self.r.hdel(b"MIRROR_2", b"http")
        before = contents(self.r)
        client = self.new_client()
        with self.assertRaises(UpgradeError) as caught:
            await check_and_upgrade(client)
        self.assertIn("MIRROR_2", str(caught.exception))
        self.assertFalse(client.ready)
        after = contents(self.r)
        # Nothing was committed: only temporary V2_ copies may remain, and the lock is released.
        self.assertEqual({k: v for k, v in after.items() if not k.startswith(b"V2_")}, before)
        self.assertEqual(self.count_logs("Upgrade failed: "), 1)

    async def _guard(self) -> None:
        # The guard (is LOCK_upgrade still ours?) runs right before the commit and can stop it.
        build_v1(self.r)
        before = contents(self.r)
        client = self.new_client()

        def lock_lost() -> None:
            raise RuntimeError("lost")

        with self.assertRaises(RuntimeError):
            await upgrade.upgrade_v2(client, lock_lost)
        after = contents(self.r)
        self.assertTrue(any(k.startswith(b"V2_MIRROR_") for k in after))  # the work was done...
        self.assertEqual({k: v for k, v in after.items() if not k.startswith(b"V2_")}, before)

    def test_commit_is_not_sent_when_the_lock_was_lost(self) -> defer.Deferred[Any]:
        return run(self._guard())

    def test_v1_mirror_without_http_is_fatal_and_commits_nothing(self) -> defer.Deferred[Any]:
        return run(self._missing_http())

    async def _concurrent(self, build: Callable[[Any], None], found: int) -> dict[bytes, Any]:
        build(self.r)
        # Another instance holds the lock at first: both wait, then one of them upgrades.
        self.r.set(b"LOCK_upgrade", b"42", px=5000)
        a, b = self.new_client(), self.new_client()
        da, db = run(check_and_upgrade(a)), run(check_and_upgrade(b))
        await sleep(0.35)
        self.assertFalse(da.called or db.called)
        self.assertFalse(a.ready or b.ready)
        self.r.delete(b"LOCK_upgrade")
        self.assertEqual(await defer.gatherResults([da, db]), [found, found])
        self.assertTrue(a.ready and b.ready)
        # Each instance said it was waiting once, although it waited several rounds.
        self.assertEqual(self.count_logs("Database upgrade running. Waiting for completion..."), 2)
        self.assertEqual(self.count_logs("Upgrading database from version 1 to version 2..."), 1)
        self.assertEqual(self.count_logs("Database upgrade successful"), 1)
        self.assertEqual(self.r.exists(b"LOCK_upgrade"), 0)
        return contents(self.r)

    async def _concurrent_v1(self) -> None:
        build_v1(self.r)
        expected = contents(self.r)
        self.server.flush()
        expected.update(V2_FROM_V1)
        expected[b"MIRRORBITS_DB_VERSION"] = b"2"
        self.assertEqual(await self._concurrent(build_v1, 1), expected)

    def test_two_instances_upgrade_a_v1_db_once(self) -> defer.Deferred[Any]:
        return run(self._concurrent_v1())

    async def _concurrent_v0(self) -> None:
        after = await self._concurrent(build_v0, 0)
        # v0->v1 hands out ids with INCR LAST_MID: a second run would have taken three more.
        self.assertEqual(after[b"LAST_MID"], b"13")
        self.assertEqual(after[b"MIRRORS"], {b"11": b"alpha", b"12": b"beta", b"13": b"gamma"})

    def test_two_instances_upgrade_a_v0_db_once(self) -> defer.Deferred[Any]:
        return run(self._concurrent_v0())

    async def _race(self) -> None:
        # No lock held beforehand: both race for it straight away.
        build_v0(self.r)
        a, b = self.new_client(), self.new_client()
        results = await defer.gatherResults([run(check_and_upgrade(a)), run(check_and_upgrade(b))])
        self.assertEqual(sorted(results), [0, 0])
        self.assertEqual(self.r.get(b"LAST_MID"), b"13")
        self.assertEqual(self.count_logs("Upgrading database from version 0 to version 1..."), 1)

    def test_racing_instances_upgrade_once(self) -> defer.Deferred[Any]:
        return run(self._race())
