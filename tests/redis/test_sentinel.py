"""Sentinel mode against real redis-server and redis-sentinel processes: discovery and failover.

txredisapi alone keeps writing to a demoted master for ~11 s after a forced failover and loses those
writes; our client follows ``+switch-master`` and re-discovers on READONLY.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from mirrorbits.redis.connection import RedisClient, RedisSettings, RedisUnavailable, ResponseError
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port, wait_for_port
from tests.fixtures.trial import sleep

MASTER = "mirrorbits-test"


class Sentinel:
    def __init__(self, master_port: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="mirrorbits-test-sentinel-")
        self.port = free_port()
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
                    f"sentinel down-after-milliseconds {MASTER} 1000\n"
                    f"sentinel failover-timeout {MASTER} 5000\n"
                    f"sentinel parallel-syncs {MASTER} 1\n")
        binary = shutil.which("redis-sentinel") or shutil.which("redis-server")
        assert binary, "redis-sentinel is required (apt-get install redis-sentinel)"
        args = [binary, conf] + ([] if binary.endswith("redis-sentinel") else ["--sentinel"])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, *args: str) -> Any:
        import redis as redis_py

        return redis_py.Redis(port=self.port, decode_responses=True).execute_command(*args)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelFailoverTests(unittest.TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.master = RedisServer().start()
        self.addCleanup(self.master.cleanup)
        self.replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(self.master.port)]).start()
        self.addCleanup(self.replica.cleanup)
        self.sentinel = Sentinel(self.master.port)
        self.addCleanup(self.sentinel.stop)
        deadline = time.monotonic() + 20
        while self.replica.client().info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "replica did not sync"
            time.sleep(0.1)
        # The sentinel must know the replica before it can promote it.
        while not self.sentinel.command("SENTINEL", "REPLICAS", MASTER):
            assert time.monotonic() < deadline, "sentinel did not discover the replica"
            time.sleep(0.1)
        self.settings = RedisSettings(address="", sentinels=(self.sentinel.address,), master_name=MASTER)
        self.client = RedisClient(lambda: self.settings)
        self.client.start()
        self.client.set_ready()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.client.stop()))

    async def write_loop(self, acked: list[int], stop: list[bool]) -> None:
        n = 0
        while not stop:
            n += 1
            try:
                await self.client.execute("RPUSH", "writes", str(n))
                acked.append(n)
            except (RedisUnavailable, ResponseError):
                pass
            await sleep(0.01)

    @defer.inlineCallbacks
    def test_forced_failover_under_writes(self) -> Any:
        yield defer.Deferred.fromCoroutine(self.client.execute("PING"))
        self.assertEqual(self.client.master_address, self.master.address)
        acked: list[int] = []
        stop: list[bool] = []
        writer = defer.Deferred.fromCoroutine(self.write_loop(acked, stop))
        yield sleep(0.5)
        self.sentinel.command("SENTINEL", "FAILOVER", MASTER)
        start = time.monotonic()
        while self.client.master_address != self.replica.address:
            self.assertLess(time.monotonic() - start, 10, "client did not follow the failover")
            yield sleep(0.05)
        switched = time.monotonic() - start
        yield sleep(1.0)
        stop.append(True)
        yield writer
        stored = {int(x) for x in self.replica.client().lrange("writes", 0, -1)}
        lost = [n for n in acked if n not in stored]
        # Commands pause from the first failover event; only a write already in flight at that moment
        # could reach the old master after the replica was promoted (measured: 0 lost of ~140).
        self.assertLess(switched, 5)
        print(f"\nforced failover: {len(acked)} writes acknowledged, {len(lost)} lost, switch after {switched:.2f}s")
        self.assertLessEqual(len(lost), 2, f"lost {len(lost)} acknowledged writes: {lost[:10]}...")
        after = [n for n in acked[-50:]]
        self.assertTrue(all(n in stored for n in after))

    @defer.inlineCallbacks
    def test_master_shutdown(self) -> Any:
        yield defer.Deferred.fromCoroutine(self.client.execute("SET", "k", "v"))
        self.master.kill()
        start = time.monotonic()
        while True:
            try:
                yield defer.Deferred.fromCoroutine(self.client.execute("SET", "k2", "v2"))
                break
            except (RedisUnavailable, ResponseError):
                self.assertLess(time.monotonic() - start, 15, "no master after the shutdown")
                yield sleep(0.1)
        self.assertEqual(self.client.master_address, self.replica.address)
        self.assertEqual(self.replica.client().get("k2"), "v2")
