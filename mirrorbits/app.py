"""The one object that builds and hands out the daemon's parts (config, Redis, GeoIP, cache...).

Modelled on Synapse's ``HomeServer``: each part is built on first use by a ``get_*`` method, so the
wiring is in one place, tests can build only what they exercise, and nothing is a module global.
The hub imports the parts it builds; the parts never import the hub at run time (only under
``TYPE_CHECKING``, for their annotations), so dependencies point one way: entry points -> service
tree (:mod:`mirrorbits.service`) -> this hub -> subsystems -> model/schema/gocompat.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar, cast

from prometheus_client.registry import Collector
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from mirrorbits.admin.commands import AdminCommands, admin_for_app
from mirrorbits.admin.manhole import ManholeService, manhole_service
from mirrorbits.admin.rpc import RpcService
from mirrorbits.cache import MirrorView, ViewCollector
from mirrorbits.config import Config, ConfigHolder
from mirrorbits.geo import GeoIP
from mirrorbits.history.retention import RetentionService
from mirrorbits.httpclient import HttpClient
from mirrorbits.lifecycle.control import Lifecycle
from mirrorbits.lifecycle.listener import HTTPListener, socket_from_fd
from mirrorbits.lifecycle.upgrade import Inherited, inherited_listener
from mirrorbits.metrics import MetricsService, metrics_service
from mirrorbits.monitor.cluster import Cluster, ClusterCollector
from mirrorbits.monitor.health import HealthChecker
from mirrorbits.monitor.resolve import HostResolver, ReactorResolver
from mirrorbits.monitor.scheduler import Monitor
from mirrorbits.monitor.service import MonitorService
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.redis.connection import RedisClient, RedisSettings
from mirrorbits.redis.embedded import EmbeddedRedis
from mirrorbits.scan.local import LocalScanner
from mirrorbits.scan.mirror import MirrorScanner
from mirrorbits.scan.source_service import SourceScanService
from mirrorbits.web.downloadlog import DownloadLog
from mirrorbits.web.pages import Endpoints
from mirrorbits.web.resource import RedirectorResource
from mirrorbits.web.site import LeanSite, make_site
from mirrorbits.web.stats import DownloadStats, DownloadStatsCollector
from mirrorbits.web.workers import RedirectorService

log = Logger(namespace="mirrorbits")

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerSpec:
    """An HTTP worker process (config key ``Workers``): which one, and the fds its parent gave it."""

    index: int
    #: The listening socket shared with the main process.
    listen_fd: int
    #: A pipe on which the worker says once its signal handlers are in place (None: nobody asks).
    ready_fd: int | None = None
    #: The Unix socket on which the worker hands its metrics to its parent (None: metrics are off).
    metrics_socket: str | None = None


@dataclass(frozen=True)
class DaemonOptions:
    """What the command line says (Go ``daemon`` flags / twistd plugin options)."""

    config: str | None = None
    pidfile: str | None = None
    debug: bool = False
    monitor: bool = True
    listen: str | None = None  # overrides ListenAddress (handy for tests and quick starts)
    #: The ``-log`` file (None: stderr); HTTP workers log there too.
    log_file: str | None = None
    #: Set in an HTTP worker process: the service tree is the worker flavour (see makeService).
    worker: WorkerSpec | None = None


class Mirrorbits:
    """The daemon's dependency hub.  ``monitor`` is the Go ``-monitor`` flag."""

    def __init__(self, config: ConfigHolder, reactor: IDaemonReactor | None = None, *,
                 monitor: bool = True, options: DaemonOptions | None = None,
                 host_resolver: HostResolver | None = None) -> None:
        self.reactor: IDaemonReactor = reactor if reactor is not None else default_reactor()
        self.config_holder = config
        self.options = options if options is not None else DaemonOptions(monitor=monitor)
        #: The Go ``-monitor`` flag; an HTTP worker process never monitors.
        self.run_monitor = monitor and self.options.monitor and self.options.worker is None
        self._built: dict[str, object] = {}
        if host_resolver is not None:
            self._built["host_resolver"] = host_resolver
        #: Non-zero when a fatal condition (unsupported schema...) must end the process with an error.
        self.exit_code = 0
        #: Under twistd there is no way to return an exit status: end the process after shutdown.
        self.hard_exit_on_fatal = True
        #: The process's lifecycle once the service tree has one (None: tests, the CLI's own use).
        self.lifecycle: Lifecycle | None = None

    @property
    def config(self) -> Config:
        """The current config; re-read on every use so that a reload applies at once."""
        return self.config_holder.current

    @property
    def worker(self) -> WorkerSpec | None:
        """Set when this process is an HTTP worker of another daemon process."""
        return self.options.worker

    def _once(self, name: str, build: Callable[[], T]) -> T:
        if name not in self._built:
            self._built[name] = build()
        return cast(T, self._built[name])

    # -- Redis ------------------------------------------------------------------------------------

    def get_embedded_redis(self) -> EmbeddedRedis | None:
        """The private redis-server, when the config asks for one (``RedisAddress: embedded``).

        An HTTP worker dials its parent's (the socket in ``DataDir``); only the main process's
        service tree runs it."""
        if not self.config.embedded_redis:
            return None
        return self._once("embedded_redis",
                          lambda: EmbeddedRedis(self.config.DataDir, reactor=self.reactor))

    def redis_settings(self) -> RedisSettings:
        settings = RedisSettings.from_config(self.config)
        embedded = self.get_embedded_redis()
        if embedded is not None:
            settings = replace(settings, address=embedded.address, sentinels=())
        return settings

    def get_redis(self) -> RedisClient:
        return self._once("redis", lambda: RedisClient(self.redis_settings, reactor=self.reactor))

    # -- scans, monitor and cluster ------------------------------------------------------------

    def get_source_scanner(self) -> SourceScanService:
        """The local repository scan service (start-up/periodic scans, ``refresh(rehash)``)."""
        def build() -> SourceScanService:
            scanner = LocalScanner(self.get_redis(), lambda: self.config, reactor=self.reactor)
            return SourceScanService(scanner, self.config_holder, self.get_redis(), self.reactor,
                                     monitor=self.run_monitor)

        return self._once("source_scanner", build)

    def get_http_client(self) -> HttpClient:
        """HTTP client of the health checks and trace fetches (``CheckTLSCAFile`` trusted if set)."""
        return self._once("http_client", lambda: HttpClient(
            self.reactor, ca_file=self.config.CheckTLSCAFile))

    def get_mirror_scanner(self) -> MirrorScanner:
        """Mirror scans (``scan_mirror(mirror, "rsync"|"ftp")`` for the admin ``scan``)."""
        return self._once("mirror_scanner", lambda: MirrorScanner(
            self.get_redis(), lambda: self.config, self.get_http_client(), self.reactor))

    def get_cluster(self) -> Cluster:
        """This node's cluster membership; the Redis DB of the announces is read once."""
        return self._once("cluster", lambda: Cluster(self.get_redis(), self.config.RedisDB,
                                                     reactor=self.reactor))

    def get_host_resolver(self) -> HostResolver:
        """Names of the mirrors to IPv4/IPv6 addresses for the per-family health checks
        (``SelectByIPFamily``): the reactor's resolver unless the hub was given one (tests give a
        :class:`~mirrorbits.monitor.resolve.StaticResolver`)."""
        return self._once("host_resolver", lambda: ReactorResolver(self.reactor))

    def get_monitor(self) -> Monitor:
        """Health checks and scan scheduling; ``mirror_updated(id)`` takes MIRROR_UPDATE ids."""
        return self._once("monitor", lambda: Monitor(
            self.get_redis(), lambda: self.config, self.get_cluster(),
            HealthChecker(self.get_http_client(), self.get_host_resolver()),
            self.get_mirror_scanner(), self.reactor,
            wait_indexed=self.get_source_scanner().when_indexed))

    def get_monitor_service(self) -> MonitorService:
        return self._once("monitor_service", lambda: MonitorService(self.get_monitor()))

    # -- administration ------------------------------------------------------------------------

    def get_admin(self) -> AdminCommands:
        """Every admin operation (the CLI channel and the SSH manhole share it)."""
        return self._once("admin", lambda: admin_for_app(self))

    def get_rpc_service(self) -> RpcService:
        """The admin channel of the ``mirrorbits`` CLI, on ``RPCListenAddress``."""
        return self._once("rpc", lambda: RpcService(self.get_admin(), lambda: self.config, self.reactor,
                                                    failed=self.fatal))

    def get_manhole_service(self) -> ManholeService | None:
        """The SSH manhole, or None when ``ManholeListenAddress`` is empty (the default)."""
        return self._once("manhole", lambda: manhole_service(self))

    # -- redirector ----------------------------------------------------------------------------

    def get_geoip(self) -> GeoIP:
        """The GeoIP databases; reloaded when the files change or on SIGHUP."""
        return self._once("geoip", lambda: GeoIP(self.config.GeoipDatabasePath))

    def get_cache(self) -> MirrorView:
        """The in-memory view of Redis used by the redirector (mirrorbits.cache)."""
        return self._once("cache", lambda: MirrorView(
            self.get_redis(), self.reactor, load_timeout=lambda: self.config.RedisLoadTimeout))

    def get_web_root(self) -> RedirectorResource:
        """The twisted.web root resource (dispatch + mirror handler)."""
        return self._once("web_root", lambda: RedirectorResource(self))

    def get_redirector(self) -> RedirectorService:
        """GeoIP checks, the view's life and (main process, ``Workers`` > 1) the worker processes."""
        return self._once("redirector", lambda: RedirectorService(
            self, self.get_http_listener(), spawn=self.worker is None))

    # -- observability ------------------------------------------------------------------------------

    def get_metrics_service(self) -> MetricsService | None:
        """The ``/metrics``, ``/healthz``, ``/readyz`` listener on ``MetricsListenAddress`` (None when
        the key is empty, the default); in an HTTP worker, the socket its parent scrapes instead."""
        return self._once("metrics", lambda: metrics_service(self, self.metrics_collectors()))

    def metrics_collectors(self) -> list[Collector]:
        """Collectors that read the state of this process's parts at scrape time."""
        collectors: list[Collector] = [ViewCollector(self.get_cache(), time.time),
                                       DownloadStatsCollector(self.get_download_stats()),
                                       self.get_web_root().redirect_counts, LeanSite.request_metrics]
        if self.run_monitor:
            collectors.append(ClusterCollector(self.get_cluster()))
        return collectors

    # -- statistics, download log and pages ------------------------------------------------------

    def get_download_stats(self) -> DownloadStats:
        """Download counters, flushed to ``STATS_*`` every 500 ms (mirrorbits.web.stats)."""
        return self._once("download_stats",
                          lambda: DownloadStats(self.get_redis(), lambda: self.config, self.reactor))

    def get_stats_retention(self) -> RetentionService:
        """The daily prune of the statistics keys outside ``StatsRetention`` (mirrorbits.history)."""
        return self._once("stats_retention", lambda: RetentionService(
            self.get_redis(), lambda: self.config, self.reactor))

    def get_download_log(self) -> DownloadLog:
        """``<LogDir>/downloads.log``; reopened by the lifecycle on SIGUSR1 and SIGHUP."""
        return self._once("download_log", lambda: DownloadLog(self.config_holder, reactor=self.reactor))

    def get_pages(self) -> Endpoints:
        """?stats, ?mirrorstats, checksums, ?mirrors and the mirror list page (web.pages)."""
        return self._once("pages", lambda: Endpoints(self))

    # -- the process: listening socket and lifecycle -----------------------------------------------

    def get_http_listener(self) -> HTTPListener:
        """The HTTP listening socket: bound, or inherited from the previous generation, systemd or
        (in a worker) the main process.  Paused until ready when it is shared with a running
        process (an upgrade's parent, a worker's siblings)."""
        def build() -> HTTPListener:
            site = make_site(self)
            address = lambda: self.options.listen or self.config.ListenAddress  # noqa: E731
            if self.worker is not None:
                return HTTPListener(site, address, self.reactor,
                                    inherited=socket_from_fd(self.worker.listen_fd), paused=True,
                                    shared=True)
            inherited = self.inherited_socket()
            return HTTPListener(site, address, self.reactor,
                                inherited=inherited.sock if inherited is not None else None,
                                paused=inherited is not None and inherited.parent_pid is not None,
                                fatal=self.fatal,
                                key="the --listen option" if self.options.listen else "ListenAddress")

        return self._once("http", build)

    def inherited_socket(self) -> Inherited | None:
        """``OLD_FD`` of a seamless upgrade, or systemd's ``LISTEN_FDS`` (read once)."""
        return self._once("inherited", lambda: inherited_listener() if self.worker is None else None)

    def get_lifecycle(self) -> Lifecycle:
        """Signals, reload, log reopening, upgrade and stop of this process (one owner of each)."""
        def build() -> Lifecycle:
            lifecycle = Lifecycle(self, self.get_http_listener(), listen_override=self.options.listen,
                                  pidfile=self.options.pidfile, inherited=self.inherited_socket())
            self.lifecycle = lifecycle
            return lifecycle

        return self._once("lifecycle", build)

    # -- fatal conditions --------------------------------------------------------------------------

    def fatal(self, message: str) -> None:
        """A condition the daemon must not run with: log it, stop what started, exit non-zero.

        Also during the service tree's start, which twistd runs before the reactor: the stop then
        happens as soon as the reactor runs, so what already started (the embedded Redis, the
        admin channel) is stopped by the tree's ordinary stop instead of being left behind."""
        log.critical("{message}", message=message)
        if self.exit_code:
            return  # already stopping for an earlier fatal condition
        self.exit_code = 1
        if self.hard_exit_on_fatal:
            self.reactor.addSystemEventTrigger("after", "shutdown", self._hard_exit)
        if self.reactor.running:
            self.reactor.callLater(0, self._stop_reactor)
        else:
            self.reactor.callWhenRunning(self._stop_reactor)

    def _stop_reactor(self) -> None:
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass  # already shutting down

    def _hard_exit(self) -> None:
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(self.exit_code)

