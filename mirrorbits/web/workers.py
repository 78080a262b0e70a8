"""The redirector's service and, in the main process, its extra HTTP worker processes (``Workers``).

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

A worker is the same daemon in its worker flavour (``python -m mirrorbits.worker``, built by
:func:`mirrorbits.service.makeService`; its own end is :mod:`mirrorbits.lifecycle.worker`).  This
module is the parent's side.  Lifecycle of a worker:

* it accepts only once it can answer as well as the main process (Redis gate open, view warm);
* SIGHUP/SIGUSR1 of the main process are forwarded (its lifecycle reloads config and GeoIP and
  reopens its logs, once per signal, as the main one does);
* SIGTERM (or SIGQUIT): stop accepting, serve what waits in the accept queue, drain the open
  connections, flush its own download counters, close Redis, exit 0.  On the daemon's final stop
  the workers stop *before* the main process closes the socket, so the last process holding the
  socket serves its accept queue instead of resetting it;
* it stops the same graceful way when its parent goes away (its stdin pipe closes), and exits
  hard if a stop ever takes longer than :data:`WORKER_STOP_DEADLINE`: no orphan workers;
* a worker that dies while the daemon runs is started again (after a short, growing delay).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProcessTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.geo import GeoIPService
from mirrorbits.lifecycle.listener import HTTPListener
from mirrorbits.lifecycle.worker import LISTEN_FD, READY_FD, WORKER_MODULE, worker_arguments
from mirrorbits.metrics import worker_metrics_path
from mirrorbits.reactor import IDaemonReactor

if TYPE_CHECKING:
    from mirrorbits.app import Mirrorbits

__all__ = ["RedirectorService", "WorkerProcess", "spawn_workers"]

log = Logger(namespace="mirrorbits.workers")

T = TypeVar("T")

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

    transport: IProcessTransport | None

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid: int | None = None
        self.started = time.monotonic()
        self.ready = False
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self._kill_call: IDelayedCall | None = None
        self._pending: list[str] = []

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.pid = self.transport.pid if self.transport is not None else None

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802
        if fd == READY_FD and not self.ready:
            self.ready = True
            pending, self._pending = self._pending, []
            for name in pending:
                self._send(name)

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        ended = reason.value
        code = ended.exitCode if isinstance(ended, error.ProcessTerminated | error.ProcessDone) else None
        sig = ended.signal if isinstance(ended, error.ProcessTerminated) else None
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
            # A number: Twisted takes a name only for HUP, STOP, INT, KILL and TERM, not USR1.
            self.transport.signalProcess(signal.Signals[f"SIG{name}"].value)
            return True
        except (error.ProcessExitedAlready, OSError):
            return False

    def terminate(self, reactor: IDaemonReactor,
                  kill_after: float = WORKER_KILL_AFTER) -> defer.Deferred[None]:
        """SIGTERM (graceful stop), SIGKILL if still there after ``kill_after`` s; fires on exit."""
        d: defer.Deferred[None] = defer.Deferred()

        def relay(result: int | None) -> int | None:
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


def spawn_workers(reactor: IDaemonReactor, listen_fd: int, count: int, *, config_path: str,
                  debug: bool = False, log_file: str | None = None,
                  indexes: Sequence[int] | None = None,
                  metrics_dir: str | None = None) -> list[WorkerProcess]:
    """Start ``count`` worker processes that serve HTTP on the already-bound ``listen_fd``
    (numbered ``indexes``, by default 1..count), each reading ``config_path`` as the main process
    does and logging as it does (``debug``, ``log_file``); with ``metrics_dir``, each hands its
    metrics to the parent on a socket there (:func:`mirrorbits.metrics.worker_metrics_path`)."""
    workers = []
    for i in indexes if indexes is not None else range(1, count + 1):
        metrics_socket = worker_metrics_path(metrics_dir, i) if metrics_dir is not None else None
        args = [sys.executable, "-m", WORKER_MODULE,
                *worker_arguments(i, config_path, ready_fd=READY_FD, debug=debug, log_file=log_file,
                                  metrics_socket=metrics_socket)]
        proto = WorkerProcess(i)
        reactor.spawnProcess(proto, sys.executable, args, env=os.environ.copy(),
                             childFDs={0: "w", 1: 1, 2: 2, LISTEN_FD: listen_fd, READY_FD: "r"})
        workers.append(proto)
    return workers


class RedirectorService(service.Service):
    """Starts the redirector's parts: GeoIP update checks, the cache view and, in the main
    process with ``Workers`` > 1, the extra worker processes once the HTTP port listens.

    Config reloads are not its business: the lifecycle reloads GeoIP (once per SIGHUP) and
    forwards the signals to the workers through :meth:`forward_signal`."""

    name = "redirector"
    #: Freeze the warm view out of the cyclic GC's full collections (see cache.freeze_long_lived).
    freeze_gc = True

    def __init__(self, app: Mirrorbits, http: HTTPListener, *, spawn: bool = True) -> None:
        self.app = app
        self.http = http
        self.spawn = spawn
        self.workers: list[WorkerProcess] = []
        self._geo_service: GeoIPService | None = None
        self._stopping = False
        self._respawns: dict[int, IDelayedCall] = {}
        self._respawn_delay: dict[int, float] = {}
        #: Where the workers serve their metrics to this process (set when metrics are on).
        self.metrics_dir: str | None = None

    def worker_metrics_sockets(self) -> list[tuple[int, str]]:
        """(index, socket path) of each live worker, for the scrape of the whole daemon."""
        if self.metrics_dir is None:
            return []
        return [(w.index, worker_metrics_path(self.metrics_dir, w.index))
                for w in list(self.workers) if w.alive]

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._stopping = False
        geoip = self.app.get_geoip()
        geoip.startup_report(bool(self.app.config.Fallbacks))
        self._geo_service = GeoIPService(geoip, clock=self.app.reactor)
        self._geo_service.startService()
        cache = self.app.get_cache()
        cache.freeze_gc = self.freeze_gc
        cache.start()
        if self.spawn and self.app.config.Workers > 1:
            if self.app.config.MetricsListenAddress and self.metrics_dir is None:
                self.metrics_dir = tempfile.mkdtemp(prefix="mirrorbits-metrics-")
            if self.app.lifecycle is not None:
                self.app.lifecycle.forward_signals(self.forward_signal)
            self.app.reactor.callLater(0, self._start_workers)

    # -- the worker processes (main process only) -------------------------------------------------

    def _start_workers(self) -> None:
        if self._stopping:
            return
        self.http.add_sharer(self.stop_workers)
        self.http.on_rebind(self._rebound)

        def listening(port: IListeningPort) -> IListeningPort:
            if self._stopping:
                return port
            fd = self.http.listening_fd()
            if fd is None:
                log.error("Workers: the HTTP listener has no socket to share (an endpoint "
                          "description?); serving from the main process only")
                return port
            count = self.app.config.Workers - 1
            self.workers = self._spawn(fd, range(1, count + 1))
            log.info("Started {n} extra HTTP worker processes", n=count)
            return port

        self.http.when_listening().addCallback(listening)

    def _spawn(self, fd: int, indexes: Sequence[int]) -> list[WorkerProcess]:
        config_path = self.app.config_holder.path
        if config_path is None:
            log.error("Workers: no config file for the worker processes to read")
            return []
        options = self.app.options
        workers = spawn_workers(self.app.reactor, fd, len(indexes), config_path=config_path,
                                debug=options.debug, log_file=options.log_file, indexes=indexes,
                                metrics_dir=self.metrics_dir)
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
        fd = self.http.listening_fd()
        if fd is None:
            log.error("HTTP worker {i}: no listening socket to share any more", i=dead.index)
            return
        new = self._spawn(fd, [dead.index])
        if new:
            self.workers = [new[0] if w is dead else w for w in self.workers]

    def _rebound(self, port: IListeningPort) -> None:
        """``ListenAddress`` changed: new workers on the new socket, the old ones stop gracefully."""
        fd = self.http.listening_fd()
        if self._stopping or not self.workers or fd is None:
            return
        old = self.workers
        self.workers = self._spawn(fd, [w.index for w in old])
        for w in old:
            w.terminate(self.app.reactor)

    def forward_signal(self, signum: int) -> None:
        """Pass SIGHUP (reload) / SIGUSR1 (reopen logs) on to the workers."""
        name = signal.Signals(signum).name[3:]
        for w in self.workers:
            w.signal(name)

    def stop_workers(self) -> defer.Deferred[None]:
        """Stop every worker gracefully (SIGTERM; SIGKILL after :data:`WORKER_KILL_AFTER` s); fires
        once all have exited.  Safe to call more than once."""
        self._stopping = True
        for call in self._respawns.values():
            if call.active():
                call.cancel()
        self._respawns.clear()
        alive = [w.terminate(self.app.reactor) for w in self.workers if w.alive]
        return defer.gatherResults(alive).addCallback(lambda _: None)

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        if self._geo_service is not None:
            self._geo_service.stopService()
        self.app.get_cache().stop()
        d = self.stop_workers()
        self.workers = []
        if self.metrics_dir is not None:
            metrics_dir, self.metrics_dir = self.metrics_dir, None
            d.addBoth(_remove_after, metrics_dir)
        return d


def _remove_after(result: T, directory: str) -> T:
    """Remove ``directory`` (the workers' metrics sockets), passing ``result`` on."""
    shutil.rmtree(directory, ignore_errors=True)
    return result
