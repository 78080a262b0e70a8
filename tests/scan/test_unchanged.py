"""Skipping an unchanged mirror rescan: a real rsync daemon, a real Redis, Go's writes replayed from
its ``scan.go`` to play a Go node of the cluster, and the redirector's view counting its reloads."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, reactor

from mirrorbits.cache import MirrorView
from mirrorbits.config import Config
from mirrorbits.gocompat import format_gts, format_rfc3339nano
from mirrorbits.httpclient import HttpClient
from mirrorbits.model import LOG_SCAN_COMPLETED, LOG_SCAN_STARTED, Mirror
from mirrorbits.redis import schema
from mirrorbits.scan import commit, unchanged
from mirrorbits.scan.listing import ScanError
from mirrorbits.scan.local import LocalScanner
from mirrorbits.scan.mirror import MirrorScanner
from tests.fixtures.ftpd import start_ftpd
from tests.fixtures.rsyncd import start_rsyncd
from tests.fixtures.servers import free_port
from tests.monitor.support import RedisTestCase, eventually, sleep

MTIME = 1700000000
TREE = {"README": b"hello", "dists/a b.txt": b"12345678", "pool/x.deb": b"x" * 100,
        "pool/y.deb": b"y" * 10}
#: Keys a successful scan that changed nothing writes (the values of all others stay byte for byte).
SCAN_MARKS = {schema.mirror_key(1), schema.mirror_logs_key(1), schema.mirror_scan_digest_key(1)}


class UnchangedRescanTests(RedisTestCase):
    timeout = 60

    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(tempfile.mkdtemp(prefix="mb-unchanged-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.tree = self.tmp / "tree"
        for rel, data in TREE.items():
            self.write(rel, data)
        self.config = Config(Repository=str(self.tree))
        self.http = HttpClient(reactor, timeout=3)
        self.scanner = MirrorScanner(self.client, lambda: self.config, self.http, batch=2)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.scanner.stop()))
        self.r.sadd(schema.FILES, "/README", "/pool/x.deb", "/local-only")
        daemon = start_rsyncd(self.tmp / "rsyncd", {"mirror": {"path": str(self.tree)}})
        self.addCleanup(daemon.stop)
        self.r.hset(schema.MIRRORS, "1", "m1")
        self.r.hset(schema.mirror_key(1), mapping={"ID": "1", "name": "m1", "enabled": "1",
                                                   "rsync": daemon.url("mirror")})
        self.mirror = Mirror.from_redis(self.r.hgetall(schema.mirror_key(1)))

    def write(self, rel: str, data: bytes, mtime: int = MTIME) -> None:
        p = self.tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (mtime, mtime))

    async def scan(self) -> commit.ScanResult:
        return await self.scanner.scan_mirror(self.mirror, "rsync")

    def snapshot(self) -> dict[str, bytes]:
        raw = self.server.client(decode=False)
        return {k.decode(): raw.dump(k) for k in raw.keys("*")}

    def index_of_1(self) -> dict[str, object]:
        """What a Go node reads of the mirror's index."""
        r = self.r
        files = r.smembers(schema.mirror_files_key(1))
        return {"files": files, "handled": r.smembers(schema.handled_files_key(1)),
                "info": {p: r.hgetall(schema.file_info_key(1, p)) for p in files},
                "mirrors": {p: r.smembers(schema.file_mirrors_key(p)) for p in files}}

    def tree_index(self) -> dict[str, dict[str, str]]:
        out = {}
        for rel in TREE:
            st = (self.tree / rel).stat()
            out["/" + rel] = {"size": str(st.st_size), "modTime": format_gts(st.st_mtime_ns, "UTC")}
        return out

    # -- an unchanged rescan -------------------------------------------------------------------

    async def test_unchanged_rescan_skips_and_writes_only_what_go_writes(self) -> None:
        first = await self.scan()
        self.assertFalse(first.unchanged)
        before = self.snapshot()
        index = self.index_of_1()
        await self.listen()
        second = await self.scan()
        self.assertTrue(second.unchanged)
        self.assertEqual((second.files_indexed, second.known_indexed, second.removed),
                         (first.files_indexed, first.known_indexed, 0))
        after = self.snapshot()
        # Nothing else was written, and no private key is left behind.
        self.assertEqual({k for k in set(before) | set(after) if before.get(k) != after.get(k)} - SCAN_MARKS,
                         set())
        self.assertEqual(self.index_of_1(), index)
        # What Go's Scan() writes when nothing changed, besides rewriting the index with the same
        # bytes: lastSync, the lastSuccessfulSync fields, tzoffset, the mirror update, both events.
        h = self.r.hgetall(schema.mirror_key(1))
        self.assertEqual((h["lastSuccessfulSyncProtocol"], h["lastSuccessfulSyncPrecision"], h["tzoffset"]),
                         ("0", "1000000000", "0"))
        self.assertGreaterEqual(int(h["lastSuccessfulSync"]), int(time.time()) - 5)
        events = self.mirror_log(1)
        self.assertEqual([e["Type"] for e in events][-2:], [LOG_SCAN_STARTED, LOG_SCAN_COMPLETED])
        self.assertEqual((events[-1]["FilesIndexed"], events[-1]["KnownIndexed"], events[-1]["Removed"]),
                         (4, 2, 0))
        self.assertEqual(len(self.logged("[m1] Indexed 4 files (2 known), 0 removed")), 2)
        await eventually(lambda: (schema.CHANNEL_MIRROR_UPDATE, "1") in self.messages)
        await sleep(0.2)
        self.assertEqual([m for m in self.messages if m[0] == schema.CHANNEL_MIRROR_FILE_UPDATE], [])
        # And it keeps skipping.
        self.assertTrue((await self.scan()).unchanged)

    async def test_changed_listing_does_not_skip(self) -> None:
        await self.scan()
        self.write("pool/y.deb", b"y" * 11)
        result = await self.scan()
        self.assertFalse(result.unchanged)
        self.assertEqual(self.r.hget(schema.file_info_key(1, "/pool/y.deb"), "size"), "11")
        os.unlink(self.tree / "README")
        result = await self.scan()
        self.assertFalse(result.unchanged)
        self.assertEqual(result.removed, 1)
        self.assertTrue((await self.scan()).unchanged)

    async def test_longer_listing_than_the_speculative_hold_still_skips(self) -> None:
        self.patch(commit, "SPECULATIVE_FILES", 2)
        await self.scan()
        before = self.index_of_1()
        result = await self.scan()
        self.assertTrue(result.unchanged)
        self.assertEqual(self.index_of_1(), before)
        self.assertFalse(self.r.exists(commit.staging_key(1)))
        self.write("pool/y.deb", b"y" * 12)
        self.assertFalse((await self.scan()).unchanged)
        self.assertEqual(self.r.hget(schema.file_info_key(1, "/pool/y.deb"), "size"), "12")

    async def test_our_failed_listing_keeps_the_skip_a_go_failure_does_not(self) -> None:
        await self.scan()
        self.r.hset(schema.mirror_key(1), "rsync", "rsync://127.0.0.1:1/none/")
        broken = Mirror.from_redis(self.r.hgetall(schema.mirror_key(1)))
        with self.assertRaises(ScanError):
            await self.scanner.scan_mirror(broken, "rsync")
        self.assertTrue((await self.scan()).unchanged)
        # A Go node's failed scan (Scan(): lock, lastSync, "scan started", DEL MIRRORFILESTMP, the
        # error): it may have failed after writing part of the index, so ours compares.
        r = self.r
        r.hset(schema.mirror_key(1), "lastSync", str(int(time.time())))
        r.rpush(schema.mirror_logs_key(1), json.dumps({"Type": LOG_SCAN_STARTED, "MirrorID": 1, "Typ": 0}))
        r.delete(schema.mirror_files_tmp_key(1))
        r.rpush(schema.mirror_logs_key(1), json.dumps({"Type": 1, "MirrorID": 1, "Err": "boom"}))
        self.assertFalse((await self.scan()).unchanged)
        self.assertTrue((await self.scan()).unchanged)

    async def test_ftp_rescans_skip_even_behind_a_failing_rsync(self) -> None:
        # The monitor's job tries rsync (dead here), then FTP: the failed rsync attempt writes only
        # its events, so the FTP rescan that follows it still proves its listing unchanged.
        ftpd = start_ftpd(self.tree)
        self.addCleanup(ftpd.stop)
        self.r.hset(schema.mirror_key(1), mapping={"rsync": f"rsync://127.0.0.1:{free_port()}/none/",
                                                   "ftp": ftpd.url("/")})
        mirror = Mirror.from_redis(self.r.hgetall(schema.mirror_key(1)))
        jobs = [await self.scanner.run_job(mirror) for _ in range(3)]
        self.assertEqual([j.status for j in jobs], ["ok"] * 3)
        self.assertEqual([j.result.unchanged for j in jobs if j.result], [False, True, True])
        self.assertEqual(self.r.hget(schema.mirror_key(1), "lastSuccessfulSyncProtocol"), "1")
        self.write("pool/y.deb", b"y" * 13)
        job = await self.scanner.run_job(mirror)
        assert job.result is not None
        self.assertFalse(job.result.unchanged)
        self.assertEqual(self.r.hget(schema.file_info_key(1, "/pool/y.deb"), "size"), "13")

    async def test_record_older_than_a_day_makes_the_next_scan_compare(self) -> None:
        await self.scan()
        self.r.hset(schema.mirror_scan_digest_key(1), "compared",
                    str(int(time.time()) - unchanged.FULL_COMPARISON_EVERY))
        self.assertFalse((await self.scan()).unchanged)
        self.assertTrue((await self.scan()).unchanged)

    # -- FILES changed by a local scan ---------------------------------------------------------

    async def test_our_local_scan_changing_files_makes_the_next_scan_compare(self) -> None:
        await self.scan()
        self.assertEqual(self.r.smembers(schema.handled_files_key(1)), {"/README", "/pool/x.deb"})
        local = LocalScanner(self.client, lambda: self.config, lock_retry_delay=0.05)
        await local.scan()  # FILES := the tree, which the mirror lists whole
        result = await self.scan()
        self.assertFalse(result.unchanged)
        self.assertEqual(result.known_indexed, 4)
        self.assertEqual(self.r.smembers(schema.handled_files_key(1)), {"/" + p for p in TREE})
        # A local scan that changes nothing the mirror lists keeps the skip.
        await local.scan()
        self.assertTrue((await self.scan()).unchanged)

    async def test_go_local_scan_swapping_a_file_makes_the_next_scan_compare(self) -> None:
        await self.scan()
        # Go's ScanSource: DEL FILES_TMP, SADD FILES_TMP ..., RENAME FILES_TMP FILES.  Same number
        # of files, one handled path swapped for another the mirror lists.
        r = self.r
        r.delete(schema.FILES_TMP)
        r.sadd(schema.FILES_TMP, "/README", "/pool/y.deb", "/local-only")
        r.rename(schema.FILES_TMP, schema.FILES)
        result = await self.scan()
        self.assertFalse(result.unchanged)
        self.assertEqual(r.smembers(schema.handled_files_key(1)), {"/README", "/pool/y.deb"})
        # A Go local scan that adds a file the mirror does not list changes nothing of its index.
        r.sadd(schema.FILES_TMP, "/README", "/pool/y.deb", "/local-only", "/other")
        r.rename(schema.FILES_TMP, schema.FILES)
        self.assertTrue((await self.scan()).unchanged)

    # -- a Go node of the cluster ------------------------------------------------------------------

    def go_scan(self, listing: dict[str, dict[str, str]]) -> None:
        """The writes of Go's ``scan.Scan()`` for a successful listing (scan/scan.go), in order."""
        r = self.r
        mid = 1
        assert r.set(schema.scanning_key(mid), "1", nx=True, ex=600)
        now = str(int(time.time()))
        p = r.pipeline(transaction=True)
        p.hset(schema.mirror_key(mid), "lastSync", now)
        p.execute()
        r.publish(schema.CHANNEL_MIRROR_UPDATE, str(mid))

        def push_log(type_: int, **extra: object) -> None:
            doc = {"Type": type_, "MirrorID": mid, "Timestamp": format_rfc3339nano(time.time_ns(), "local")}
            doc.update(extra)
            r.rpush(schema.mirror_logs_key(mid), json.dumps(doc, separators=(",", ":")))

        push_log(LOG_SCAN_STARTED, Typ=0)
        tmp, files_key = schema.mirror_files_tmp_key(mid), schema.mirror_files_key(mid)
        r.delete(tmp)
        p = r.pipeline(transaction=True)
        for path, info in listing.items():
            p.sadd(tmp, path)
            p.sadd(schema.file_mirrors_key(path), str(mid))
            p.hset(schema.file_info_key(mid, path), mapping=info)
            p.publish(schema.CHANNEL_MIRROR_FILE_UPDATE, f"{mid} {path}")
        p.execute()
        toremove = r.sdiff(files_key, tmp)
        if toremove:
            p = r.pipeline(transaction=True)
            for path in toremove:
                p.srem(schema.file_mirrors_key(path), str(mid))
                p.delete(schema.file_info_key(mid, path))
                p.publish(schema.CHANNEL_MIRROR_FILE_UPDATE, f"{mid} {path}")
            p.execute()
        r.rename(tmp, files_key)
        common = r.sinterstore(schema.handled_files_key(mid), schema.FILES, files_key)
        p = r.pipeline(transaction=True)
        p.hset(schema.mirror_key(mid), "lastSync", now)
        p.hset(schema.mirror_key(mid), mapping={"lastSuccessfulSync": now, "lastSuccessfulSyncProtocol": "0",
                                                "lastSuccessfulSyncPrecision": "1000000000"})
        p.execute()
        r.publish(schema.CHANNEL_MIRROR_UPDATE, str(mid))
        r.hset(schema.mirror_key(mid), "tzoffset", "0")
        r.publish(schema.CHANNEL_MIRROR_UPDATE, str(mid))
        push_log(LOG_SCAN_COMPLETED, FilesIndexed=len(listing), KnownIndexed=common,
                 Removed=len(toremove), TZOffset=0)
        r.delete(schema.scanning_key(mid))

    async def test_go_node_rewrote_the_index_between_two_of_our_scans(self) -> None:
        await self.scan()
        ours = self.index_of_1()
        self.assertEqual(ours["info"], self.tree_index())
        # The mirror changes, a Go node scans it (same file count, same handled count), and the
        # mirror goes back to what we listed: our listing is the one we recorded, the index is not.
        self.write("pool/y.deb", b"Y" * 20, mtime=MTIME + 60)
        go_listing = self.tree_index()
        self.go_scan(go_listing)
        self.assertEqual(self.index_of_1()["info"], go_listing)
        self.write("pool/y.deb", b"y" * 10)
        result = await self.scan()
        self.assertFalse(result.unchanged)
        self.assertEqual(self.index_of_1(), ours)
        # Once compared again, the next rescan skips; and a Go scan that listed the same files
        # (rewriting identical bytes) still makes ours compare once.
        self.assertTrue((await self.scan()).unchanged)
        self.go_scan(self.tree_index())
        self.assertFalse((await self.scan()).unchanged)
        self.assertEqual(self.index_of_1(), ours)

    async def test_mirror_removed_and_recreated_makes_the_next_scan_compare(self) -> None:
        await self.scan()
        # What a removal leaves: no index, no log (the record, if it survived, must not be trusted).
        self.r.delete(schema.mirror_files_key(1), schema.handled_files_key(1), schema.mirror_logs_key(1))
        self.assertFalse((await self.scan()).unchanged)
        self.assertEqual(self.index_of_1()["files"], {"/" + p for p in TREE})

    # -- the view's work per scan ----------------------------------------------------------------

    async def test_view_reloads_nothing_for_an_unchanged_scan_and_k_paths_for_k_changes(self) -> None:
        await self.scan()
        view = MirrorView(self.client)
        view.start()
        self.addCleanup(view.stop)
        await eventually(lambda: view.warmed)
        for rel in TREE:  # the view holds every path the mirror lists
            await view.load("/" + rel)

        async def work_of(scan_result_unchanged: bool) -> tuple[int, int]:
            await sleep(0.3)  # let earlier refreshes settle
            refreshes, paths = view.stats["refreshes"], view.stats["paths_refreshed"]
            result = await self.scan()
            self.assertEqual(result.unchanged, scan_result_unchanged)
            await sleep(0.5)
            return view.stats["refreshes"] - refreshes, view.stats["paths_refreshed"] - paths

        refreshes, paths = await work_of(True)
        self.assertEqual(paths, 0)
        # Only the mirror record, on Go's three updates (attempt, success, tzoffset), never a path.
        self.assertLessEqual(refreshes, 3)
        self.write("pool/x.deb", b"z" * 100, mtime=MTIME + 1)
        self.write("pool/y.deb", b"y" * 9)
        _, paths = await work_of(False)
        self.assertEqual(paths, 2)
