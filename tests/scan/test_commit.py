"""The commit of a mirror scan against a real Redis: staging, additions, removals, the success mark
and the mirror log events."""

from __future__ import annotations

import time

from mirrorbits import faults
from mirrorbits.model import LOG_ERROR, LOG_SCAN_COMPLETED, LOG_SCAN_STARTED, SCANNER_FTP, SCANNER_RSYNC
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient
from mirrorbits.scan.commit import (
    ERR_NO_FILES,
    MirrorScanTransaction,
    ScanInProgress,
    commit_marker_key,
    finish_interrupted_commit,
    handled_tmp_key,
    staging_key,
)
from mirrorbits.scan.listing import ListedFile, ScanError
from tests.monitor.support import RedisTestCase, eventually

T0 = 1551702896 * 10**9  # 2019-03-04 12:34:56 UTC


def listed(path: str, size: int = 10, mtime: int | None = T0, zone: str = "UTC") -> ListedFile:
    return ListedFile(path, size, mtime, zone)


async def listed_into(client: RedisClient, files: list[ListedFile], batch: int, typ: int
                      ) -> MirrorScanTransaction:
    """A transaction of mirror 3 that has begun and been given ``files``."""
    tx = MirrorScanTransaction(client, 3, "m3", batch=batch)
    await tx.begin(typ)
    for f in files:
        d = tx.add(f)
        if d is not None:
            await d
    return tx


class CommitTests(RedisTestCase):
    def seed_case_21(self) -> None:
        r = self.r
        r.hset(schema.MIRRORS, "3", "m3")
        r.hset(schema.mirror_key(3), mapping={"ID": "3", "name": "m3", "enabled": "1"})
        r.sadd(schema.FILES, "/a", "/b", "/c")
        r.sadd(schema.mirror_files_key(3), "/a", "/b")
        r.sadd(schema.file_mirrors_key("/a"), "3", "7")
        r.sadd(schema.file_mirrors_key("/b"), "3")
        r.hset(schema.file_info_key(3, "/a"), mapping={"size": "1", "modTime": "x"})
        r.hset(schema.file_info_key(3, "/b"), mapping={"size": "1", "modTime": "x"})
        r.sadd(schema.handled_files_key(3), "/a", "/b")

    async def run_scan(self, files: list[ListedFile], batch: int = 500, typ: int = SCANNER_RSYNC,
                       precision: int = 10**9) -> object:
        tx = MirrorScanTransaction(self.client, 3, "m3", batch=batch)
        await tx.begin(typ)
        for f in files:
            d = tx.add(f)
            if d is not None:
                await d
        try:
            result = await tx.commit(typ, precision)
        except ScanError as e:
            await tx.fail(str(e))
            raise
        await tx.complete(result)
        return result

    async def test_case_21_end_state_and_messages(self) -> None:
        self.seed_case_21()
        await self.listen()
        before = int(time.time())
        result = await self.run_scan([listed("/b", 5), listed("/c", 7)])
        r = self.r
        self.assertEqual(r.smembers(schema.mirror_files_key(3)), {"/b", "/c"})
        self.assertEqual(r.smembers(schema.file_mirrors_key("/a")), {"7"})
        self.assertIn("3", r.smembers(schema.file_mirrors_key("/c")))
        self.assertFalse(r.exists(schema.file_info_key(3, "/a")))
        self.assertEqual(r.hgetall(schema.file_info_key(3, "/c")),
                         {"size": "7", "modTime": "2019-03-04 12:34:56 +0000 UTC"})
        self.assertEqual(r.smembers(schema.handled_files_key(3)), {"/b", "/c"})
        self.assertEqual(r.ttl(schema.handled_files_key(3)), -1)
        h = r.hgetall(schema.mirror_key(3))
        self.assertEqual(h["lastSuccessfulSyncProtocol"], "0")
        self.assertEqual(h["lastSuccessfulSyncPrecision"], "1000000000")
        self.assertGreaterEqual(int(h["lastSync"]), before)
        self.assertEqual(h["lastSync"], h["lastSuccessfulSync"])
        self.assertEqual((result.files_indexed, result.known_indexed, result.removed), (2, 2, 1))
        # no private key left behind
        for key in (schema.mirror_files_tmp_key(3), staging_key(3), handled_tmp_key(3),
                    schema.scanning_key(3)):
            self.assertFalse(r.exists(key), key)
        await eventually(lambda: ("_mirrorbits_mirror_file_update", "3 /a") in self.messages)
        file_msgs = [m for ch, m in self.messages if ch == schema.CHANNEL_MIRROR_FILE_UPDATE]
        self.assertEqual(file_msgs, ["3 /b", "3 /c", "3 /a"])
        updates = [m for ch, m in self.messages if ch == schema.CHANNEL_MIRROR_UPDATE]
        self.assertGreaterEqual(updates.count("3"), 2)  # start and success (tz is the caller's)
        events = self.mirror_log(3)
        self.assertEqual([e["Type"] for e in events], [LOG_SCAN_STARTED, LOG_SCAN_COMPLETED])
        self.assertEqual(events[0]["Typ"], 0)
        self.assertEqual(list(events[1])[3:], ["FilesIndexed", "KnownIndexed", "Removed", "TZOffset"])
        self.assertEqual((events[1]["FilesIndexed"], events[1]["KnownIndexed"], events[1]["Removed"]),
                         (2, 2, 1))

    async def test_many_batches_and_scan_pages(self) -> None:
        r = self.r
        r.hset(schema.MIRRORS, "3", "m3")
        r.hset(schema.mirror_key(3), mapping={"ID": "3", "name": "m3"})
        old = [f"/old/{i}" for i in range(300)]
        keep = [f"/keep/{i}" for i in range(300)]
        r.sadd(schema.mirror_files_key(3), *old, *keep)
        r.sadd(schema.FILES, *keep[:120], "/new/0")
        for p in old + keep:
            r.sadd(schema.file_mirrors_key(p), "3")
            r.hset(schema.file_info_key(3, p), mapping={"size": "1", "modTime": "x"})
        new = [f"/new/{i}" for i in range(250)]
        result = await self.run_scan([listed(p) for p in keep + new], batch=7, typ=SCANNER_FTP,
                                     precision=0)
        self.assertEqual((result.files_indexed, result.known_indexed, result.removed), (550, 121, 300))
        self.assertEqual(r.smembers(schema.mirror_files_key(3)), set(keep + new))
        self.assertEqual(r.scard(schema.handled_files_key(3)), 121)
        self.assertFalse(any(r.exists(schema.file_info_key(3, p)) for p in old[:50]))
        self.assertFalse(r.exists(schema.file_mirrors_key(old[7])))
        h = r.hgetall(schema.mirror_key(3))
        self.assertEqual(h["lastSuccessfulSyncProtocol"], "1")
        self.assertEqual(h["lastSuccessfulSyncPrecision"], "1000000000")  # 0 is stored as 1 s

    async def test_zero_files_keeps_the_previous_index(self) -> None:
        # Go drops every FILEMIRRORS/FILEINFO entry; we keep the previous index.
        self.seed_case_21()
        with self.assertRaises(ScanError) as ctx:
            await self.run_scan([])
        self.assertEqual(str(ctx.exception), ERR_NO_FILES)
        r = self.r
        self.assertEqual(r.smembers(schema.mirror_files_key(3)), {"/a", "/b"})
        self.assertEqual(r.smembers(schema.handled_files_key(3)), {"/a", "/b"})
        self.assertEqual(r.smembers(schema.file_mirrors_key("/a")), {"3", "7"})
        self.assertTrue(r.exists(schema.file_info_key(3, "/b")))
        self.assertNotIn("lastSuccessfulSync", r.hgetall(schema.mirror_key(3)))
        events = self.mirror_log(3)
        self.assertEqual([e["Type"] for e in events], [LOG_SCAN_STARTED, LOG_ERROR])
        self.assertEqual(events[1]["Err"], ERR_NO_FILES)
        self.assertFalse(r.exists(schema.scanning_key(3)))

    async def test_failed_listing_changes_only_last_sync_and_log(self) -> None:
        self.seed_case_21()
        snapshot = {k: self.r.dump(k) for k in self.r.keys("*")}
        tx = MirrorScanTransaction(self.client, 3, "m3", batch=2)
        await tx.begin(SCANNER_RSYNC)
        self.assertTrue(self.r.exists(schema.scanning_key(3)))
        for p in ("/x", "/y", "/z"):
            d = tx.add(listed(p))
            if d is not None:
                await d
        await tx.fail("rsync: Error in socket I/O")
        after = set(self.r.keys("*"))
        self.assertEqual(after - set(snapshot), {schema.mirror_logs_key(3)})
        for k, v in snapshot.items():
            if k != schema.mirror_key(3):
                self.assertEqual(self.r.dump(k), v, k)
        self.assertIn("lastSync", self.r.hgetall(schema.mirror_key(3)))
        events = self.mirror_log(3)
        self.assertEqual(events[1], {**events[1], "Type": LOG_ERROR, "Err": "rsync: Error in socket I/O"})
        self.assertTrue(self.logged("[m3] rsync: Error in socket I/O"))

    async def test_case_23_lock_held_elsewhere(self) -> None:
        self.seed_case_21()
        self.r.set(schema.scanning_key(3), "1", ex=10)
        tx = MirrorScanTransaction(self.client, 3, "m3")
        with self.assertRaises(ScanInProgress) as ctx:
            await tx.begin(SCANNER_RSYNC)
        self.assertEqual(str(ctx.exception), "scan already in progress")
        self.assertNotIn("lastSync", self.r.hgetall(schema.mirror_key(3)))
        self.assertFalse(self.r.exists(schema.mirror_logs_key(3)))
        self.assertEqual(self.r.ttl(schema.scanning_key(3)) > 0, True)  # not released by us

    async def test_mirror_removed_during_scan_is_not_resurrected(self) -> None:
        self.seed_case_21()
        tx = MirrorScanTransaction(self.client, 3, "m3")
        await tx.begin(SCANNER_RSYNC)
        tx.add(listed("/c"))
        self.r.hdel(schema.MIRRORS, "3")
        with self.assertRaises(ScanError):
            await tx.commit(SCANNER_RSYNC, 10**9)
        await tx.fail("mirror removed during the scan")
        self.assertFalse(self.r.exists(schema.file_info_key(3, "/c")))
        self.assertFalse(self.r.exists(schema.file_mirrors_key("/c")))


class UnchangedRescanTests(RedisTestCase):
    """A rescan announces only the files it changed: an unchanged one makes no view reload anything."""

    async def scan(self, files: list[ListedFile]) -> object:
        tx = await listed_into(self.client, files, 3, SCANNER_RSYNC)
        result = await tx.commit(SCANNER_RSYNC, 10**9)
        await tx.complete(result)
        return result

    def file_messages(self) -> list[str]:
        return [m for ch, m in self.messages if ch == schema.CHANNEL_MIRROR_FILE_UPDATE]

    def index(self, paths: list[str]) -> dict[str, object]:
        r = self.r
        return {p: (r.hgetall(schema.file_info_key(3, p)), r.smembers(schema.file_mirrors_key(p)))
                for p in paths}

    async def test_unchanged_rescan_sends_no_file_message_and_k_changes_send_k(self) -> None:
        r = self.r
        r.hset(schema.MIRRORS, "3", "m3")
        r.hset(schema.mirror_key(3), mapping={"ID": "3", "name": "m3"})
        paths = [f"/d/{i}" for i in range(10)]
        files = [listed(p, 100 + i) for i, p in enumerate(paths)]
        await self.scan(files)
        first = self.index(paths)
        await self.listen()
        await self.scan(files)
        self.assertEqual(self.index(paths), first)
        # one changed size, one changed modTime, one dropped, one new; a FILEMIRRORS that lost the
        # mirror behind our back (a Go node's removal) is written and announced again
        r.srem(schema.file_mirrors_key("/d/5"), "3")
        changed = [listed("/d/0", 1), listed("/d/1", 101, T0 + 10**9), *files[2:9], listed("/d/new")]
        await self.scan(changed)
        await eventually(lambda: len(self.file_messages()) >= 5)
        self.assertEqual(sorted(self.file_messages()), ["3 /d/0", "3 /d/1", "3 /d/5", "3 /d/9", "3 /d/new"])
        self.assertEqual(r.hgetall(schema.file_info_key(3, "/d/0")),
                         {"size": "1", "modTime": "2019-03-04 12:34:56 +0000 UTC"})
        self.assertEqual(r.hget(schema.file_info_key(3, "/d/1"), "modTime"), "2019-03-04 12:34:57 +0000 UTC")
        self.assertEqual(r.smembers(schema.file_mirrors_key("/d/5")), {"3"})
        self.assertFalse(r.exists(schema.file_info_key(3, "/d/9")))


class Interrupted(BaseException):
    """Stands for the SIGKILL: raised at a fault point, it stops the commit where it is (no
    ``fail``, no lock release, as a dead process would not)."""


class RollForwardTests(RedisTestCase):
    """A commit stopped between its phases is finished by the next holder of the lock, from the
    staging list, into exactly what an uninterrupted commit writes."""

    OLD = [listed(f"/f/{i}", 10 + i) for i in range(12)]
    NEW = [listed(f"/f/{i}", 20 + i) for i in range(4, 16)]

    def index(self) -> tuple[set[str], dict[str, dict[str, str]], set[str], set[str]]:
        r = self.r
        infos = {k[len("FILEINFO_3_"):]: r.hgetall(k) for k in r.keys("FILEINFO_3_*")}
        owners = {k[len("FILEMIRRORS_"):] for k in r.keys("FILEMIRRORS_*") if "3" in r.smembers(k)}
        return set(r.smembers(schema.mirror_files_key(3))), infos, owners, \
            set(r.smembers(schema.handled_files_key(3)))

    async def scan(self, files: list[ListedFile], stop_at: str | None = None) -> None:
        tx = await listed_into(self.client, files, 4, SCANNER_FTP)
        if stop_at is None:
            await tx.complete(await tx.commit(SCANNER_FTP, 10**9))
            return
        seen = 0

        def stop(name: str) -> None:
            nonlocal seen
            if name == stop_at.split(":")[0]:
                seen += 1
                if seen == int(stop_at.split(":")[1]):
                    raise Interrupted()

        original, faults.point = faults.point, stop
        try:
            with self.assertRaises(Interrupted):
                await tx.commit(SCANNER_FTP, 10**9)
        finally:
            faults.point = original
        tx.lock._stop_loop()  # the dead process's lock: it only expires
        self.r.delete(schema.scanning_key(3))

    def seed(self) -> None:
        self.r.hset(schema.MIRRORS, "3", "m3")
        self.r.hset(schema.mirror_key(3), mapping={"ID": "3", "name": "m3"})
        self.r.sadd(schema.FILES, *[f"/f/{i}" for i in range(0, 16, 2)])

    async def expected_new_index(self) -> tuple[set[str], dict[str, dict[str, str]], set[str], set[str]]:
        self.seed()
        await self.scan(self.NEW)
        want = self.index()
        self.r.flushdb()
        return want

    async def test_every_stop_after_the_marker_is_rolled_forward(self) -> None:
        want = await self.expected_new_index()
        for stop_at in ("mirror_commit.decided:1", "mirror_commit.added:1", "mirror_commit.added:3",
                        "mirror_commit.removed:1", "mirror_commit.removed:2"):
            self.seed()
            await self.scan(self.OLD)
            await self.scan(self.NEW, stop_at)
            r = self.r
            self.assertTrue(r.exists(commit_marker_key(3)), stop_at)
            for key in r.keys("*TMP_*") + r.keys("MIRRORSCANCOMMIT*"):
                self.assertGreater(r.ttl(key), 0, (stop_at, key))
            self.assertTrue(await finish_interrupted_commit(self.client, 3, "m3"), stop_at)
            self.assertEqual(self.index(), want, stop_at)
            self.assertEqual(r.keys("*TMP_*") + r.keys("MIRRORSCANCOMMIT*"), [], stop_at)
            self.assertEqual(r.ttl(schema.mirror_files_key(3)), -1)
            self.assertEqual(r.hget(schema.mirror_key(3), "lastSuccessfulSyncProtocol"), str(SCANNER_FTP))
            r.flushdb()

    async def test_the_next_scan_finishes_it_first(self) -> None:
        self.seed()
        await self.scan(self.OLD)
        await self.scan(self.NEW, "mirror_commit.added:2")
        await self.scan(self.NEW)  # its begin() rolls the commit forward, then it rescans
        want = self.index()
        self.r.flushdb()
        self.assertEqual(await self.expected_new_index(), want)

    async def test_a_newer_scan_or_a_removed_mirror_drops_the_stale_commit(self) -> None:
        self.seed()
        await self.scan(self.OLD)
        await self.scan(self.NEW, "mirror_commit.decided:1")
        old = self.index()
        # Another node (a Go one) committed a scan since: the marker is older than its success.
        self.r.hset(schema.mirror_key(3), "lastSuccessfulSync", str(int(time.time()) + 5))
        self.assertTrue(await finish_interrupted_commit(self.client, 3, "m3"))
        self.assertEqual(self.index(), old)
        self.assertEqual(self.r.keys("MIRRORSCANCOMMIT*"), [])
        # A removed mirror: nothing is written back.
        await self.scan(self.NEW, "mirror_commit.decided:1")
        self.r.hdel(schema.MIRRORS, "3")
        self.assertTrue(await finish_interrupted_commit(self.client, 3, "m3"))
        self.assertEqual(self.r.keys("MIRRORSCANCOMMIT*"), [])

    async def test_a_held_lock_defers_it(self) -> None:
        self.seed()
        await self.scan(self.NEW, "mirror_commit.added:1")
        self.r.set(schema.scanning_key(3), "1", ex=10)
        self.assertFalse(await finish_interrupted_commit(self.client, 3, "m3"))
        self.assertTrue(self.r.exists(commit_marker_key(3)))
