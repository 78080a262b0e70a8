"""The cluster: announce text, expiry, ordering and the Go split formula, and three monitors plus a
simulated Go node sharing one Redis."""

from __future__ import annotations

import random
import re
import sys
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task

from mirrorbits.config import Config
from mirrorbits.httpclient import HttpClient
from mirrorbits.monitor.cluster import Cluster, is_handled, make_node_id, per_node
from mirrorbits.monitor.health import HealthChecker
from mirrorbits.monitor.scheduler import Monitor
from mirrorbits.redis import schema
from mirrorbits.scan.mirror import MirrorScanner
from tests.fixtures import processes
from tests.monitor.httpd import Answer, WebServer
from tests.monitor.support import RedisTestCase, eventually, sleep


def split(ids: list[int], total: int) -> list[set[int]]:
    return [{m for m in ids if is_handled(ids, m, n, total)} for n in range(total)]


def test_cases_37_to_39_split() -> None:
    assert split([1, 2, 3, 4], 1) == [{1, 2, 3, 4}]
    assert split([1, 2, 3, 4], 2) == [{1, 2}, {3, 4}]
    assert split([1, 2, 3, 4, 5], 3) == [{1, 2}, {3, 4}, {5}]
    assert split([1, 2, 3, 4], 3) == [{1}, {2}, {3, 4}]
    assert split([10], 3) == [set(), set(), {10}]
    assert split([1, 2, 3, 4, 5, 6], 4) == [{1, 2}, {3, 4}, {5, 6}, set()]


def test_per_node_is_float32_rounding() -> None:
    assert [per_node(n, 3) for n in (0, 1, 2, 4, 5)] == [0, 0, 1, 1, 2]
    assert per_node(7, 2) == 4  # 3.5 + 0.5 = 4.0: half rounds up
    # float32(16777217) == 16777216: the Go formula sees the rounded count.
    assert per_node(16777217, 1) == 16777216


@given(st.lists(st.integers(1, 10**6), unique=True, max_size=60), st.integers(1, 9))
def test_split_has_no_overlap_and_no_gap(ids: list[int], total: int) -> None:
    ids.sort()
    parts = split(ids, total)
    assert sum(len(p) for p in parts) == len(ids)
    assert set().union(*parts) == set(ids)


def test_case_40_index_insertion() -> None:
    c = Cluster.__new__(Cluster)
    c.mirrors_index = [1, 3]
    c.add_mirror(2)
    assert c.mirrors_index == [1, 2, 3]
    c.mirrors_index = [2, 3, 4]
    c.add_mirror(1)
    c.add_mirror(3)
    assert c.mirrors_index == [1, 2, 3, 4]
    c.mirrors_index = [1, 2, 3, 4, 5]
    c.remove_mirror(6)
    assert c.mirrors_index == [1, 2, 3, 4, 5]
    c.remove_mirror(1)
    assert c.mirrors_index == [2, 3, 4, 5]


def test_node_id_format() -> None:
    assert re.fullmatch(r"web1-\d{5}", make_node_id("web1"))
    assert make_node_id("", random.Random(1)).startswith("unknown-")


def test_case_36_expiry_and_ordering() -> None:
    now = [1000.0]
    c = Cluster(None, 0, node_id="test-4242", reactor=reactor, clock=lambda: now[0])  # type: ignore[arg-type]
    c.nodes["meh-4242"] = 994
    c._sort()
    assert c.node_ids == ["meh-4242", "test-4242"]
    c.handle_announce("HELLO0 test-4242")
    assert c.node_ids == ["test-4242"] and c.node_total == 1 and c.node_index == 0
    c.handle_announce("HELLO0 meh-4242")
    assert c.node_ids == ["meh-4242", "test-4242"] and c.node_index == 1
    c.handle_announce("HELLO0x other")  # wrong prefix: ignored
    c.handle_announce("HELLO00 other")
    assert c.node_total == 2
    # byte-wise order: upper case and '-' sort before lower case
    c.handle_announce("HELLO0 Zed-00001")
    c.handle_announce("HELLO0 test-00001")
    assert c.node_ids == ["Zed-00001", "meh-4242", "test-00001", "test-4242"]
    now[0] = 1005.0  # last + 5 < now is false at exactly 5 s
    c.handle_announce("HELLO0 test-4242")
    assert c.node_total == 4
    now[0] = 1006.0
    c.handle_announce("HELLO0 test-4242")
    assert c.node_ids == ["test-4242"]


class ClusterRedisTests(RedisTestCase):
    timeout = 60

    @classmethod
    def setUpClass(cls) -> None:
        from tests.fixtures.redis import RedisServer

        cls.server = RedisServer(["--databases", "64"]).start()  # one test uses DB 42

    async def test_case_35_announce_and_db_prefix(self) -> None:
        await self.listen((schema.CHANNEL_CLUSTER,))
        clock = task.Clock()
        c42 = Cluster(self.new_client(db=42), 42, node_id="web1-04242", reactor=clock)
        c4 = Cluster(self.new_client(db=4), 4, node_id="web2-00004", reactor=clock)
        seen_by_4: list[str] = []
        handle = c4.handle_announce

        def record(message: str) -> None:
            seen_by_4.append(message)
            handle(message)

        c4.handle_announce = record  # type: ignore[method-assign]
        c42.start()
        c4.start()
        self.addCleanup(c42.stop)
        self.addCleanup(c4.stop)
        await eventually(lambda: c4._subscription is not None and c4._subscription.subscribed)
        clock.advance(0.9)  # the first announce comes after one second
        await sleep(0.1)
        self.assertEqual(self.messages, [])
        clock.advance(0.1)
        await eventually(lambda: "HELLO42 web1-04242" in seen_by_4 and "HELLO4 web2-00004" in seen_by_4)
        self.assertIn((schema.CHANNEL_CLUSTER, "HELLO42 web1-04242"), self.messages)
        self.assertEqual(c4.node_ids, ["web2-00004"])  # HELLO42 does not match "HELLO4 "
        self.assertEqual(c42.node_ids, ["web1-04242"])
        clock.advance(1)  # and every second
        await eventually(lambda: seen_by_4.count("HELLO42 web1-04242") == 2)

    async def test_three_monitors_and_a_go_node(self) -> None:
        web = WebServer()
        self.addCleanup(web.stop)
        self.r.sadd(schema.FILES, "/f")
        self.r.hset(schema.file_key("/f"), "size", "1")
        for i in range(1, 7):
            web.answer(f"/m{i}/f", Answer(200))
            self.r.hset(schema.MIRRORS, str(i), f"m{i}")
            self.r.hset(schema.mirror_key(i), mapping={"ID": str(i), "name": f"m{i}", "enabled": "1",
                                                       "http": f"{web.base()}/m{i}/"})
            self.r.sadd(schema.handled_files_key(i), "/f")
        config = Config(Repository=tempfile.gettempdir(), ConcurrentSync=0)
        checks: list[tuple[str, int]] = []
        monitors: dict[str, Monitor] = {}
        for name in ("a-00001", "b-00002", "c-00003"):
            client = self.new_client()
            http = HttpClient(reactor, timeout=3)
            mon = Monitor(client, lambda: config, Cluster(client, 0, node_id=name), HealthChecker(http),
                          MirrorScanner(client, lambda: config, http), tick=0.2)
            mon.check_listeners.append(lambda mid, outs, n=name: checks.append((n, mid)))
            monitors[name] = mon
            self.addCleanup(lambda m=mon: defer.Deferred.fromCoroutine(m.stop()))
        await defer.gatherResults([m.start() for m in monitors.values()])
        await eventually(lambda: len(checks) >= 6, timeout=10)
        await sleep(0.5)
        self.assertEqual(sorted(checks), [("a-00001", 1), ("a-00001", 2), ("b-00002", 3),
                                          ("b-00002", 4), ("c-00003", 5), ("c-00003", 6)])
        # A Go node joins (another process publishing Go's announce) and node a dies.
        go = processes.spawn([sys.executable, str(Path(__file__).with_name("fake_go_node.py")),
                              self.server.address, "0", "bb-00009"])
        self.addCleanup(processes.kill, go)
        await defer.Deferred.fromCoroutine(monitors["a-00001"].stop())
        checks.clear()
        b, c = monitors["b-00002"], monitors["c-00003"]
        await eventually(lambda: {m for n, m in checks if n == "b-00002"} >= {1, 2}, timeout=10)
        await eventually(lambda: b.cluster.node_ids == ["b-00002", "bb-00009", "c-00003"], timeout=3)
        self.assertEqual(c.cluster.node_ids, b.cluster.node_ids)
        # Go's formula for 6 mirrors on 3 nodes: b {1,2}, the Go node {3,4}, c {5,6}.
        self.assertEqual({m for m in range(1, 7) if b.cluster.is_handled(m)}, {1, 2})
        self.assertEqual({m for m in range(1, 7) if c.cluster.is_handled(m)}, {5, 6})
        for mon in (b, c):
            for tracked in mon.mirrors.values():
                tracked.last_check = 0.0  # make everything due: only the node's share is checked
        checks.clear()
        await eventually(lambda: len(checks) >= 4, timeout=5)
        await sleep(0.6)
        self.assertEqual(sorted(checks), [("b-00002", 1), ("b-00002", 2), ("c-00003", 5), ("c-00003", 6)])
