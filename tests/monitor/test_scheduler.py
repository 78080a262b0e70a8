"""The monitor loop (spec §7.1–§7.3): scans scheduled by ScanInterval within ConcurrentSync, a
rescanned down mirror checked at once, removed mirrors forgotten, re-enabled mirrors re-checked."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor

from mirrorbits.config import Config
from mirrorbits.monitor.cluster import Cluster
from mirrorbits.monitor.health import HealthChecker, HttpClient
from mirrorbits.monitor.scheduler import Monitor
from mirrorbits.redis import schema
from mirrorbits.scan.mirror import MirrorScanner
from tests.fixtures.rsyncd import start_rsyncd
from tests.monitor.httpd import Answer, WebServer
from tests.monitor.support import RedisTestCase, eventually, sleep


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

    def add_mirror(self, i: int, **fields: str) -> None:
        self.web.answer(f"/m{i}/f", Answer(200))
        self.r.hset(schema.MIRRORS, str(i), f"m{i}")
        self.r.hset(schema.mirror_key(i), mapping={
            "ID": str(i), "name": f"m{i}", "enabled": "1", "http": f"{self.web.base()}/m{i}/",
            "rsync": self.rsyncd.url("m"), **fields})

    def monitor(self) -> Monitor:
        http = HttpClient(reactor, timeout=3)
        scanner = MirrorScanner(self.client, lambda: self.config, http)
        mon = Monitor(self.client, lambda: self.config, Cluster(self.client, 0), HealthChecker(http),
                      scanner, tick=0.1, cluster_settle=0, resync_interval=0.5)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(mon.stop()))
        return mon

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
        await eventually(lambda: all(self.r.hget(schema.mirror_key(i), "lastSuccessfulSync")
                                     for i in (1, 2, 3)), timeout=20)
        self.assertEqual(peak[0], 1)  # ConcurrentSync = 1
        for i in (1, 2, 3):
            self.assertEqual(self.r.smembers(schema.handled_files_key(i)), {"/f"})
        # Each was down before its scan: checked again after it (step 7), and now up.
        await eventually(lambda: all(self.r.hget(schema.mirror_key(i), "httpUp") == "1"
                                     for i in (1, 2, 3)), timeout=10)
        # ScanInterval (30 min) has not passed: no second scan.
        events = [e["Type"] for e in self.mirror_log(1)]
        await sleep(0.5)
        self.assertEqual(events.count(7), 1)

    async def test_removed_forgotten_and_reenabled_rechecked(self) -> None:
        self.config = self.config.replace(ConcurrentSync=0)
        for i in (1, 2):
            self.add_mirror(i)
            self.r.sadd(schema.handled_files_key(i), "/f")
        mon = self.monitor()
        checked: list[int] = []
        mon.check_listeners.append(lambda mid, outs: checked.append(mid))
        await mon.start()
        await eventually(lambda: sorted(checked) == [1, 2])
        # Removal (as the RPC does it): the monitor forgets it and the cluster index shrinks.
        self.r.delete(schema.mirror_key(2))
        self.r.hdel(schema.MIRRORS, "2")
        self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "2")
        await eventually(lambda: 2 not in mon.mirrors and mon.cluster.mirrors_index == [1])
        # Disabled then enabled again: checked at once, not after CheckInterval.
        self.r.hset(schema.mirror_key(1), "enabled", "0")
        self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "1")
        await eventually(lambda: not mon.mirrors[1].mirror.enabled)
        self.r.hset(schema.mirror_key(1), "enabled", "1")
        self.r.publish(schema.CHANNEL_MIRROR_UPDATE, "1")
        await eventually(lambda: checked.count(1) == 2, timeout=5)
        # A mirror added while no message reached us is found by the periodic resync.
        self.add_mirror(3)
        self.r.sadd(schema.handled_files_key(3), "/f")
        await eventually(lambda: 3 in checked, timeout=5)
