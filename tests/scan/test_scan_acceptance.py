"""Mirror scans end to end through the monitor's scan entry point (``MirrorScanner.run_job``).

* A mirror that hangs mid-listing, closes the connection mid-listing, or sends garbage is marked
  failed with a logged reason (``[<name>] <reason>`` and a mirror-log event 1 with that ``Err``),
  its previous index is left byte for byte as it was, the scan lock is released, and the process
  keeps serving: its reactor answers HTTP while the scan hangs, and the next scan of a healthy
  mirror succeeds.  rsync goes through the real ``rsync`` client and a real ``rsync --daemon``,
  with a TCP proxy in between that misbehaves after part of the listing; FTP uses the scripted
  server of ``tests.fixtures.ftpd``.
* A 20,000-file rsync listing scanned by a real daemon process (``bench/mirror_scan.py``) keeps
  the daemon's RSS growth under 100 MB and never stalls Redis 50 ms (a separate PING loop and
  Redis' SLOWLOG).
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.web.client import readBody

from mirrorbits.config import Config
from mirrorbits.gocompat import format_gts
from mirrorbits.httpclient import HttpClient
from mirrorbits.model import LOG_ERROR, LOG_SCAN_COMPLETED, LOG_SCAN_STARTED, Mirror
from mirrorbits.redis import schema
from mirrorbits.scan.commit import handled_tmp_key, staging_key
from mirrorbits.scan.mirror import MirrorScanner
from tests.fixtures.ftpd import start_scripted_ftpd
from tests.fixtures.rsyncd import start_rsyncd
from tests.monitor.httpd import Answer, WebServer
from tests.monitor.support import RedisTestCase, sleep

ROOT = Path(__file__).resolve().parents[2]
MTIME = 1700000000
#: Bytes of the rsync daemon's answer let through before the proxy misbehaves: past the greeting
#: and the start of the file list, well before its end (the tree's list is ~10x longer).
PASS_BYTES = 6000


class _Upstream(protocol.Protocol):
    def __init__(self, peer: _Proxy) -> None:
        self.peer = peer

    def connectionMade(self) -> None:  # noqa: N802
        self.peer.upstream_connected(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.peer.from_upstream(data)

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:  # noqa: N802
        self.peer.upstream_lost()


class _Proxy(protocol.Protocol):
    """Client side of the proxy: forwards both ways until ``PASS_BYTES`` came from the server,
    then ``hang`` (forward nothing more, keep both connections open), ``close`` (drop the
    client's connection) or ``garbage`` (send random bytes instead of the rest)."""

    def __init__(self, factory: MisbehavingProxy) -> None:
        self.factory = factory
        self.upstream: Any = None
        self.pending: list[bytes] = []
        self.passed = 0
        self.broken = False

    def connectionMade(self) -> None:  # noqa: N802
        self.factory.open.append(self)
        self.transport.pauseProducing()  # type: ignore[union-attr]
        protocol.ClientCreator(reactor, _Upstream, self).connectTCP("127.0.0.1", self.factory.target)

    def upstream_connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for chunk in self.pending:
            upstream.transport.write(chunk)
        self.pending = []
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.broken:
            return
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def from_upstream(self, data: bytes) -> None:
        self.factory.received += len(data)
        if self.broken:
            return
        room = PASS_BYTES - self.passed
        if len(data) <= room:
            self.passed += len(data)
            self.transport.write(data)  # type: ignore[union-attr]
            return
        self.transport.write(data[:room])  # type: ignore[union-attr]
        self.passed = PASS_BYTES
        self.broken = True
        self.factory.misbehaved += 1
        mode = self.factory.mode
        if mode == "close":
            self.transport.loseConnection()  # type: ignore[union-attr]
            self.upstream.transport.loseConnection()
        elif mode == "garbage":
            rnd = random.Random(6)
            self.transport.write(bytes(rnd.randrange(256) for _ in range(4096)))  # type: ignore[union-attr]
        # "hang": say nothing more, hold both connections open

    def upstream_lost(self) -> None:
        if not self.broken:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:  # noqa: N802
        if self in self.factory.open:
            self.factory.open.remove(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def abort(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]
        if self.upstream is not None:
            self.upstream.transport.abortConnection()


class MisbehavingProxy(protocol.Factory):
    noisy = False

    def __init__(self, target: int, mode: str) -> None:
        self.target = target
        self.mode = mode
        self.received = 0
        self.misbehaved = 0
        self.open: list[_Proxy] = []
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")  # type: ignore[attr-defined]

    def buildProtocol(self, addr: Any) -> protocol.Protocol:  # noqa: N802
        return _Proxy(self)

    def stop(self) -> Any:
        for p in list(self.open):
            p.abort()
        return self.port.stopListening()

    def url(self, module: str) -> str:
        return f"rsync://127.0.0.1:{self.port.getHost().port}/{module}/"


class MisbehavingMirrorTests(RedisTestCase):
    timeout = 60

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.tmp = Path(tempfile.mkdtemp(prefix="mb-scan-acc-"))
        tree = cls.tmp / "tree"
        for d in range(10):
            sub = tree / "pool" / f"dir{d:02d}"
            sub.mkdir(parents=True)
            for i in range(300):
                (sub / f"some-package-name_{d:02d}-{i:04d}_amd64.deb").write_bytes(b"")
        cls.rsyncd = start_rsyncd(cls.tmp / "rsyncd", {"mirror": {"path": str(tree)}})

    @classmethod
    def tearDownClass(cls) -> None:
        cls.rsyncd.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        self.config = Config(Repository=str(self.tmp))
        self.http = HttpClient(reactor, timeout=3)
        self.scanner = MirrorScanner(self.client, lambda: self.config, self.http, rsync_timeout=1.0,
                                     ftp_timeout=1.0)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.scanner.stop()))
        self.web = WebServer()
        self.addCleanup(self.web.stop)
        self.web.answer("/alive", Answer(200, body=b"yes"))
        # The index of mirror 1 from an earlier successful scan.
        old = ["/pool/dir00/some-package-name_00-0000_amd64.deb", "/old/gone.iso"]
        gts = format_gts(MTIME * 10**9, "UTC")
        self.r.sadd(schema.FILES, *old)
        self.r.sadd(schema.mirror_files_key(1), *old)
        self.r.sadd(schema.handled_files_key(1), *old)
        for p in old:
            self.r.sadd(schema.file_mirrors_key(p), "1")
            self.r.hset(schema.file_info_key(1, p), mapping={"size": "0", "modTime": gts})

    def add_mirror(self, mirror_id: int, **urls: str) -> Mirror:
        self.r.hset(schema.MIRRORS, str(mirror_id), f"m{mirror_id}")
        self.r.hset(schema.mirror_key(mirror_id), mapping={
            "ID": str(mirror_id), "name": f"m{mirror_id}", "enabled": "1", **urls})
        return Mirror.from_redis(self.r.hgetall(schema.mirror_key(mirror_id)))

    def index_of_1(self) -> dict[str, bytes]:
        """Every key of mirror 1's index, dumped (byte-exact)."""
        keys = [k for k in self.r.keys("*")
                if k.startswith(("MIRRORFILES", "HANDLEDFILES", "FILEINFO_1_", "FILEMIRRORS_",
                                 "MIRRORSCANTMP"))]
        return {k: self.r.dump(k) for k in sorted(keys)}

    async def serving(self) -> float:
        """Time for this process to answer an HTTP request (its reactor must not be stuck)."""
        t = time.monotonic()
        response, body = await self.http.request(
            "GET", f"{self.web.base()}/alive", "test", allow_redirect=lambda a, b: True,
            read_body=readBody)
        self.assertEqual((response.code, body), (200, b"yes"))
        return time.monotonic() - t

    async def fails(self, mirror: Mirror, *, probe: bool = True) -> str:
        """Run the monitor's scan job on ``mirror``; check the failure is recorded and contained."""
        before = self.index_of_1()
        d = defer.Deferred.fromCoroutine(self.scanner.run_job(mirror))
        if probe:
            await sleep(0.3)
            self.assertFalse(d.called)
            self.assertLess(await self.serving(), 0.5)  # serving while the scan is stuck
        job = await d
        self.assertEqual(job.status, "failed")
        self.assertTrue(job.error)
        self.assertTrue(self.logged(f"[m1] {job.error}"), job.error)
        events = self.mirror_log(1)
        self.assertEqual([e["Type"] for e in events][-2:], [LOG_SCAN_STARTED, LOG_ERROR])
        self.assertEqual(events[-1]["Err"], job.error)
        self.assertEqual(self.index_of_1(), before)  # previous index intact
        for key in (schema.mirror_files_tmp_key(1), staging_key(1), handled_tmp_key(1),
                    schema.scanning_key(1)):
            self.assertFalse(self.r.exists(key), key)
        self.assertNotIn("lastSuccessfulSync", self.r.hgetall(schema.mirror_key(1)))
        return job.error

    async def rsync_fails(self, mode: str) -> str:
        proxy = MisbehavingProxy(self.rsyncd.port, mode)
        self.addCleanup(proxy.stop)
        error = await self.fails(self.add_mirror(1, rsync=proxy.url("mirror")), probe=mode == "hang")
        self.assertEqual(proxy.misbehaved, 1)  # it really broke off mid-listing
        return error

    async def still_scans(self) -> None:
        """After the failures the same scanner indexes a healthy mirror."""
        job = await self.scanner.run_job(self.add_mirror(2, rsync=self.rsyncd.url("mirror")))
        self.assertEqual(job.status, "ok")
        assert job.result is not None
        self.assertEqual(job.result.files_indexed, 3000)
        self.assertEqual(self.r.scard(schema.mirror_files_key(2)), 3000)
        self.assertEqual(self.mirror_log(2)[-1]["Type"], LOG_SCAN_COMPLETED)

    async def test_rsync_mirror_hangs_mid_listing(self) -> None:
        error = await self.rsync_fails("hang")
        self.assertEqual(error, "rsync: no output for 1s, killed")
        await self.still_scans()

    async def test_rsync_mirror_closes_mid_listing(self) -> None:
        error = await self.rsync_fails("close")
        self.assertTrue(error.startswith("rsync: "), error)  # rsync's own exit status
        await self.still_scans()

    async def test_rsync_mirror_sends_garbage(self) -> None:
        error = await self.rsync_fails("garbage")
        self.assertTrue(error.startswith("rsync: "), error)
        await self.still_scans()

    async def ftp_fails(self, mode: str) -> str:
        server = start_scripted_ftpd(mode)
        self.addCleanup(server.stop)
        return await self.fails(self.add_mirror(1, ftp=server.url()), probe=mode == "hang-listing")

    async def test_ftp_mirror_hangs_mid_listing(self) -> None:
        error = await self.ftp_fails("hang-listing")
        self.assertTrue(error.startswith("ftp error ") and "i/o timeout" in error, error)
        await self.still_scans()

    async def test_ftp_mirror_closes_mid_listing(self) -> None:
        self.assertEqual(await self.ftp_fails("close-listing"), "ftp error connection closed by server")
        await self.still_scans()

    async def test_ftp_mirror_sends_garbage(self) -> None:
        error = await self.ftp_fails("garbage-reply")
        self.assertTrue(error.startswith("ftp error invalid response code: "), error)
        await self.still_scans()


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("mirror_scan_bench", ROOT / "bench" / "mirror_scan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_20k_file_rsync_scan_bounded_memory_and_redis_stalls() -> None:
    """The scale criterion at a tenth of the size (bench/mirror_scan.py runs the full 200,000)."""
    bench = _bench()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = Path(tempfile.mkdtemp(prefix="mb-scan-20k-", dir=base))
    try:
        realtime = bench.realtime_possible()
        figures = bench.run(20_000, workdir, verbose=False, realtime=realtime)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for f in figures:
        print(f.line())
        assert f.files_indexed in (20_000, 19_800), f.cli_output
        assert f.rss_growth_mb < 100, f.line()
        assert f.slowlog_max_ms < 50, f.line()  # no Redis command ran 50 ms
        # And no client waited 50 ms for Redis because of the scan. The raw worst PING also holds
        # the machine's own delays (a loaded machine kept a PING 108 ms off the CPU while Redis
        # was idle), so the bound is on what the idle control loop did not meet at the same moment.
        assert f.ping_stall_ms < 50, f.line()
        assert f.pings > 100  # the loop really ran through the scan


def test_scan_stall_measure_sees_a_redis_stall_and_not_the_machine() -> None:
    """The measure the 20k test bounds: a 300 ms stall of the scanned Redis (DEBUG SLEEP) counts;
    the same delay met by the control loop at that moment (the machine's) does not count. The
    bound leaves 200 ms to the machine (the PING process' own wait for a CPU before it sends, a
    delay the control loop met meanwhile): it checks that a stall is seen, not its precise size."""
    bench = _bench()
    from tests.fixtures.redis import RedisServer

    scanned, control = RedisServer().start(), RedisServer().start()
    try:
        ping, control_ping = bench.PingLoop(scanned.port), bench.PingLoop(control.port)
        ping.wait_started()
        control_ping.wait_started()
        scanned.client().execute_command("DEBUG", "SLEEP", "0.3")
        time.sleep(0.05)
        ping.stop()
        control_ping.stop()
    finally:
        scanned.cleanup()
        control.cleanup()
    stall = bench.scan_stall_ms(ping.samples, control_ping.samples)
    assert stall >= 100, (ping.worst, stall)
    # The control loop met the same delay at the same moment: nothing is left to the scan.
    assert bench.scan_stall_ms(ping.samples, ping.samples) == 0.0
