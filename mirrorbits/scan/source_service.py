"""When the local repository is scanned: at start-up, every ``RepositoryScanInterval`` minutes, and on
the admin ``refresh``.

The scans themselves are :class:`mirrorbits.scan.local.LocalScanner`'s; this service only schedules
them and makes sure one process never runs two at once (a ``refresh`` arriving during a periodic
scan waits for it, then runs its own).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.config import Config, ConfigHolder
from mirrorbits.reactor import default_reactor
from mirrorbits.redis.connection import RedisClient
from mirrorbits.scan.local import LocalScanner, ScanResult

log = Logger(namespace="mirrorbits.scan.source")

LOCAL_FILES = Gauge("mirrorbits_local_files", "Files of the local repository, as of the last scan")
LOCAL_BYTES = Gauge("mirrorbits_local_bytes", "Total size of the local repository's files, as of the "
                    "last scan")
LOCAL_HASHED = Counter("mirrorbits_local_files_hashed", "Files of the local repository hashed "
                       "(new or changed files)")
LOCAL_SCAN_DURATION = Gauge("mirrorbits_local_scan_duration_seconds", "Duration of the last "
                            "successful scan of the local repository")
LOCAL_SCAN_LAST = Gauge("mirrorbits_local_scan_last_success_timestamp_seconds",
                        "When the last successful scan of the local repository ended (Unix time)")
LOCAL_SCAN_FAILURES = Counter("mirrorbits_local_scan_failures", "Scans of the local repository "
                              "that failed")

#: Go retries the start-up scan every second until it succeeds.
STARTUP_RETRY = 1.0


class SourceScanService(service.Service):
    """Runs the local scan at start-up and periodically (only with the monitor, as in Go), and on
    demand through :meth:`refresh` (always, the admin command works without the monitor too)."""

    name = "source-scan"

    def __init__(self, scanner: LocalScanner, config: ConfigHolder | Callable[[], Config],
                 client: RedisClient, reactor: IReactorTime | None = None, *, monitor: bool = True,
                 startup_retry: float = STARTUP_RETRY) -> None:
        self.scanner = scanner
        self._config = config
        self.client = client
        self.reactor = reactor if reactor is not None else default_reactor()
        self.monitor = monitor
        self.startup_retry = startup_retry
        self._serial = defer.DeferredLock()
        self._startup: defer.Deferred[None] | None = None
        self._sleep: defer.Deferred[None] | None = None
        self._periodic: task.LoopingCall | None = None
        self._interval = 0
        self._indexed_waiters: list[defer.Deferred[None]] = []
        self.indexed = False
        #: The last successful scan's figures (for the manhole and tests).
        self.last_result: ScanResult | None = None
        if isinstance(config, ConfigHolder):
            config.subscribe(self._config_changed)

    @property
    def config(self) -> Config:
        return self._config.current if isinstance(self._config, ConfigHolder) else self._config()

    # -- the operation -----------------------------------------------------------------------

    async def refresh(self, rehash: bool = False) -> ScanResult:
        """Scan now (admin ``refresh [-rehash]``); waits for a scan already running in this process.
        Raises :class:`mirrorbits.scan.local.LocalScanError` ("scan already in progress",
        "<repo>: No such file or directory"...) or a Redis error."""
        await self._serial.acquire()
        started = self.reactor.seconds()
        try:
            result = await self.scanner.scan(rehash=rehash)
        except Exception:
            LOCAL_SCAN_FAILURES.inc()
            raise
        finally:
            self._serial.release()
        self.last_result = result
        LOCAL_FILES.set(result.indexed)
        LOCAL_BYTES.set(result.bytes)
        LOCAL_HASHED.inc(result.hashed)
        LOCAL_SCAN_DURATION.set(self.reactor.seconds() - started)
        LOCAL_SCAN_LAST.set_to_current_time()
        return result

    def when_indexed(self) -> defer.Deferred[None]:
        """Fires once the start-up scan has succeeded (the monitor waits for it)."""
        if self.indexed:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._indexed_waiters.append(d)
        return d

    # -- scheduling --------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.scanner.resume()
        if self.monitor:
            self._startup = defer.Deferred.fromCoroutine(self._start())
            self._startup.addErrback(self._startup_failed)

    def _startup_failed(self, failure: Failure) -> None:
        if not failure.check(defer.CancelledError):
            log.failure("local repository start-up scan died", failure)

    async def _start(self) -> None:
        await self.client.when_ready()
        first_failure = True
        while self.running:
            try:
                await self.refresh()
                break
            except Exception as e:
                if not self.running:
                    return
                # Go logs this on every attempt; once a second forever (e.g. a missing repository)
                # only buries the log, so repeats go to debug.
                if first_failure:
                    log.error("Scanning source failed: {err}", err=str(e) or repr(e))
                    first_failure = False
                else:
                    log.debug("Scanning source failed: {err}", err=str(e) or repr(e))
            self._sleep = task.deferLater(self.reactor, self.startup_retry, lambda: None)
            try:
                await self._sleep
            finally:
                self._sleep = None
        if not self.running:
            return
        self.indexed = True
        self._arm(self.config.RepositoryScanInterval)
        waiters, self._indexed_waiters = self._indexed_waiters, []
        for d in waiters:
            d.callback(None)

    def _arm(self, minutes: int) -> None:
        """(Re)start the periodic scan: every ``minutes``, none for 0."""
        if self._periodic is not None and self._periodic.running:
            self._periodic.stop()
        self._periodic = None
        self._interval = minutes
        if minutes <= 0 or not self.running:
            return
        self._periodic = task.LoopingCall(self._periodic_scan)
        self._periodic.clock = self.reactor
        d = self._periodic.start(minutes * 60.0, now=False)
        d.addErrback(lambda f: log.failure("periodic local scan loop died", f))

    async def _periodic_scan(self) -> None:
        try:
            await self.refresh()
        except Exception as e:
            if self.running:
                log.error("Scanning source failed: {err}", err=str(e) or repr(e))

    def _config_changed(self, old: Config, new: Config) -> None:
        if self.indexed and self.running and new.RepositoryScanInterval != self._interval:
            self._arm(new.RepositoryScanInterval)

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        self.scanner.stop()
        if self._periodic is not None and self._periodic.running:
            self._periodic.stop()
        self._periodic = None
        if self._sleep is not None and not self._sleep.called:
            self._sleep.cancel()
        if self._startup is not None and not self._startup.called and not self._serial.locked:
            self._startup.cancel()  # waiting for Redis or between retries: nothing to finish
        # Wait for a running scan to notice the stop (or finish its bounded commit).
        return defer.Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        await self._serial.acquire()
        self._serial.release()
