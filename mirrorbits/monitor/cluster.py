"""Node discovery and the split of the mirrors between the nodes of a cluster.

Go and Python nodes share one Redis and must agree, without talking to each other, on which node
checks and scans which mirror.  Everything that decides it is fixed by the Go original and kept here
byte for byte: the announce text ``HELLO<db> <node>`` every second on ``_mirrorbits_cluster``, the
expiry after more than 5 s of silence (evaluated only when a message arrives, in whole Unix
seconds), the byte-wise ordering of node ids and the float32 range formula.
"""

from __future__ import annotations

import bisect
import random
import socket
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mirrorbits.gocompat import f32
from mirrorbits.reactor import default_reactor
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, RedisUnavailable, ResponseError, Subscription

log = Logger(namespace="mirrorbits.cluster")

#: Seconds between two announces.
ANNOUNCE_INTERVAL = 1.0
#: A node is gone when ``last + NODE_TIMEOUT < now`` (whole Unix seconds).
NODE_TIMEOUT = 5


def make_node_id(hostname: str | None = None, rng: random.Random | None = None) -> str:
    """``<hostname>-<NNNNN>`` with NNNNN in [0, 32000), zero-padded; ``unknown`` for no hostname."""
    host = socket.gethostname() if hostname is None else hostname
    n = (rng or random.SystemRandom()).randrange(32000)
    return f"{host or 'unknown'}-{n:05d}"


_f32 = f32


def per_node(mirror_count: int, node_total: int) -> int:
    """``int(float32(len)/float32(nodeTotal) + 0.5)``, with every step rounded to float32 as Go does."""
    if node_total <= 0:
        return mirror_count
    return int(_f32(_f32(_f32(float(mirror_count)) / _f32(float(node_total))) + _f32(0.5)))


def is_handled(index: list[int], mirror_id: int, node_index: int, node_total: int) -> bool:
    """Whether the node at ``node_index`` of ``node_total`` handles ``mirror_id`` (Go ``IsHandled``).

    ``index`` is the sorted list of every known mirror id; the position of a mirror is its binary
    search insertion point, as Go's ``sort.SearchInts``.
    """
    i = bisect.bisect_left(index, mirror_id)
    r = per_node(len(index), node_total)
    start = r * node_index
    return i >= start and (i < start + r or node_index == node_total - 1)


class Cluster:
    """This node's view of the cluster: who else announces, and which mirrors are ours.

    ``clock`` gives the wall time (Unix seconds, float) used for expiry; ``reactor`` drives the
    announce loop.  Both are injectable for tests.
    """

    def __init__(self, redis: RedisClient, redis_db: int, *, node_id: str | None = None,
                 reactor: IReactorTime | None = None, clock: Callable[[], float] | None = None,
                 announce_interval: float = ANNOUNCE_INTERVAL) -> None:
        if reactor is None:
            reactor = default_reactor()
        self.redis = redis
        self.reactor = reactor
        #: The DB number read at start-up: part of the announce prefix, never changed by a reload.
        self.redis_db = redis_db
        self.node_id = node_id or make_node_id()
        self._clock = clock or reactor.seconds
        self.announce_interval = announce_interval
        self._prefix = f"HELLO{redis_db} "
        #: node id -> Unix seconds of its last announce.
        self.nodes: dict[str, int] = {self.node_id: int(self._clock())}
        self.node_ids: list[str] = [self.node_id]
        self.node_index = 0
        self.node_total = 1
        self.mirrors_index: list[int] = []
        self._loop: task.LoopingCall | None = None
        self._subscription: Subscription | None = None
        self.running = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``_mirrorbits_cluster`` and announce every second (first after one second)."""
        if self.running:
            return
        self.running = True
        self._subscription = self.redis.subscribe([schema.CHANNEL_CLUSTER], self._on_message)
        self._loop = task.LoopingCall(self._announce)
        self._loop.clock = self.reactor
        d = self._loop.start(self.announce_interval, now=False)
        d.addErrback(lambda f: log.failure("cluster announce loop died", f))

    def stop(self) -> None:
        self.running = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._subscription is not None:
            self._subscription.stop()
            self._subscription = None

    async def _announce(self) -> None:
        try:
            await self.redis.publish(schema.CHANNEL_CLUSTER,
                                     schema.cluster_hello(self.redis_db, self.node_id))
        except (RedisUnavailable, ResponseError) as e:
            log.debug("Cluster announce failed: {err}", err=e)

    # -- membership ----------------------------------------------------------------------------

    def _on_message(self, channel: str, message: str) -> None:
        if channel == schema.CHANNEL_CLUSTER:
            self.handle_announce(message)

    def handle_announce(self, message: str) -> None:
        """Process one message of ``_mirrorbits_cluster`` (ours included), exactly as Go does."""
        if not message.startswith(self._prefix):
            return
        sender = message[len(self._prefix):]
        now = int(self._clock())
        for node, last in list(self.nodes.items()):
            if node in (sender, self.node_id):
                continue
            if last + NODE_TIMEOUT < now:
                del self.nodes[node]
                log.info("<- Node {node} left the cluster", node=node)
        if sender not in self.nodes and sender != self.node_id:
            log.info("-> Node {node} joined the cluster", node=sender)
        self.nodes[sender] = now
        self._sort()

    def _sort(self) -> None:
        # Go's sort.Strings: byte-wise order of the UTF-8 encodings.
        self.node_ids = sorted(self.nodes, key=lambda n: n.encode("utf-8", "surrogateescape"))
        self.node_total = len(self.node_ids)
        self.node_index = self.node_ids.index(self.node_id) if self.node_id in self.nodes else 0

    # -- mirrors -------------------------------------------------------------------------------

    def add_mirror(self, mirror_id: int) -> None:
        i = bisect.bisect_left(self.mirrors_index, mirror_id)
        if i == len(self.mirrors_index) or self.mirrors_index[i] != mirror_id:
            self.mirrors_index.insert(i, mirror_id)

    def remove_mirror(self, mirror_id: int) -> None:
        i = bisect.bisect_left(self.mirrors_index, mirror_id)
        if i < len(self.mirrors_index) and self.mirrors_index[i] == mirror_id:
            del self.mirrors_index[i]

    def is_handled(self, mirror_id: int) -> bool:
        """Whether this node checks and scans ``mirror_id`` right now."""
        return is_handled(self.mirrors_index, mirror_id, self.node_index, self.node_total)


class ClusterCollector(Collector):
    """The cluster as this node sees it, read at scrape time (copies first: a scrape runs in a
    thread of its own)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def collect(self) -> Iterator[Metric]:
        cluster = self.cluster
        index = list(cluster.mirrors_index)
        node_index, node_total = cluster.node_index, cluster.node_total
        yield GaugeMetricFamily("mirrorbits_cluster_nodes", "Nodes (this one included) that announced "
                                "themselves recently on the shared Redis", value=node_total)
        yield GaugeMetricFamily("mirrorbits_cluster_mirrors_owned", "Mirrors this node checks and "
                                "scans (its share of the cluster's)",
                                value=sum(1 for m in index if is_handled(index, m, node_index, node_total)))
