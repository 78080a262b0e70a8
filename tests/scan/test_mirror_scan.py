"""Whole mirror scans: a real rsync daemon and a real FTP server, a real Redis, a real HTTP server
for the trace file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor

from mirrorbits.config import Config
from mirrorbits.gocompat import format_gts
from mirrorbits.httpclient import HttpClient
from mirrorbits.model import LOG_ERROR, LOG_SCAN_COMPLETED, LOG_SCAN_STARTED, Mirror
from mirrorbits.redis import schema
from mirrorbits.scan.listing import ScanError
from mirrorbits.scan.mirror import ERR_ABORTED, MirrorScanner
from tests.fixtures.ftpd import start_ftpd
from tests.fixtures.rsyncd import start_rsyncd
from tests.monitor.httpd import Answer, WebServer
from tests.monitor.support import RedisTestCase, eventually, sleep

MTIME = 1700000000  # 2023-11-14 22:13:20 UTC


class MirrorScanTests(RedisTestCase):
    timeout = 60

    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(tempfile.mkdtemp(prefix="mb-mscan-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.tree = self.tmp / "tree"
        for rel, data in {"README": b"hello", "dists/a b.txt": b"12345678", "pool/x.deb": b"x" * 100}.items():
            p = self.tree / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            os.utime(p, (MTIME, MTIME))
        self.config = Config(Repository=str(self.tmp))
        self.http = HttpClient(reactor, timeout=3)
        self.scanner = MirrorScanner(self.client, lambda: self.config, self.http, batch=2)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.scanner.stop()))
        self.r.sadd(schema.FILES, "/README", "/pool/x.deb", "/local-only")
        for path, size in (("/README", 5), ("/pool/x.deb", 100), ("/local-only", 1)):
            self.r.hset(schema.file_key(path), mapping={
                "size": str(size), "modTime": format_gts((MTIME + 3600) * 10**9, "UTC")})

    def add_mirror(self, mirror_id: int = 1, **fields: str) -> Mirror:
        self.r.hset(schema.MIRRORS, str(mirror_id), f"m{mirror_id}")
        self.r.hset(schema.mirror_key(mirror_id), mapping={"ID": str(mirror_id), "name": f"m{mirror_id}",
                                                           "enabled": "1", **fields})
        return Mirror.from_redis(self.r.hgetall(schema.mirror_key(mirror_id)))

    def rsyncd(self) -> str:
        daemon = start_rsyncd(self.tmp / "rsyncd", {"mirror": {"path": str(self.tree)}})
        self.addCleanup(daemon.stop)
        return daemon.url("mirror")

    async def test_rsync_scan_end_state(self) -> None:
        mirror = self.add_mirror(rsync=self.rsyncd())
        result = await self.scanner.scan_mirror(mirror, "rsync")
        self.assertEqual((result.files_indexed, result.known_indexed, result.removed), (3, 2, 0))
        r = self.r
        self.assertEqual(r.smembers(schema.mirror_files_key(1)), {"/README", "/dists/a b.txt", "/pool/x.deb"})
        self.assertEqual(r.hgetall(schema.file_info_key(1, "/dists/a b.txt")),
                         {"size": "8", "modTime": "2023-11-14 22:13:20 +0000 UTC"})
        self.assertEqual(r.smembers(schema.handled_files_key(1)), {"/README", "/pool/x.deb"})
        self.assertEqual(r.smembers(schema.file_mirrors_key("/pool/x.deb")), {"1"})
        h = r.hgetall(schema.mirror_key(1))
        self.assertEqual((h["lastSuccessfulSyncProtocol"], h["lastSuccessfulSyncPrecision"], h["tzoffset"]),
                         ("0", "1000000000", "0"))  # tzoffset written as 0 when off
        events = self.mirror_log(1)
        self.assertEqual([e["Type"] for e in events], [LOG_SCAN_STARTED, LOG_SCAN_COMPLETED])

    async def test_rsync_rescan_announces_only_what_changed(self) -> None:
        mirror = self.add_mirror(rsync=self.rsyncd())
        await self.scanner.scan_mirror(mirror, "rsync")
        await self.listen((schema.CHANNEL_MIRROR_FILE_UPDATE,))
        await self.scanner.scan_mirror(mirror, "rsync")
        os.utime(self.tree / "pool/x.deb", (MTIME + 60, MTIME + 60))
        result = await self.scanner.scan_mirror(mirror, "rsync")
        self.assertEqual((result.files_indexed, result.removed), (3, 0))
        await eventually(lambda: self.messages)
        await sleep(0.2)
        self.assertEqual(self.messages, [(schema.CHANNEL_MIRROR_FILE_UPDATE, "1 /pool/x.deb")])
        self.assertEqual(self.r.hget(schema.file_info_key(1, "/pool/x.deb"), "modTime"),
                         "2023-11-14 22:14:20 +0000 UTC")

    async def test_case_29_timezone_offset_detected(self) -> None:
        self.config = self.config.replace(FixTimezoneOffsets=True)
        mirror = self.add_mirror(rsync=self.rsyncd())
        # 20 handled files; in 19 the local time is 1 h behind the mirror's.
        names = [f"/f{i}" for i in range(20)]
        for i, n in enumerate(names):
            (self.tree / n[1:]).write_bytes(b"z")
            os.utime(self.tree / n[1:], (MTIME, MTIME))
            local = MTIME - 3600 if i else MTIME
            self.r.sadd(schema.FILES, n)
            self.r.hset(schema.file_key(n), mapping={"size": "1", "modTime": format_gts(local * 10**9, "local")})
        self.r.srem(schema.FILES, "/README", "/pool/x.deb")
        result = await self.scanner.scan_mirror(mirror, "rsync")
        self.assertEqual(result.tz_offset_ms, -3600000)
        self.assertEqual(self.r.hget(schema.mirror_key(1), "tzoffset"), "-3600000")
        self.assertEqual(self.mirror_log(1)[-1]["TZOffset"], -3600000)
        self.assertTrue(self.logged("Timezone offset detected: applied correction of -3600000ms"))

    async def test_case_30_too_few_pairs(self) -> None:
        self.config = self.config.replace(FixTimezoneOffsets=True)
        mirror = self.add_mirror(rsync=self.rsyncd())
        result = await self.scanner.scan_mirror(mirror, "rsync")
        self.assertEqual(result.tz_offset_ms, 0)
        self.assertEqual(self.r.hget(schema.mirror_key(1), "tzoffset"), "0")
        self.assertTrue(self.logged("[m1] Unable to guess the timezone offset"))

    async def test_case_12_socket_error_changes_nothing_but_last_sync_and_log(self) -> None:
        from tests.fixtures.servers import free_port

        self.r.sadd(schema.mirror_files_key(1), "/README")
        mirror = self.add_mirror(rsync=f"rsync://127.0.0.1:{free_port()}/mirror/")
        before = {k: self.r.dump(k) for k in self.r.keys("*")}
        with self.assertRaises(ScanError) as ctx:
            await self.scanner.scan_mirror(mirror, "rsync")
        self.assertEqual(str(ctx.exception), "rsync: Error in socket I/O")
        self.assertEqual(set(self.r.keys("*")) - set(before), {schema.mirror_logs_key(1)})
        self.assertFalse(self.r.exists(schema.mirror_files_tmp_key(1)))
        self.assertEqual(self.r.smembers(schema.mirror_files_key(1)), {"/README"})
        events = self.mirror_log(1)
        self.assertEqual([(e["Type"], e.get("Err")) for e in events],
                         [(LOG_SCAN_STARTED, None), (LOG_ERROR, "rsync: Error in socket I/O")])
        self.assertIn("lastSync", self.r.hgetall(schema.mirror_key(1)))
        self.assertFalse(self.r.exists(schema.scanning_key(1)))

    async def test_ftp_scan_and_monitor_job_falls_back_to_ftp(self) -> None:
        ftpd = start_ftpd(self.tree)
        self.addCleanup(ftpd.stop)
        from tests.fixtures.servers import free_port

        mirror = self.add_mirror(rsync=f"rsync://127.0.0.1:{free_port()}/none/", ftp=ftpd.url("/"))
        job = await self.scanner.run_job(mirror)
        self.assertEqual(job.status, "ok")
        assert job.result is not None
        self.assertEqual(job.result.files_indexed, 3)
        self.assertEqual(self.r.smembers(schema.mirror_files_key(1)), {"/README", "/dists/a b.txt", "/pool/x.deb"})
        h = self.r.hgetall(schema.mirror_key(1))
        self.assertEqual(h["lastSuccessfulSyncProtocol"], "1")
        types = [(e["Type"], e.get("Typ")) for e in self.mirror_log(1)]
        self.assertEqual(types, [(LOG_SCAN_STARTED, 0), (LOG_ERROR, None), (LOG_SCAN_STARTED, 1),
                                 (LOG_SCAN_COMPLETED, None)])

    async def test_no_url_and_lock_held(self) -> None:
        mirror = self.add_mirror()
        job = await self.scanner.run_job(mirror)
        self.assertEqual(job.status, "no-url")
        self.assertNotIn("lastSync", self.r.hgetall(schema.mirror_key(1)))
        mirror = self.add_mirror(rsync="rsync://127.0.0.1:1/x/")
        self.r.set(schema.scanning_key(1), "1", ex=10)
        self.assertEqual((await self.scanner.run_job(mirror)).status, "skipped")
        with self.assertRaises(ScanError) as ctx:
            await self.scanner.scan_mirror(mirror, "rsync")
        self.assertEqual(str(ctx.exception), "scan already in progress")
        self.assertNotIn("lastSync", self.r.hgetall(schema.mirror_key(1)))

    async def test_cancelled_scan_aborts_and_keeps_the_index(self) -> None:
        # A "mirror" that accepts the connection and then says nothing: rsync hangs.
        import socket

        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        self.addCleanup(srv.close)
        self.r.sadd(schema.mirror_files_key(1), "/README")
        mirror = self.add_mirror(rsync=f"rsync://127.0.0.1:{srv.getsockname()[1]}/m/")
        d = self.scanner.scan_mirror(mirror, "rsync")
        await eventually(lambda: self.r.exists(schema.scanning_key(1)))
        await sleep(0.3)
        d.cancel()
        with self.assertRaises(defer.CancelledError):
            await d
        await eventually(lambda: not self.r.exists(schema.scanning_key(1)))
        await eventually(lambda: len(self.mirror_log(1)) == 2)
        self.assertEqual(self.mirror_log(1)[-1]["Err"], ERR_ABORTED)
        self.assertEqual(self.r.smembers(schema.mirror_files_key(1)), {"/README"})

    async def test_trace_file_cases_47_48(self) -> None:
        web = WebServer()
        self.addCleanup(web.stop)
        web.answer("/pub/project/trace", Answer(200, body=b"1707052800\nmaster.example.org\n"))
        web.answer("/bad/project/trace", Answer(200, body=b"Sun Feb  4 12:00:00 UTC 2024\n"))
        web.answer("/html/project/trace", Answer(404, body=b"<!DOCTYPE html><html></html>"))
        self.config = self.config.replace(TraceFileLocation="/project/trace")
        host = web.base("http").removeprefix("http://")
        good = self.add_mirror(1, http=f"{host}/pub/", httpsUp="0")
        await self.listen((schema.CHANNEL_MIRROR_UPDATE,))
        await self.scanner.fetch_trace(good)
        self.assertEqual(self.r.hget(schema.mirror_key(1), "lastModTime"), "1707052800")
        await eventually(lambda: ("_mirrorbits_mirror_update", "1") in self.messages)
        req = web.recorder.requests[-1]
        self.assertEqual((req["method"], req["path"]), ("GET", "/pub/project/trace"))
        self.assertTrue(req["headers"]["user-agent"][0].endswith(" TRACE"))
        for i, where in ((2, "bad"), (3, "html")):
            m = self.add_mirror(i, http=f"{web.base('http')}/{where}/")
            await self.scanner.fetch_trace(m)
            self.assertIsNone(self.r.hget(schema.mirror_key(i), "lastModTime"))
        self.assertTrue(self.logged('[m2] parsing trace file failed: "Sun" is not a valid timestamp'))
        self.assertTrue(self.logged('[m3] parsing trace file failed: "<!DOCTYPE" is not a valid timestamp'))


def test_trace_url_joins_with_one_slash() -> None:
    from mirrorbits.scan.trace import first_token, trace_url

    m = Mirror(http_url="m.example.org/pub/", https_up=True)
    assert trace_url(m, "/project/trace") == "https://m.example.org/pub/project/trace"
    assert trace_url(Mirror(http_url="m.example.org/pub"), "trace") == "http://m.example.org/pub/trace"
    assert trace_url(Mirror(http_url="http://h/pub/"), "trace") == "http://h/pub/trace"
    assert first_token(b"  \n 42 x") == b"42"
    assert first_token(b"  ") is None
    assert first_token(b"9" * (64 * 1024 + 1)) is None
