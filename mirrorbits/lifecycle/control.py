"""The daemon's lifecycle: reload, reopen logs, seamless upgrade, graceful stop.

One object (:class:`Lifecycle`, a service) that signals, the admin channel (``reload``/``upgrade``
RPCs) and tests all call, so the three paths cannot drift apart.

Deliberate deviations from the Go original (fixes the spec allows):

* SIGTERM/SIGINT stop as gracefully as SIGQUIT (stop accepting, finish in-flight requests, flush the
  stats, close Redis) instead of exiting at once and losing the last download counters.
* A config file that vanished is a failed reload (the old config stays), not an exit.
* A changed ``ListenAddress`` rebinds (new socket up before the old one closes) instead of hanging.
* A failed upgrade calls the ``failed`` hooks (the admin channel re-opens its port) and the old
  process keeps serving; ``upgrade()`` answers once the child is spawned, so the CLI sees success.
* The upgraded child starts accepting only once its Redis connection is ready (bounded wait): the
  old process serves meanwhile, so no request gets degraded answers during the hand-over.

An HTTP worker process (config key ``Workers``) has the same lifecycle in its worker flavour: its
parent forwards SIGHUP and SIGUSR1, so it reloads and reopens exactly as the main process does; it
does not upgrade (SIGUSR2 is for the main process), it accepts once its Redis gate is open and its
view warm, it stops when its parent goes away, and it never talks to systemd.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from twisted.application import service
from twisted.internet import defer, error, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from mirrorbits.deferutil import wait_at_most
from mirrorbits.lifecycle import systemd
from mirrorbits.lifecycle.listener import HTTPListener
from mirrorbits.lifecycle.pidfile import write_pidfile
from mirrorbits.lifecycle.signals import EarlySignals, SignalHandlers
from mirrorbits.lifecycle.upgrade import (
    Inherited,
    SuccessorProcess,
    UpgradeError,
    ask_parent_to_quit,
    spawn_successor,
)
from mirrorbits.lifecycle.worker import WARM_WAIT, WORKER_STOP_DEADLINE, ParentWatch, say_ready

if TYPE_CHECKING:
    from mirrorbits.app import Mirrorbits

log = Logger(namespace="mirrorbits.lifecycle")

#: Go waits 100 ms between adopting the listener and asking the parent to quit.
QUIT_PARENT_DELAY = 0.1

#: Sibling services whose ports the new process binds again (admin channel, manhole, metrics):
#: stopped before the child is spawned (Go closes its RPC server first) and started again if the
#: upgrade fails (Go leaves RPC closed).
RELEASE_ON_UPGRADE = ("rpc", "manhole", "metrics")


class Lifecycle(service.Service):
    """Reload / reopen logs / upgrade / stop for one daemon process.

    ``listen_override``: the ``--listen`` value that wins over ``ListenAddress``.  ``pidfile``: the
    pid file the Go-style daemon writes (None under twistd, which has its own).  ``inherited``: the
    socket of an upgrade or of systemd, already given to ``http``.
    """

    name = "lifecycle"

    def __init__(self, app: Mirrorbits, http: HTTPListener, *, listen_override: str | None = None,
                 pidfile: str | None = None, inherited: Inherited | None = None,
                 ready_timeout: float = 10.0, upgrade_timeout: float = 60.0) -> None:
        self.app = app
        self.http = http
        self.reactor = app.reactor
        #: Set in an HTTP worker process (see the module's docstring).
        self.worker = app.worker
        self.listen_override = listen_override
        self.pidfile = pidfile
        self.inherited = inherited
        self.ready_timeout = ready_timeout
        self.upgrade_timeout = upgrade_timeout
        self.signals = SignalHandlers(self.reactor)
        #: Signals received before the handlers were installed (set by the Go-style runner).
        self.early: EarlySignals | None = None
        self.successor: SuccessorProcess | None = None
        #: Set once the next generation took over: the stop must leave shared things alone.
        self.handing_over = False
        self.stopping = False
        self._log_reopeners: list[Callable[[], object]] = []
        self._before_upgrade: list[Callable[[], Awaitable[object] | object]] = []
        self._upgrade_failed: list[Callable[[], object]] = []
        self._forwarders: list[Callable[[int], object]] = []
        self._upgrade_timer: IDelayedCall | None = None
        self._released: list[service.IService] = []
        self._stop_deadline: IDelayedCall | None = None
        #: Fires once this process serves (after the take-over, for an upgraded child).
        self.serving: defer.Deferred[None] = defer.Deferred()

    # -- hooks other parts register -------------------------------------------------------------

    def add_log_reopener(self, reopen: Callable[[], object]) -> None:
        """``reopen()`` on SIGUSR1/SIGHUP (the runtime log file of ``-log``, ...)."""
        self._log_reopeners.append(reopen)

    def on_upgrade(self, before: Callable[[], Awaitable[object] | object] | None = None,
                   failed: Callable[[], object] | None = None) -> None:
        """``before()`` runs (and is awaited) before the child is spawned: release ports the child
        binds again (the admin RPC).  ``failed()`` runs if the child could not take over."""
        if before is not None:
            self._before_upgrade.append(before)
        if failed is not None:
            self._upgrade_failed.append(failed)

    def forward_signals(self, forward: Callable[[int], object]) -> None:
        """``forward(SIGHUP)`` after each reload (signal or RPC) and ``forward(SIGUSR1)`` on SIGUSR1:
        the HTTP worker processes keep their own config, GeoIP and ``downloads.log`` handle, so
        they must reload and reopen too."""
        self._forwarders.append(forward)

    def _forward(self, signum: int) -> None:
        for forward in list(self._forwarders):
            try:
                forward(signum)
            except Exception:
                log.failure("forwarding {name} failed", name=signal.Signals(signum).name)

    # -- service --------------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.reactor.callWhenRunning(self.install_signal_handlers)
        self.reactor.addSystemEventTrigger("before", "shutdown", self._shutting_down)
        self.http.when_listening().addCallback(self._listening)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._upgrade_timer is not None and self._upgrade_timer.active():
            self._upgrade_timer.cancel()
        self.signals.restore()
        if self.worker is not None:
            if self._stop_deadline is not None and self._stop_deadline.active():
                self._stop_deadline.cancel()
            log.info("HTTP worker {i} (pid {pid}) stopped after {n} connection(s)", i=self.worker.index,
                     pid=os.getpid(), n=self.http.tracker.accepted)

    def install_signal_handlers(self) -> None:
        """HUP reload, USR1 reopen logs, USR2 upgrade, QUIT graceful stop (INT/TERM: the reactor's)."""
        handlers: dict[int, Callable[[], object]] = {
            signal.SIGHUP: self._on_sighup,
            signal.SIGUSR1: self._on_sigusr1,
            signal.SIGUSR2: self._on_sigusr2,
            signal.SIGQUIT: self._on_sigquit,
        }
        early = self.early.take() if self.early is not None else []
        self.signals.install(handlers, chain=frozenset({signal.SIGUSR1}))
        if early:
            self.serving.addCallback(self._replay_early, [handlers[signum] for signum in early], early)
        if self.worker is not None:
            self._worker_started()

    def _replay_early(self, result: None, handlers: list[Callable[[], object]],
                      signums: list[int]) -> None:
        """The signals that came during start-up, acted on once start-up is done (this process
        serves): a reload asked while the daemon was starting is done then, not lost."""
        for handler, signum in zip(handlers, signums, strict=True):
            log.info("Handling {name} received during start-up", name=signal.Signals(signum).name)
            self.reactor.callLater(0, handler)
        return result

    def _worker_started(self) -> None:
        """Tell the parent that signals can be sent, and stop when the parent goes away."""
        assert self.worker is not None
        if self.worker.ready_fd is not None:
            problem = say_ready(self.worker.ready_fd)
            if problem is not None:
                log.warn("HTTP worker {i}: cannot tell the parent it is ready: {e}",
                         i=self.worker.index, e=problem)
        self.reactor.addReader(ParentWatch(0, self._parent_gone))

    def _parent_gone(self) -> None:
        if not self.stopping:
            log.warn("HTTP worker {i}: parent is gone; stopping", i=self.worker.index if self.worker else 0)
            self.graceful_stop()

    def _listening(self, port: object) -> object:
        if self.worker is not None:
            d = defer.Deferred.fromCoroutine(self._serve_when_ready())
            d.addErrback(lambda f: log.failure("HTTP worker start-up failed", f))
        elif self.inherited is not None and self.inherited.parent_pid is not None:
            d = defer.Deferred.fromCoroutine(self._take_over(self.inherited.parent_pid))
            d.addErrback(lambda f: log.failure("taking over from the parent failed", f))
        else:
            systemd.ready()
            self.serving.callback(None)
        return port

    async def _serve_when_ready(self) -> None:
        """HTTP worker: accept only once this process can answer as well as the main one (Redis
        gate open, view warmed within :data:`WARM_WAIT`); until then the others serve."""
        await self.app.get_redis().when_ready()
        try:
            await wait_at_most(self.app.get_cache().warm(), WARM_WAIT, self.reactor)
        except defer.TimeoutError:
            log.warn("HTTP worker: view not warm after {t}s; serving anyway", t=WARM_WAIT)
        if self.stopping:
            return
        self.http.resume()
        self.serving.callback(None)
        log.info("HTTP worker {i} serving", i=self.worker.index if self.worker else 0)

    async def _take_over(self, parent_pid: int) -> None:
        """Upgraded child: be ready, accept, then ask the parent to drain and quit."""
        redis = self.app.get_redis()
        if not redis.ready:
            try:
                await wait_at_most(redis.when_ready(), self.ready_timeout, self.reactor)
            except defer.TimeoutError:
                log.warn("Redis not ready after {t}s; taking over anyway", t=self.ready_timeout)
        if self.stopping:
            return
        self.http.resume()
        if self.pidfile:
            write_pidfile(self.pidfile)
        systemd.ready()
        self.serving.callback(None)
        await task.deferLater(self.reactor, QUIT_PARENT_DELAY, lambda: None)
        ask_parent_to_quit(parent_pid)

    # -- reload ---------------------------------------------------------------------------------

    def _on_sighup(self) -> None:
        d = self.reload()
        d.addErrback(lambda f: log.failure("reload failed", f))

    def reload(self) -> defer.Deferred[bool]:
        """SIGHUP / RPC ``Reload``: returns whether the new config was taken."""
        return defer.Deferred.fromCoroutine(self._reload())

    async def _reload(self) -> bool:
        """The one reload: config, listening address, GeoIP, logs, then the worker processes.

        Nothing else reloads on a config change by itself, so each of these happens once per
        SIGHUP (a subscriber of the config holder reloading GeoIP or reopening a log too would make
        it twice)."""
        if self.worker is None:
            systemd.reloading()
        try:
            holder = self.app.config_holder
            changed = holder.reload()  # logs "SIGHUP Received: ..." either way
            if changed and self.worker is None:
                address = self.listen_override or holder.current.ListenAddress
                if address != self.http.bound_address and self.http.running:
                    await self.http.rebind(address)
            self._reload_geoip()
            self.reopen_logs()
            self._forward(signal.SIGHUP)
            return changed
        finally:
            if self.worker is None:
                systemd.ready()

    def _reload_geoip(self) -> None:
        """GeoIP is reloaded on every HUP, even when the config did not change (new files)."""
        try:
            geoip = self.app.get_geoip()
            directory = self.app.config.GeoipDatabasePath
            if geoip.directory != directory:
                geoip.set_directory(directory)
            else:
                geoip.reload()
        except Exception:
            log.failure("reloading GeoIP failed")

    # -- logs -----------------------------------------------------------------------------------

    def _on_sigusr1(self) -> None:
        log.info("SIGUSR1 Received: Re-opening logs...")
        self.reopen_logs()
        self._forward(signal.SIGUSR1)

    def reopen_logs(self) -> None:
        """The runtime log file (``-log``) and ``downloads.log`` (logrotate's postrotate)."""
        for reopen in list(self._log_reopeners):
            try:
                reopen()
            except Exception:
                log.failure("re-opening a log failed")
        try:
            self.app.get_download_log().reopen()
        except Exception:
            log.failure("re-opening downloads.log failed")

    # -- upgrade --------------------------------------------------------------------------------

    def _on_sigusr2(self) -> None:
        if self.worker is not None:
            log.warn("HTTP worker {i}: SIGUSR2 ignored; send it to the main process", i=self.worker.index)
            return
        log.info("SIGUSR2 Received: Seamless binary upgrade...")
        d = self.upgrade()
        d.addErrback(lambda f: f.trap(UpgradeError))  # logged already

    def upgrade(self) -> defer.Deferred[int]:
        """SIGUSR2 / RPC ``Upgrade``: start the new program; fires with its pid once spawned.

        Errbacks with :class:`UpgradeError` (and logs "Relaunch failed: ...") when it cannot start;
        a child that dies before taking over is logged too, and this process keeps serving.
        """
        return defer.Deferred.fromCoroutine(self._upgrade())

    async def _upgrade(self) -> int:
        if self.stopping:
            raise UpgradeError("the daemon is stopping")
        if self.successor is not None and self.successor.alive:
            raise UpgradeError(f"an upgrade is already running (child {self.successor.pid})")
        sock = self.http.listening_socket()
        if sock is None:
            log.error("Relaunch failed: no HTTP listening socket to hand over")
            raise UpgradeError("no HTTP listening socket to hand over")
        self._released = await self._release_ports()
        for before in list(self._before_upgrade):
            try:
                await defer.maybeDeferred(before)
            except Exception:
                log.failure("preparing the upgrade failed")
        try:
            child = spawn_successor(self.reactor, sock)
        except UpgradeError as e:
            log.error("Relaunch failed: {error}", error=e)
            self._failed()
            raise
        self.successor = child
        log.info("Spawned child {pid}", pid=child.pid)
        child.ended.addCallback(self._successor_ended, child)
        self._upgrade_timer = self.reactor.callLater(self.upgrade_timeout, self._upgrade_too_slow,
                                                     child)
        return int(child.pid or 0)

    def _successor_ended(self, status: int | None, child: SuccessorProcess) -> None:
        if self.handing_over or self.successor is not child:
            return
        self.successor = None
        if self._upgrade_timer is not None and self._upgrade_timer.active():
            self._upgrade_timer.cancel()
        log.error("Relaunch failed: child {pid} exited with status {status} before taking over; "
                  "still serving", pid=child.pid, status=status)
        self._failed()

    def _upgrade_too_slow(self, child: SuccessorProcess) -> None:
        if child.alive and not self.handing_over and self.successor is child:
            log.error("Relaunch failed: child {pid} did not take over in {t}s; stopping it",
                      pid=child.pid, t=self.upgrade_timeout)
            child.terminate()

    async def _release_ports(self) -> list[service.IService]:
        released: list[service.IService] = []
        parent = self.parent
        for name in RELEASE_ON_UPGRADE:
            try:
                part = parent.getServiceNamed(name) if parent is not None else None
            except KeyError:
                part = None
            if part is None or not part.running:
                continue
            try:
                await defer.maybeDeferred(part.stopService)
                released.append(part)
            except Exception:
                log.failure("closing {name} for the upgrade failed", name=name)
        return released

    def _failed(self) -> None:
        released, self._released = self._released, []
        for part in released:
            if not self.stopping and not part.running:
                try:
                    part.startService()
                    log.info("Re-opened {name} after the failed upgrade", name=part.name)
                except Exception:
                    log.failure("re-opening {name} failed", name=part.name)
        for failed in list(self._upgrade_failed):
            try:
                failed()
            except Exception:
                log.failure("recovering from a failed upgrade failed")

    # -- stop -----------------------------------------------------------------------------------

    def _on_sigquit(self) -> None:
        self.graceful_stop()

    def graceful_stop(self) -> None:
        """SIGQUIT: hand over if our upgraded child asks, else plain graceful stop."""
        child = self.successor
        if child is not None and child.alive and not self.handing_over:
            self.handing_over = True
            if self._upgrade_timer is not None and self._upgrade_timer.active():
                self._upgrade_timer.cancel()
            self.http.handing_over = True
            embedded = self.app.get_embedded_redis()
            if embedded is not None:
                embedded.keep_running = True  # the child adopted it
            if child.pid:
                systemd.main_pid(child.pid)
            log.info("Handing over to child {pid}", pid=child.pid)
        if self.reactor.running and not self.stopping:
            try:
                self.reactor.stop()
            except error.ReactorNotRunning:  # a second stop request while stopping
                pass

    def _shutting_down(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.worker is not None:
            # Whatever happens in the stop, a worker must not outlive it for long.
            self._stop_deadline = self.reactor.callLater(WORKER_STOP_DEADLINE, self._hard_exit)
        elif not self.handing_over:
            systemd.stopping()
        log.info("Waiting for running tasks to finish...")

    def _hard_exit(self) -> None:
        log.error("HTTP worker: stop took more than {t}s; exiting now", t=WORKER_STOP_DEADLINE)
        os._exit(1)

    # -- for tests and the admin side -----------------------------------------------------------

    @property
    def pid(self) -> int:
        return os.getpid()
