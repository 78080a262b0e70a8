"""The observability listener: Prometheus ``/metrics``, ``/healthz`` and ``/readyz``.

Why a listener of its own (``MetricsListenAddress``, off by default): on the redirector's listener
every path is a repository path, so ``/metrics`` there would shadow a file and change an answer a Go
node gives.  Nothing listens when the key is empty, and nothing on the request path changes.

The metrics themselves are declared beside the code they measure (``prometheus_client`` metrics in
the library's default registry: one per process); this module only adds what belongs to the process
as a whole (build info, the reactor's lag) and serves the registry with the library's own Twisted
resource (:func:`prometheus_client.twisted.MetricsResource`, which answers OpenMetrics when the
scraper asks for it).  That resource collects in a thread of the reactor's pool, so collectors that
read the daemon's state (:class:`mirrorbits.cache.ViewCollector`) take snapshots and never iterate a
structure the reactor thread changes.

With ``Workers: N`` the parent's scrape shows the whole daemon: each worker process serves its own
registry on a Unix socket (:class:`WorkerMetricsServer`), and the parent's collector
(:class:`WorkerMetricsCollector`) reads them at scrape time and adds them with a ``worker`` label
(``worker="0"`` is the main process).  Only the per-process families are taken from workers (HTTP,
view, Redis, download counters, reactor, process): the mirror, scan and cluster state lives in the
main process, and a copy per worker would be counted N times.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.twisted import MetricsResource
from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.iweb import IRequest

import twisted
from mirrorbits import VERSION
from mirrorbits.deferutil import wait_at_most
from mirrorbits.endpoints import ConfiguredListener

if TYPE_CHECKING:
    from mirrorbits.app import Mirrorbits

__all__ = ["MetricsService", "Readiness", "WorkerMetricsCollector", "WorkerMetricsServer",
           "metrics_service", "registry_text", "worker_metrics_path"]

log = Logger(namespace="mirrorbits.metrics")

BUILD_INFO = Gauge("mirrorbits_build_info", "Always 1: the daemon's version and its runtime",
                   ["version", "python", "twisted"])
BUILD_INFO.labels(VERSION, platform.python_version(), twisted.__version__).set(1)

REACTOR_LAG = Histogram(
    "mirrorbits_reactor_lag_seconds",
    "How late a timer of the reactor fires (time the reactor thread was busy with something else)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))

#: How often the reactor's lag is sampled.
LAG_INTERVAL = 0.5
#: How long ``/readyz`` waits for Redis' PONG.
READY_PING_TIMEOUT = 1.0
#: How long the parent waits for one worker's metrics at scrape time.
WORKER_SCRAPE_TIMEOUT = 2.0
#: Families a worker process reports (the rest is the main process's state).
WORKER_FAMILIES = ("mirrorbits_http_", "mirrorbits_mirror_redirect", "mirrorbits_view_",
                   "mirrorbits_redis_", "mirrorbits_downloads_", "mirrorbits_reactor_", "process_",
                   "python_")


class Readiness:
    """What ``/readyz`` checks: Redis answers a PING now, and the in-memory view has warmed."""

    def __init__(self, app: Mirrorbits) -> None:
        self.app = app

    async def problem(self) -> str | None:
        """None when ready, else why not (one line of text)."""
        redis = self.app.get_redis()
        try:
            reply = await wait_at_most(
                defer.Deferred.fromCoroutine(redis.execute("PING", unblocked=True)),
                READY_PING_TIMEOUT, self.app.reactor, consume=True,
                message=f"Redis did not answer a PING within {READY_PING_TIMEOUT}s")
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return f"Redis is unreachable: {exc or exc.__class__.__name__}"
        if str(reply) != "PONG":
            return f"Redis answered {reply!r} to PING"
        if not redis.ready:
            return "the database schema check has not finished"
        if not self.app.get_cache().warmed:
            return "the in-memory view is not warm yet"
        return None


class HealthResource(resource.Resource):
    """``/healthz``: 200 whenever the reactor runs (it is the reactor that answers)."""

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:  # noqa: N802 - twisted.web's name
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"ok\n"


class ReadyResource(resource.Resource):
    """``/readyz``: 200 when :class:`Readiness` finds nothing wrong, else 503 with the reason."""

    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request: IRequest) -> int:  # noqa: N802 - twisted.web's name
        d = defer.Deferred.fromCoroutine(self.readiness.problem())

        def answer(problem: str | None) -> None:
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            if problem is not None:
                request.setResponseCode(503)
            request.write((problem or "ready").encode("utf-8") + b"\n")
            request.finish()

        d.addCallback(answer)
        d.addErrback(lambda f: log.failure("readiness check failed", f))
        not_done: int = server.NOT_DONE_YET
        return not_done


def registry_text(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in the OpenMetrics format (what a worker hands its parent: unlike the older text
    format, it keeps a counter's ``_created`` sample in the counter's family)."""
    return generate_latest(registry)


class WorkerMetricsServer(protocol.Protocol):
    """A worker's end: whoever connects to its metrics socket gets its registry, then EOF."""

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        assert self.transport is not None
        self.transport.write(registry_text())
        self.transport.loseConnection()


def read_worker_text(path: str, timeout: float = WORKER_SCRAPE_TIMEOUT) -> str:
    """A worker's exposition text, read from its Unix socket (blocking: runs in the scrape thread)."""
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode("utf-8")


def with_worker(metric: Metric, worker: str) -> Metric:
    """A copy of ``metric`` whose samples carry ``worker=<worker>``."""
    out = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    out.samples = [s._replace(labels={**s.labels, "worker": worker}) for s in metric.samples]
    return out


class WorkerMetricsCollector(Collector):
    """The parent's view of the whole daemon: its own families and its workers' per-process ones,
    every series labelled with the ``worker`` that reported it (0 = the main process)."""

    def __init__(self, own: CollectorRegistry, sockets: Callable[[], Sequence[tuple[int, str]]]) -> None:
        self.own = own
        self.sockets = sockets

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for metric in self.own.collect():
            families[metric.name] = with_worker(metric, "0")
        for index, path in self.sockets():
            try:
                text = read_worker_text(path)
            except OSError as exc:
                log.warn("Cannot read the metrics of HTTP worker {i}: {e}", i=index, e=exc)
                continue
            for metric in text_string_to_metric_families(text):
                if not metric.name.startswith(WORKER_FAMILIES):
                    continue
                labelled = with_worker(metric, str(index))
                mine = families.get(metric.name)
                if mine is None:
                    families[metric.name] = labelled
                else:
                    mine.samples.extend(labelled.samples)
        yield from families.values()


class ScrapeRegistry(CollectorRegistry):
    """A registry of one collector, for the parent of workers (see :class:`WorkerMetricsCollector`)."""

    def __init__(self, collector: Collector) -> None:
        super().__init__(auto_describe=False)
        self._collector = collector

    def collect(self) -> Iterable[Metric]:  # type: ignore[override]
        yield from self._collector.collect()


class MetricsService(service.Service):
    """Serves this process's metrics and samples the reactor's lag while it runs.

    In the main process it listens on ``MetricsListenAddress`` (read at start) with ``/metrics``,
    ``/healthz`` and ``/readyz``; in an HTTP worker (``worker_socket``) it serves its registry to
    its parent on a Unix socket instead.  ``collectors`` (which read the state of this process's
    parts) are in the default registry while the service runs.
    """

    name = "metrics"

    def __init__(self, app: Mirrorbits, collectors: Sequence[Collector], *, address: str = "",
                 worker_socket: str | None = None,
                 worker_sockets: Callable[[], Sequence[tuple[int, str]]] | None = None) -> None:
        self.app = app
        self.collectors = collectors
        self.address = address
        self.worker_socket = worker_socket
        self.worker_sockets = worker_sockets
        self._listener: ConfiguredListener | None = None
        self._lag: task.LoopingCall | None = None
        self._expected = 0.0

    def root(self) -> resource.Resource:
        root = resource.Resource()
        registry: CollectorRegistry = REGISTRY
        if self.worker_sockets is not None:
            registry = ScrapeRegistry(WorkerMetricsCollector(REGISTRY, self.worker_sockets))
        root.putChild(b"metrics", MetricsResource(registry))
        root.putChild(b"healthz", HealthResource())
        root.putChild(b"readyz", ReadyResource(Readiness(self.app)))
        return root

    def _listener_for(self) -> ConfiguredListener:
        if self.worker_socket is not None:
            # A worker that died left its socket behind; its successor takes the same path.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.worker_socket)
            return ConfiguredListener("metrics socket", "unix:" + self.worker_socket,
                                      protocol.Factory.forProtocol(WorkerMetricsServer), self.app.reactor)
        site = server.Site(self.root())
        site.noisy = False
        # Like the admin channel: an address that cannot be bound at start stops the daemon.
        return ConfiguredListener("MetricsListenAddress", self.address, site, self.app.reactor,
                                  self.app.fatal)

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        for collector in self.collectors:
            REGISTRY.register(collector)
        if self._listener is None:  # one listener, started again after a failed upgrade
            self._listener = self._listener_for()
        self._listener.startService()
        if self.worker_socket is None:
            log.info("Metrics, /healthz and /readyz on {address}", address=self.address)
        self._lag = task.LoopingCall(self._sample_lag)
        self._lag.clock = self.app.reactor
        self._expected = self.app.reactor.seconds() + LAG_INTERVAL
        self._lag.start(LAG_INTERVAL, now=False)

    def _sample_lag(self) -> None:
        now = self.app.reactor.seconds()
        REACTOR_LAG.observe(max(0.0, now - self._expected))
        self._expected = now + LAG_INTERVAL

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802 - Twisted's name
        super().stopService()
        if self._lag is not None and self._lag.running:
            self._lag.stop()
        for collector in self.collectors:
            REGISTRY.unregister(collector)
        if self._listener is None or not self._listener.running:
            return None
        return self._listener.stopService()


def metrics_service(app: Mirrorbits, collectors: Sequence[Collector]) -> MetricsService | None:
    """This process's metrics service: in the main process None when ``MetricsListenAddress`` is
    empty; in a worker None when its parent gave it no metrics socket."""
    if app.worker is not None:
        if app.worker.metrics_socket is None:
            return None
        return MetricsService(app, collectors, worker_socket=app.worker.metrics_socket)
    address = app.config.MetricsListenAddress
    if not address:
        return None
    sockets = app.get_redirector().worker_metrics_sockets if app.config.Workers > 1 else None
    return MetricsService(app, collectors, address=address, worker_sockets=sockets)


def worker_metrics_path(directory: str, index: int) -> str:
    """Where worker ``index`` serves its registry to its parent."""
    return os.path.join(directory, f"worker-{index}.sock")
