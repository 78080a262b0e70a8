"""The monitor loop: scans scheduled by ScanInterval within ConcurrentSync, a rescanned down mirror
checked at once, removed mirrors forgotten, re-enabled mirrors re-checked.

The monitor's schedule runs on a ``task.Clock`` (its ticks, resyncs and "now"), started at the wall
time because the scanner stamps ``lastSync`` with it; Redis, the rsync daemon and the HTTP server are
real and run on the real reactor, which the tests let run between two steps of the fake clock.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet import defer, reactor, task

from mirrorbits.config import Config
from mirrorbits.httpclient import HttpClient
from mirrorbits.model import LOG_SCAN_STARTED, Mirror
from mirrorbits.monitor.cluster import Cluster
from mirrorbits.monitor.health import HealthChecker
from mirrorbits.monitor.scheduler import RESYNC_INTERVAL, Monitor
from mirrorbits.redis import schema
from mirrorbits.scan.commit import commit_marker_key, staging_key
from mirrorbits.scan.mirror import MirrorScanner, ScanJobResult
from tests.fixtures.rsyncd import start_rsyncd
from tests.monitor.httpd import Answer, WebServer
from tests.monitor.support import RedisTestCase, sleep


class SchedulerTests(RedisTestCase):
    timeout = 60

    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(tempfile.mkdtemp(prefix="mb-sched-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        tree = self.tmp / "tree"
        tree.mkdir()
        (tree / "f").write_bytes(b"abc")
        os.utime(tree / "f", (1700000000, 1700000000))
        self.rsyncd = start_rsyncd(self.tmp / "rsyncd", {"m": {"path": str(tree)}})
        self.addCleanup(self.rsyncd.stop)
        self.web = WebServer()
        self.addCleanup(self.web.stop)
        self.r.sadd(schema.FILES, "/f")
        self.r.hset(schema.file_key("/f"), "size", "3")
        self.config = Config(Repository=str(self.tmp), ConcurrentSync=1)
        self.clock = task.Clock()
        self.clock.advance(time.time())
        #: Mirror ids, one per scan the monitor started.
        self.scans: list[int] = []
        #: When set, every scan waits for it before it runs (a scan in progress for as long as needed).
        self.hold: defer.Deferred[None] | None = None

    def add_mirror(self, i: int, **fields: str) -> None:
        self.web.answer(f"/m{i}/f", Answer(200))
        self.r.hset(schema.MIRRORS, str(i), f"m{i}")
        self.r.hset(schema.mirror_key(i), mapping={
            "ID": str(i), "name": f"m{i}", "enabled": "1", "http": f"{self.web.base()}/m{i}/",
            "rsync": self.rsyncd.url("m"), **fields})

    def monitor(self) -> Monitor:
        http = HttpClient(reactor, timeout=3)
        scanner = MirrorScanner(self.client, lambda: self.config, http)
        run_job = scanner.run_job

        async def counted_run_job(mirror: Mirror) -> ScanJobResult:
            self.scans.append(mirror.id)
            if self.hold is not None:
                await self.hold
            return await run_job(mirror)

        scanner.run_job = counted_run_job  # type: ignore[method-assign]
        mon = Monitor(self.client, lambda: self.config, Cluster(self.client, 0), HealthChecker(http),
                      scanner, self.clock, clock=self.clock.seconds, cluster_settle=0)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(mon.stop()))
        return mon

    async def run_until(self, condition: Callable[[], object], step: float = 1.0,
                        timeout: float = 20.0) -> float:
        """Move the monitor's clock on by ``step`` at a time, letting the real I/O that each step
        started run, until ``condition()`` holds; returns the fake seconds that passed."""
        start = self.clock.seconds()
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met after {self.clock.seconds() - start:g} fake s")
            self.clock.advance(step)
            await sleep(0.01)
        return self.clock.seconds() - start

    async def advance(self, seconds: float, step: float = 1.0) -> None:
        """Move the monitor's clock on by ``seconds``, one ``step`` at a time, with real I/O between."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))
            await sleep(0)

    async def test_scans_bounded_then_down_mirror_checked(self) -> None:
        for i in (1, 2, 3):
            self.add_mirror(i, httpUp="0")
        mon = self.monitor()
        peak = [0]
        orig_tick = mon.tick

        def tick() -> None:
            orig_tick()
            peak[0] = max(peak[0], mon._scans_running)

        mon.tick = tick  # type: ignore[method-assign]
        checked: list[int] = []
        mon.check_listeners.append(lambda mid, outs: checked.append(mid))
        await mon.start()
        await self.run_until(lambda: all(self.r.hget(schema.mirror_key(i), "lastSuccessfulSync")
                                         for i in (1, 2, 3)))
        self.assertEqual(peak[0], 1)  # ConcurrentSync = 1
        for i in (1, 2, 3):
            self.assertEqual(self.r.smembers(schema.handled_files_key(i)), {"/f"})
        # Each was down before its scan: checked again after it, and now up.
        await self.run_until(lambda: all(self.r.hget(schema.mirror_key(i), "httpUp") == "1"
                                         for i in (1, 2, 3)))
        self.assertEqual(sorted(self.scans), [1, 2, 3])
        # For 29 minutes (ScanInterval is 30) the ticks, checks and resyncs go on: no second scan.
        # The 29 minutes count from mirror 1's scan as the scanner stamped it, with the wall time:
        # the fake clock has run ahead of the wall clock by however many steps the other scans and
        # checks took (on a loaded machine a minute and more), so counting them from the clock's
        # "now" would reach ScanInterval too.
        last_sync = float(self.r.hget(schema.mirror_key(1), "lastSync") or 0)
        remaining = last_sync + 29 * 60 - self.clock.seconds()
        self.assertGreater(remaining, 0)
        await self.advance(remaining)
        self.assertEqual(sorted(self.scans), [1, 2, 3])
        self.assertEqual([e["Type"] for e in self.mirror_log(1)].count(LOG_SCAN_STARTED), 1)
        # Past ScanInterval a mirror is due again: a tick starts its second scan. (No more is checked
        # here: the scanner stamps lastSync with the wall time, which the fake clock has left behind.)
        waited = await self.run_until(lambda: len(self.scans) == 4)
        self.assertLessEqual(waited, 2 * 60)

    async def test_a_mirror_being_scanned_is_not_scanned_again(self) -> None:
        # Scan slots to spare (ConcurrentSync 3, one mirror): only the mirror's own "scanning" mark
        # keeps the ticks during its scan from starting a second one.
        self.config = self.config.replace(ConcurrentSync=3)
        self.add_mirror(1)
        hold: defer.Deferred[None] = defer.Deferred()
        self.hold = hold
        mon = self.monitor()
        self.addCleanup(lambda: None if hold.called else hold.callback(None))
        await mon.start()
        await self.run_until(lambda: self.scans)
        await self.advance(10)  # ten ticks while the scan is in progress
        self.assertEqual(self.scans, [1])
        hold.callback(None)
        await self.run_until(lambda: self.r.hget(schema.mirror_key(1), "lastSuccessfulSync"))
        await self.advance(10)
        self.assertEqual(self.scans, [1])

    async def test_removed_forgotten_and_reenabled_rechecked(self) -> None:
        self.config = self.config.replace(ConcurrentSync=0)
        for i in (1, 2):
            self.add_mirror(i)
            self.r.sadd(schema.handled_files_key(i), "/f")
        mon = self.monitor()
        checked: list[int] = []
        mon.check_listeners.append(lambda mid, outs: checked.append(mid))
        await mon.start()
        started = self.clock.seconds()
        await self.run_until(lambda: sorted(checked) == [1, 2], step=0)
        # Removal (as the RPC does it): the monitor forgets it and the cluster index shrinks.
        self.r.delete(schema.mirror_key(2))
        self.r.hdel(schema.MIRRORS, "2")
        self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "2")
        await self.run_until(lambda: 2 not in mon.mirrors and mon.cluster.mirrors_index == [1], step=0)
        # Disabled then enabled again: checked at the next tick, not after CheckInterval (a minute).
        self.r.hset(schema.mirror_key(1), "enabled", "0")
        self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "1")
        await self.run_until(lambda: not mon.mirrors[1].mirror.enabled, step=0)
        self.r.hset(schema.mirror_key(1), "enabled", "1")
        self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "1")
        await self.run_until(lambda: mon.mirrors[1].mirror.enabled, step=0)
        self.clock.advance(1)  # one tick
        self.assertTrue(mon.mirrors[1].checking)
        await self.run_until(lambda: checked.count(1) == 2, step=0)
        # A mirror added while no message reached us is found by the periodic resync (a minute).
        self.add_mirror(3)
        self.r.sadd(schema.handled_files_key(3), "/f")
        since_start = self.clock.seconds() - started
        await self.advance(RESYNC_INTERVAL - since_start % RESYNC_INTERVAL - 1)
        self.assertNotIn(3, mon.mirrors)
        self.clock.advance(1)
        await self.run_until(lambda: 3 in mon.mirrors, step=0)
        await self.run_until(lambda: 3 in checked)

    async def test_a_commit_another_node_left_half_done_is_finished_at_the_next_resync(self) -> None:
        now = str(int(time.time()))
        self.add_mirror(1, lastSync=now, lastSuccessfulSync=now, httpUp="1")
        self.r.sadd(schema.mirror_files_key(1), "/old")
        self.r.sadd(schema.file_mirrors_key("/old"), "1")
        self.r.hset(schema.file_info_key(1, "/old"), mapping={"size": "1", "modTime": "x"})
        mon = self.monitor()
        await mon.start()
        # Another node dies after deciding its commit of the listing {/f}, holding the lock.
        self.r.rpush(staging_key(1), "3\0" + "2023-11-14 22:13:20 +0000 UTC\0/f\n")  # one staged batch
        self.r.hset(commit_marker_key(1), mapping={"type": "1", "precision": "1000000000", "files": "1",
                                                   "since": now})
        self.r.expire(staging_key(1), 86400)
        self.r.expire(commit_marker_key(1), 86400)
        self.r.set(schema.scanning_key(1), "1", ex=10)
        await self.advance(RESYNC_INTERVAL + 1)
        self.assertTrue(self.r.exists(commit_marker_key(1)))  # the lock is still the dead node's
        self.r.delete(schema.scanning_key(1))  # its TTL ran out
        await self.run_until(lambda: not self.r.exists(commit_marker_key(1)))
        self.assertEqual(self.r.smembers(schema.mirror_files_key(1)), {"/f"})
        self.assertFalse(self.r.exists(schema.file_info_key(1, "/old"), staging_key(1)))
        self.assertEqual(self.r.smembers(schema.handled_files_key(1)), {"/f"})
        self.assertEqual(self.scans, [])  # finished, not rescanned
