"""The redirector's service and its extra HTTP worker processes (config key ``Workers``).

Why processes: one CPython process tops out at one core.  With ``Workers: N`` (N > 1) the daemon
spawns N-1 worker processes that adopt the *same* listening socket (an inherited file descriptor,
``reactor.adoptStreamPort``), so the kernel spreads connections over N processes.  Each worker has
its own Redis connection, in-memory view and pub/sub subscriber (so every view is kept current on
its own), and its own download counters, which the stats part flushes to Redis additively
(``HINCRBY``), so totals from all workers add up.

The main process keeps everything else (monitor, scans, RPC) and serves HTTP too.  How the socket
is bound is not decided here: :func:`spawn_workers` takes an already-bound listening socket's fd,
whoever bound it (the normal listener, or an inherited socket of a seamless upgrade).

A worker exits when its parent goes away (its stdin pipe closes) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger

__all__ = ["RedirectorService", "WorkerProcess", "fair_accept", "main", "spawn_workers"]

log = Logger(namespace="mirrorbits.workers")

#: The fd number under which a worker receives the listening socket.
LISTEN_FD = 3
#: Longest wait for the view's warm-up before a new worker starts accepting connections.
WARM_WAIT = 30.0


def fair_accept(port: Any) -> Any:
    """Make a listening port accept one connection per wake-up.

    Twisted accepts up to 100+ connections per readable event; with several processes on one
    socket the first one awake would take a whole burst (a load balancer's or wrk's 64
    connections) and keep them.  One accept per wake-up spreads them.
    """
    cls = port.__class__
    if getattr(cls, "_mirrorbits_fair", False):
        return port

    fair = type("Fair" + cls.__name__, (cls,), {
        "_mirrorbits_fair": True,
        "numberAccepts": property(lambda self: 1, lambda self, value: None),
    })
    port.__class__ = fair
    return port


class WorkerProcess(protocol.ProcessProtocol):
    """The parent's side of one worker: keeps its stdin open (closing it stops the worker)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        code = getattr(reason.value, "exitCode", None)
        log.info("HTTP worker {i} exited ({code})", i=self.index, code=code)
        if not self.ended.called:
            self.ended.callback(None)


def spawn_workers(reactor: Any, listen_fd: int, count: int, *, config_path: str | None,
                  redis_address: str, extra_args: tuple[str, ...] = ()) -> list[WorkerProcess]:
    """Start ``count`` worker processes that serve HTTP on the already-bound ``listen_fd``."""
    family = socket.socket(fileno=os.dup(listen_fd))
    fam_name = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}[family.family]
    family.detach()
    workers = []
    for i in range(1, count + 1):
        args = [sys.executable, "-m", "mirrorbits.web.workers", "--fd", str(LISTEN_FD),
                "--family", fam_name, "--redis", redis_address, "--index", str(i), *extra_args]
        if config_path:
            args += ["--config", config_path]
        proto = WorkerProcess(i)
        reactor.spawnProcess(proto, sys.executable, args, env=os.environ.copy(),
                             childFDs={0: "w", 1: 1, 2: 2, LISTEN_FD: listen_fd})
        workers.append(proto)
    return workers


class RedirectorService(service.Service):
    """Starts the redirector's parts: GeoIP update checks, the cache view and, in the main
    process with ``Workers`` > 1, the extra worker processes once the HTTP port listens."""

    name = "redirector"
    #: Freeze the warm view out of the cyclic GC's full collections (see cache.freeze_long_lived).
    freeze_gc = True

    def __init__(self, app: Any, *, spawn: bool = True) -> None:
        self.app = app
        self.spawn = spawn
        self.workers: list[WorkerProcess] = []
        self._geo_service: Any = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        from mirrorbits.geo import GeoIPService

        geoip = self.app.get_geoip()
        geoip.startup_report(bool(self.app.config.Fallbacks))
        self._geo_service = GeoIPService(geoip, clock=self.app.reactor)
        self._geo_service.startService()
        self.app.config_holder.subscribe(self._config_changed)
        cache = self.app.get_cache()
        cache.freeze_gc = self.freeze_gc
        cache.start()
        if self.spawn and self.app.config.Workers > 1:
            self.app.reactor.callLater(0, self._start_workers)

    def _config_changed(self, old: Any, new: Any) -> None:
        geoip = self.app.get_geoip()
        if not geoip.set_directory(new.GeoipDatabasePath):
            geoip.reload()

    def _start_workers(self) -> None:
        http = None
        if self.parent is not None:
            try:
                http = self.parent.getServiceNamed("http")
            except KeyError:
                http = None
        # StreamServerEndpointService keeps the listening port's Deferred here.
        waiting = getattr(http, "_waitingForPort", None)
        if waiting is None:
            log.error("Workers: no HTTP listener to share; serving from the main process only")
            return

        def listening(port: Any) -> Any:
            fair_accept(port)
            count = self.app.config.Workers - 1
            self.workers = spawn_workers(
                self.app.reactor, port.fileno(), count, config_path=self.app.config_holder.path,
                redis_address=self.app.redis_settings().address)
            log.info("Started {n} extra HTTP worker processes", n=count)
            return port

        waiting.addCallback(listening)

    def stopService(self) -> defer.Deferred[Any]:  # noqa: N802
        super().stopService()
        if self._geo_service is not None:
            self._geo_service.stopService()
        self.app.get_cache().stop()
        ends = []
        for w in self.workers:
            if w.transport is not None and not w.ended.called:
                try:
                    w.transport.signalProcess("TERM")
                except Exception:  # noqa: BLE001 - already gone
                    pass
                ends.append(w.ended)
        self.workers = []
        return defer.DeferredList(ends)


# -------------------------------------------------------------------------------------------------
# The worker process


class _ParentWatch(protocol.Protocol):
    """Stops the worker when the parent's end of stdin closes (the parent died or stopped)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.reactor.running:
            self.reactor.stop()


async def _open_gate(redis: Any, reactor: Any) -> None:
    """The main process runs the schema check/upgrade; a worker waits until the version is ours."""
    from twisted.internet import task

    from mirrorbits.redis import schema

    while True:
        try:
            version = await redis.execute("GET", schema.DB_VERSION_KEY, unblocked=True)
            if version is not None and str(version) == str(schema.DB_VERSION):
                redis.set_ready()
                return
        except Exception as exc:  # noqa: BLE001 - Redis not there yet
            log.debug("worker: waiting for Redis: {e}", e=exc)
        await task.deferLater(reactor, 0.5, lambda: None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of one worker process (``python -m mirrorbits.web.workers``)."""
    parser = argparse.ArgumentParser(prog="mirrorbits-worker")
    parser.add_argument("--fd", type=int, default=LISTEN_FD)
    parser.add_argument("--family", choices=("inet", "inet6", "unix"), default="inet")
    parser.add_argument("--config")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--index", type=int, default=1)
    opts = parser.parse_args(argv)

    from dataclasses import replace

    from twisted.internet import reactor, stdio
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from mirrorbits.app import Mirrorbits
    from mirrorbits.config import ConfigHolder, load_config
    from mirrorbits.redis.connection import RedisSettings
    from mirrorbits.web.site import make_site

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    holder = ConfigHolder(load_config(opts.config), opts.config) if opts.config else None
    if holder is None:
        from mirrorbits.config import Config

        holder = ConfigHolder(Config(Repository="/"))
    app = Mirrorbits(holder, reactor, monitor=False)
    base = RedisSettings.from_config(holder.current)
    app.redis_settings = lambda: replace(base, address=opts.redis, sentinels=())  # type: ignore[method-assign]
    redis = app.get_redis()
    redis.start()

    parts = [RedirectorService(app, spawn=False)]
    worker_services = getattr(app, "worker_services", None)  # e.g. the download counters
    if worker_services is not None:
        parts += list(worker_services())
    for part in parts:
        part.startService()

    family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}[opts.family]
    ports: list[Any] = []

    async def ready_then_listen() -> None:
        # Accept connections only once this worker can answer as well as the main process:
        # Redis gate open and the view warmed (bounded wait); until then the others serve.
        await _open_gate(redis, reactor)
        warm = app.get_cache().warm()
        timeout = reactor.callLater(WARM_WAIT, warm.cancel)  # type: ignore[attr-defined]
        try:
            await warm
        except defer.CancelledError:
            pass
        finally:
            if timeout.active():
                timeout.cancel()
        port = reactor.adoptStreamPort(opts.fd, family, make_site(app))  # type: ignore[attr-defined]
        os.close(opts.fd)  # adoptStreamPort dup()ed it
        fair_accept(port)
        ports.append(port)
        log.info("HTTP worker {i} serving", i=opts.index)

    d = defer.Deferred.fromCoroutine(ready_then_listen())
    d.addErrback(lambda f: log.failure("worker start-up", f))
    stdio.StandardIO(_ParentWatch(reactor))

    def shutdown() -> defer.Deferred[Any]:
        for port in ports:
            port.stopListening()
        ds = [defer.maybeDeferred(p.stopService) for p in reversed(parts)]
        ds.append(defer.Deferred.fromCoroutine(redis.stop()))
        return defer.DeferredList(ds)

    reactor.addSystemEventTrigger("before", "shutdown", shutdown)  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
