"""The redirector's service and its extra HTTP worker processes (config key ``Workers``).

Why processes: one CPython process tops out at one core.  With ``Workers: N`` (N > 1) the daemon
spawns N-1 worker processes that adopt the *same* listening socket (an inherited file descriptor,
adopted with :func:`~mirrorbits.lifecycle.listener.adopt_listening_socket`, which never
``shutdown()``s it for the others), so the kernel spreads connections over N processes.  Each worker
has its own Redis connection, in-memory view and pub/sub subscriber (so every view is kept current
on its own), and its own download counters, which the stats part flushes to Redis additively
(``HINCRBY``), so totals from all workers add up.

The main process keeps everything else (monitor, scans, RPC) and serves HTTP too.  How the socket
is bound is not decided here: :func:`spawn_workers` takes an already-bound listening socket's fd,
whoever bound it (the normal listener, or an inherited socket of a seamless upgrade).

Lifecycle of a worker:

* it accepts only once it can answer as well as the main process (Redis gate open, view warm);
* SIGHUP/SIGUSR1 of the main process are forwarded (reload config and GeoIP / reopen logs);
* SIGTERM (or SIGQUIT): stop accepting, serve what waits in the accept queue, drain the open
  connections, flush its own download counters, close Redis, exit 0.  On the daemon's final stop
  the workers stop *before* the main process closes the socket, so the last process holding the
  socket serves its accept queue instead of resetting it;
* it stops the same graceful way when its parent goes away (its stdin pipe closes), and exits
  hard if a stop ever takes longer than :data:`WORKER_STOP_DEADLINE`: no orphan workers;
* a worker that dies while the daemon runs is started again (after a short, growing delay).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.internet import main as twisted_main
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from mirrorbits.deferutil import wait_at_most

__all__ = ["RedirectorService", "WorkerProcess", "main", "spawn_workers"]

log = Logger(namespace="mirrorbits.workers")

#: The fd number under which a worker receives the listening socket.
LISTEN_FD = 3
#: The worker writes a line on this pipe once its signal handlers are in place.
READY_FD = 4
#: Longest wait for the view's warm-up before a new worker starts accepting connections.
WARM_WAIT = 30.0
#: A worker's bound on answering in-flight requests when it stops (as the main listener's).
DRAIN_TIMEOUT = 5.0
#: How long an idle keep-alive connection may still send one last request while a worker stops.
IDLE_GRACE = 1.0
#: A worker's own hard bound on its whole stop (drain, final flush, Redis close).
WORKER_STOP_DEADLINE = 15.0
#: The parent kills a worker that has not exited this long after SIGTERM.
WORKER_KILL_AFTER = 20.0
#: Delay before a worker that died is started again; doubled (up to the max) while they die young.
RESPAWN_DELAY = 1.0
RESPAWN_DELAY_MAX = 30.0
#: A worker that ran at least this long counts as healthy: the respawn delay starts over.
HEALTHY_RUN = 10.0


class WorkerProcess(protocol.ProcessProtocol):
    """The parent's side of one worker: keeps its stdin open (closing it stops the worker).

    Signals for the worker (:meth:`signal`) wait until it says its handlers are installed: until
    then SIGHUP's default action would kill it (its config is read fresh anyway).
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid: int | None = None
        self.started = time.monotonic()
        self.ready = False
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self._kill_call: Any = None
        self._pending: list[str] = []

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.pid = getattr(self.transport, "pid", None)

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802
        if fd == READY_FD and not self.ready:
            self.ready = True
            pending, self._pending = self._pending, []
            for name in pending:
                self._send(name)

    def processEnded(self, reason: Any) -> None:  # noqa: N802
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        log.info("HTTP worker {i} (pid {pid}) exited ({code})", i=self.index, pid=self.pid,
                 code=code if sig is None else f"signal {sig}")
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        if not self.ended.called:
            self.ended.callback(code if sig is None else -sig)

    @property
    def alive(self) -> bool:
        return not self.ended.called

    def signal(self, name: str) -> bool:
        """Send ``name`` ("TERM", "HUP"...) now, or once the worker is ready (TERM and KILL are
        sent at once: their default action is what we want then); False when it is gone."""
        if self.transport is None or not self.alive:
            return False
        if not self.ready and name not in ("TERM", "KILL"):
            if name not in self._pending:
                self._pending.append(name)
            return True
        return self._send(name)

    def _send(self, name: str) -> bool:
        if self.transport is None:
            return False
        try:
            self.transport.signalProcess(name)
            return True
        except (error.ProcessExitedAlready, OSError):
            return False

    def terminate(self, reactor: Any, kill_after: float = WORKER_KILL_AFTER) -> defer.Deferred[Any]:
        """SIGTERM (graceful stop), SIGKILL if still there after ``kill_after`` s; fires on exit."""
        d: defer.Deferred[Any] = defer.Deferred()

        def relay(result: Any) -> Any:
            d.callback(None)
            return result

        self.ended.addBoth(relay)
        # Once only: a second SIGTERM would reach a reactor that is stopping already.
        if self._kill_call is None and self.signal("TERM"):
            self._kill_call = reactor.callLater(kill_after, self._kill, kill_after)
        return d

    def _kill(self, after: float) -> None:
        log.error("HTTP worker {i} (pid {pid}) still running {t}s after SIGTERM: killing it",
                  i=self.index, pid=self.pid, t=after)
        self.signal("KILL")


def spawn_workers(reactor: Any, listen_fd: int, count: int, *, config_path: str | None,
                  redis_address: str, extra_args: tuple[str, ...] = (),
                  indexes: Sequence[int] | None = None) -> list[WorkerProcess]:
    """Start ``count`` worker processes that serve HTTP on the already-bound ``listen_fd``
    (numbered ``indexes``, by default 1..count)."""
    family = socket.socket(fileno=os.dup(listen_fd))
    fam_name = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}[family.family]
    family.close()
    workers = []
    for i in indexes if indexes is not None else range(1, count + 1):
        args = [sys.executable, "-m", "mirrorbits.web.workers", "--fd", str(LISTEN_FD),
                "--family", fam_name, "--redis", redis_address, "--index", str(i),
                "--ready-fd", str(READY_FD), *extra_args]
        if config_path:
            args += ["--config", config_path]
        proto = WorkerProcess(i)
        reactor.spawnProcess(proto, sys.executable, args, env=os.environ.copy(),
                             childFDs={0: "w", 1: 1, 2: 2, LISTEN_FD: listen_fd, READY_FD: "r"})
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
        self._http: Any = None
        self._stopping = False
        self._respawns: dict[int, Any] = {}
        self._respawn_delay: dict[int, float] = {}

    def startService(self) -> None:  # noqa: N802
        super().startService()
        from mirrorbits.geo import GeoIPService

        self._stopping = False
        geoip = self.app.get_geoip()
        geoip.startup_report(bool(self.app.config.Fallbacks))
        self._geo_service = GeoIPService(geoip, clock=self.app.reactor)
        self._geo_service.startService()
        self.app.config_holder.subscribe(self._config_changed)
        cache = self.app.get_cache()
        cache.freeze_gc = self.freeze_gc
        cache.start()
        if self.spawn and self.app.config.Workers > 1:
            from mirrorbits.lifecycle import get_lifecycle

            lifecycle = get_lifecycle(self.app)
            if lifecycle is not None and hasattr(lifecycle, "forward_signals"):
                lifecycle.forward_signals(self.forward_signal)
            self.app.reactor.callLater(0, self._start_workers)

    def _config_changed(self, old: Any, new: Any) -> None:
        geoip = self.app.get_geoip()
        if not geoip.set_directory(new.GeoipDatabasePath):
            geoip.reload()

    # -- the worker processes (main process only) -------------------------------------------------

    def _start_workers(self) -> None:
        http: Any = None
        if self.parent is not None:
            try:
                http = self.parent.getServiceNamed("http")
            except KeyError:
                http = None
        # HTTPListener (and StreamServerEndpointService) keep the listening port's Deferred here.
        waiting = getattr(http, "_waitingForPort", None)
        if waiting is None or self._stopping:
            if waiting is None:
                log.error("Workers: no HTTP listener to share; serving from the main process only")
            return
        self._http = http
        if hasattr(http, "add_sharer"):
            http.add_sharer(self.stop_workers)
        if hasattr(http, "on_rebind"):
            http.on_rebind(self._rebound)

        def listening(port: Any) -> Any:
            if self._stopping:
                return port
            count = self.app.config.Workers - 1
            self.workers = self._spawn(self._listen_fd(port), range(1, count + 1))
            log.info("Started {n} extra HTTP worker processes", n=count)
            return port

        waiting.addCallback(listening)

    def _listen_fd(self, port: Any) -> int:
        fd = self._http.listening_fd() if hasattr(self._http, "listening_fd") else None
        return fd if fd is not None else port.fileno()

    def _spawn(self, fd: int, indexes: Sequence[int]) -> list[WorkerProcess]:
        workers = spawn_workers(self.app.reactor, fd, len(indexes),
                                config_path=self.app.config_holder.path,
                                redis_address=self.app.redis_settings().address, indexes=indexes)
        for w in workers:
            w.ended.addCallback(self._worker_ended, w)
        return workers

    def _worker_ended(self, status: int | None, worker: WorkerProcess) -> int | None:
        """A worker that died on its own (not stopped by us) is started again."""
        if self._stopping or not self.running or worker not in self.workers:
            return status
        ran = time.monotonic() - worker.started
        delay = self._respawn_delay.get(worker.index, RESPAWN_DELAY)
        delay = RESPAWN_DELAY if ran >= HEALTHY_RUN else min(RESPAWN_DELAY_MAX, delay)
        self._respawn_delay[worker.index] = min(RESPAWN_DELAY_MAX, delay * 2)
        log.error("HTTP worker {i} died ({status}); starting it again in {d}s", i=worker.index,
                  status=status, d=delay)
        self._respawns[worker.index] = self.app.reactor.callLater(delay, self._respawn, worker)
        return status

    def _respawn(self, dead: WorkerProcess) -> None:
        self._respawns.pop(dead.index, None)
        if self._stopping or not self.running or dead not in self.workers:
            return
        fd = self._http.listening_fd() if self._http is not None else None
        if fd is None:
            log.error("HTTP worker {i}: no listening socket to share any more", i=dead.index)
            return
        (new,) = self._spawn(fd, [dead.index])
        self.workers = [new if w is dead else w for w in self.workers]

    def _rebound(self, port: Any) -> None:
        """``ListenAddress`` changed: new workers on the new socket, the old ones stop gracefully."""
        if self._stopping or not self.workers:
            return
        old = self.workers
        self.workers = self._spawn(self._listen_fd(port), [w.index for w in old])
        for w in old:
            w.terminate(self.app.reactor)

    def forward_signal(self, signum: int) -> None:
        """Pass SIGHUP (reload) / SIGUSR1 (reopen logs) on to the workers."""
        name = signal.Signals(signum).name[3:]
        for w in self.workers:
            w.signal(name)

    def stop_workers(self) -> defer.Deferred[Any]:
        """Stop every worker gracefully (SIGTERM; SIGKILL after :data:`WORKER_KILL_AFTER` s); fires
        once all have exited.  Safe to call more than once."""
        self._stopping = True
        for call in self._respawns.values():
            if call.active():
                call.cancel()
        self._respawns.clear()
        return defer.DeferredList([w.terminate(self.app.reactor) for w in self.workers if w.alive])

    def stopService(self) -> defer.Deferred[Any]:  # noqa: N802
        super().stopService()
        if self._geo_service is not None:
            self._geo_service.stopService()
        self.app.get_cache().stop()
        d = self.stop_workers()
        self.workers = []
        return d


# -------------------------------------------------------------------------------------------------
# The worker process


@implementer(IReadDescriptor)
class _ParentWatch:
    """Reads the worker's stdin, a pipe only the parent holds open: end of file = parent gone."""

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self.fd = fd
        self.gone = gone
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> Any:  # noqa: N802 - Twisted's name
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        return None if data else twisted_main.CONNECTION_DONE

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        self.gone()

    def logPrefix(self) -> str:  # noqa: N802
        return "parent-watch"


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


class _Worker:
    """One worker process: serve once ready, reload on HUP, stop gracefully on TERM/QUIT/orphaning."""

    def __init__(self, app: Any, redis: Any, parts: list[Any], fd: int, index: int,
                 ready_fd: int | None = None) -> None:
        from mirrorbits.lifecycle.signals import SignalHandlers

        self.app = app
        self.reactor = app.reactor
        self.redis = redis
        self.parts = parts
        self.fd = fd
        self.index = index
        self.ready_fd = ready_fd
        self.stopping = False
        self.exit_code = 0
        self.tracker: Any = None
        self._listening: Any = None
        self._signals = SignalHandlers(self.reactor)

    def start(self) -> None:
        for part in self.parts:
            part.startService()
        self._signals.install({
            signal.SIGHUP: self.reload,
            signal.SIGUSR1: self.reopen_logs,
            signal.SIGUSR2: lambda: log.warn("HTTP worker {i}: SIGUSR2 ignored; send it to the main "
                                             "process", i=self.index),
            signal.SIGQUIT: self._stop_reactor,
        })
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, b"ready\n")
                os.close(self.ready_fd)
            except OSError as e:
                log.warn("HTTP worker {i}: cannot tell the parent it is ready: {e}", i=self.index, e=e)
        self.reactor.addReader(_ParentWatch(0, self._parent_gone))
        d = defer.Deferred.fromCoroutine(self._ready_then_listen())
        d.addErrback(lambda f: log.failure("HTTP worker {i} start-up", f, i=self.index))

    async def _ready_then_listen(self) -> None:
        """Accept connections only once this worker can answer as well as the main process:
        Redis gate open and the view warmed (bounded wait); until then the others serve."""
        from mirrorbits.lifecycle.listener import (
            ConnectionTracker,
            _Listening,
            adopt_listening_socket,
            socket_from_fd,
        )
        from mirrorbits.web.site import make_site

        await _open_gate(self.redis, self.reactor)
        # After WARM_WAIT the worker serves anyway; the warm-up goes on meanwhile, as in the main
        # process.
        with suppress(defer.TimeoutError):
            await wait_at_most(self.app.get_cache().warm(), WARM_WAIT, self.reactor)
        if self.stopping:
            return
        sock = socket_from_fd(self.fd)
        site = make_site(self.app)
        self.tracker = ConnectionTracker(site, self.reactor)
        port = adopt_listening_socket(self.reactor, sock.fileno(), sock.family, self.tracker)
        self._listening = _Listening(sock, port, None)
        log.info("HTTP worker {i} serving", i=self.index)

    def reload(self) -> None:
        """SIGHUP (forwarded by the main process): config, GeoIP, then the logs, as the main one."""
        self.app.config_holder.reload()
        try:
            self.app.get_geoip().reload()
        except Exception:
            log.failure("HTTP worker {i}: reloading GeoIP failed", i=self.index)
        self.reopen_logs()

    def reopen_logs(self) -> None:
        try:
            self.app.get_download_log().reopen()
        except Exception:
            log.failure("HTTP worker {i}: re-opening downloads.log failed", i=self.index)

    def _parent_gone(self) -> None:
        if not self.stopping:
            log.warn("HTTP worker {i}: parent is gone; stopping", i=self.index)
            self._stop_reactor()

    def _stop_reactor(self) -> None:
        try:
            self.reactor.stop()
        except error.ReactorNotRunning:
            pass

    def stop(self) -> defer.Deferred[None]:
        """The reactor's before-shutdown trigger: the graceful stop, in order."""
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.stopping = True
        # Whatever happens below, this process must not outlive its stop for long.
        deadline = self.reactor.callLater(WORKER_STOP_DEADLINE, self._hard_exit)
        try:
            if self._listening is not None:
                # Serve the connections already queued on the shared socket rather than leaving
                # them to others: if we hold the last fd, closing would reset them.
                await self._listening.close(unlink=False, last=True)
                self._listening = None
            if self.tracker is not None:
                await self.tracker.drain(DRAIN_TIMEOUT, IDLE_GRACE)
            # One after the other: the counters flush (stats part) while Redis is still open.
            for part in reversed(self.parts):
                try:
                    await defer.maybeDeferred(part.stopService)
                except Exception:
                    log.failure("HTTP worker {i}: stopping {p} failed", i=self.index, p=part)
            await defer.Deferred.fromCoroutine(self.redis.stop())
        finally:
            if deadline.active():
                deadline.cancel()
        served = self.tracker.accepted if self.tracker is not None else 0
        log.info("HTTP worker {i} (pid {pid}) stopped after {n} connection(s)", i=self.index,
                 pid=os.getpid(), n=served)

    def _hard_exit(self) -> None:
        log.error("HTTP worker {i}: stop took more than {t}s; exiting now", i=self.index,
                  t=WORKER_STOP_DEADLINE)
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point of one worker process (``python -m mirrorbits.web.workers``)."""
    parser = argparse.ArgumentParser(prog="mirrorbits-worker")
    parser.add_argument("--fd", type=int, default=LISTEN_FD)
    parser.add_argument("--family", choices=("inet", "inet6", "unix"), default="inet",
                        help="ignored: read from the socket itself")
    parser.add_argument("--config")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--ready-fd", type=int, default=None)
    opts = parser.parse_args(argv)

    from dataclasses import replace

    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from mirrorbits.app import Mirrorbits
    from mirrorbits.config import ConfigHolder, load_config
    from mirrorbits.redis.connection import RedisSettings

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    holder = ConfigHolder(load_config(opts.config), opts.config) if opts.config else None
    if holder is None:
        from mirrorbits.config import Config

        holder = ConfigHolder(Config(Repository="/"))
    app = Mirrorbits(holder, reactor, monitor=False)
    if not opts.config:
        base = RedisSettings.from_config(holder.current)
        app.redis_settings = lambda: replace(base, address=opts.redis, sentinels=())  # type: ignore[method-assign]
    # With the config, the worker finds Redis as the parent does (embedded socket in DataDir, or the
    # Sentinel discovery and failover handling), rather than pinning the master the parent saw at spawn.
    redis = app.get_redis()
    redis.start()

    parts: list[Any] = [RedirectorService(app, spawn=False)]
    worker_services = getattr(app, "worker_services", None)  # the download counters and log
    if worker_services is not None:
        parts += list(worker_services())
    worker = _Worker(app, redis, parts, opts.fd, opts.index, opts.ready_fd)
    reactor.callWhenRunning(worker.start)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", worker.stop)  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    reactor.run()  # type: ignore[attr-defined]
    return worker.exit_code


if __name__ == "__main__":
    sys.exit(main())
