"""The one object that builds and hands out the daemon's parts (config, Redis, GeoIP, cache...).

Modelled on Synapse's ``HomeServer``: each part is built on first use by a ``get_*`` method, so the
wiring is in one place, tests can build only what they exercise, and nothing is a module global.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.logger import Logger

from mirrorbits.config import Config, ConfigHolder
from mirrorbits.redis.connection import RedisClient, RedisSettings
from mirrorbits.redis.embedded import EmbeddedRedis

log = Logger(namespace="mirrorbits")


class Mirrorbits:
    """The daemon's dependency hub.  ``monitor`` is the Go ``-monitor`` flag."""

    def __init__(self, config: ConfigHolder, reactor: Any = None, *, monitor: bool = True) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.config_holder = config
        self.run_monitor = monitor
        self._built: dict[str, Any] = {}
        #: Non-zero when a fatal condition (unsupported schema...) must end the process with an error.
        self.exit_code = 0
        #: Under twistd there is no way to return an exit status: end the process after shutdown.
        self.hard_exit_on_fatal = True

    @property
    def config(self) -> Config:
        """The current config; re-read on every use so that a reload applies at once."""
        return self.config_holder.current

    def _once(self, name: str, build: Any) -> Any:
        if name not in self._built:
            self._built[name] = build()
        return self._built[name]

    def get_embedded_redis(self) -> EmbeddedRedis | None:
        """The private redis-server, when the config asks for one (``RedisAddress: embedded``)."""
        if not self.config.embedded_redis:
            return None
        return self._once("embedded_redis",
                          lambda: EmbeddedRedis(self.config.DataDir, reactor=self.reactor))

    def redis_settings(self) -> RedisSettings:
        settings = RedisSettings.from_config(self.config)
        embedded = self.get_embedded_redis()
        if embedded is not None:
            from dataclasses import replace

            settings = replace(settings, address=embedded.address, sentinels=())
        return settings

    def get_redis(self) -> RedisClient:
        return self._once("redis", lambda: RedisClient(self.redis_settings, reactor=self.reactor))

    def get_source_scanner(self) -> Any:
        """The local repository scan service (start-up/periodic scans, ``refresh(rehash)``)."""
        from mirrorbits.scan.local import LocalScanner
        from mirrorbits.scan.source_service import SourceScanService

        def build() -> SourceScanService:
            scanner = LocalScanner(self.get_redis(), lambda: self.config, reactor=self.reactor)
            return SourceScanService(scanner, self.config_holder, self.get_redis(), self.reactor,
                                     monitor=self.run_monitor)

        return self._once("source_scanner", build)

    def extra_services(self) -> list[Any]:
        """Services of the other parts (monitor, scans, statistics...), started after Redis."""
        return [self.get_source_scanner(), *self._monitor_services(), *self._redirector_services(),
                *self._admin_services(),
                *self.worker_services()]

    # -- monitor, cluster and mirror scans (engineer I) --------------------------------------

    def get_http_client(self) -> Any:
        """HTTP client of the health checks and trace fetches (``CheckTLSCAFile`` trusted if set)."""
        from mirrorbits.httpclient import HttpClient

        return self._once("http_client", lambda: HttpClient(
            self.reactor, ca_file=getattr(self.config, "CheckTLSCAFile", "") or ""))

    def get_mirror_scanner(self) -> Any:
        """Mirror scans (``scan_mirror(mirror, "rsync"|"ftp")`` for the admin ``scan``)."""
        from mirrorbits.scan.mirror import MirrorScanner

        return self._once("mirror_scanner", lambda: MirrorScanner(
            self.get_redis(), lambda: self.config, self.get_http_client(), self.reactor))

    def get_cluster(self) -> Any:
        """This node's cluster membership (§9); the Redis DB of the announces is read once."""
        from mirrorbits.monitor.cluster import Cluster

        return self._once("cluster", lambda: Cluster(self.get_redis(), self.config.RedisDB,
                                                     reactor=self.reactor))

    def get_monitor(self) -> Any:
        """Health checks and scan scheduling; ``mirror_updated(id)`` takes MIRROR_UPDATE ids."""
        from mirrorbits.monitor.health import HealthChecker
        from mirrorbits.monitor.scheduler import Monitor

        return self._once("monitor", lambda: Monitor(
            self.get_redis(), lambda: self.config, self.get_cluster(),
            HealthChecker(self.get_http_client()), self.get_mirror_scanner(), self.reactor,
            wait_indexed=self.get_source_scanner().when_indexed))

    def _monitor_services(self) -> list[Any]:
        if not self.run_monitor:
            return []
        from mirrorbits.monitor.service import MonitorService

        return [MonitorService(self.get_monitor())]

    # -- administration (engineer J) ---------------------------------------------------------

    def get_admin(self) -> Any:
        """Every admin operation (the CLI channel and the SSH manhole share it)."""
        from mirrorbits.admin.commands import admin_for_app

        return self._once("admin", lambda: admin_for_app(self))

    def get_rpc_service(self) -> Any:
        """The admin channel of the ``mirrorbits`` CLI, on ``RPCListenAddress``."""
        from mirrorbits.admin.rpc import RpcService

        return self._once("rpc", lambda: RpcService(self.get_admin(), lambda: self.config, self.reactor))

    def get_manhole_service(self) -> Any:
        """The SSH manhole, or None when ``ManholeListenAddress`` is empty (the default)."""
        from mirrorbits.admin.manhole import manhole_service

        return self._once("manhole", lambda: manhole_service(self))

    def _admin_services(self) -> list[Any]:
        return [s for s in (self.get_rpc_service(), self.get_manhole_service()) if s is not None]

    # -- redirector (engineer H) -------------------------------------------------------------

    def get_geoip(self) -> Any:
        """The GeoIP databases (http.md §12); reloaded when the files change or on SIGHUP."""
        from mirrorbits.geo import GeoIP

        return self._once("geoip", lambda: GeoIP(self.config.GeoipDatabasePath))

    def get_cache(self) -> Any:
        """The in-memory view of Redis used by the redirector (mirrorbits.cache)."""
        from mirrorbits.cache import MirrorView

        return self._once("cache", lambda: MirrorView(self.get_redis(), self.reactor))

    def get_web_root(self) -> Any:
        """The twisted.web root resource (dispatch + mirror handler)."""
        from mirrorbits.web.resource import RedirectorResource

        return self._once("web_root", lambda: RedirectorResource(self))

    def _redirector_services(self) -> list[Any]:
        from mirrorbits.web.workers import RedirectorService

        return [RedirectorService(self)]

    # -- statistics, download log and pages (engineer L) ----------------------------------------

    def get_download_stats(self) -> Any:
        """Download counters, flushed to ``STATS_*`` every 500 ms (mirrorbits.web.stats)."""
        from mirrorbits.web.stats import DownloadStats

        return self._once("download_stats",
                          lambda: DownloadStats(self.get_redis(), lambda: self.config, self.reactor))

    def get_download_log(self) -> Any:
        """``<LogDir>/downloads.log`` (mirrorbits.web.downloadlog); ``reopen()`` for SIGUSR1."""
        from mirrorbits.web.downloadlog import DownloadLog

        return self._once("download_log", lambda: DownloadLog(self.config_holder))

    def get_pages(self) -> Any:
        """?stats, ?mirrorstats, checksums, ?mirrors and the mirror list page (web.pages)."""
        from mirrorbits.web.pages import Endpoints

        return self._once("pages", lambda: Endpoints(self))

    def get_file_stats_handler(self) -> Any:
        return self.get_pages().file_stats

    def get_mirror_stats_handler(self) -> Any:
        return self.get_pages().mirror_stats

    def get_checksum_handler(self) -> Any:
        return self.get_pages().checksum

    def get_mirrors_json_handler(self) -> Any:
        return self.get_pages().mirrors_json

    def get_mirrorlist_renderer(self) -> Any:
        return self.get_pages().mirrorlist

    def worker_services(self) -> list[Any]:
        """Per-process services of an HTTP worker process: its own counters and log writer."""
        return [self.get_download_stats(), self.get_download_log()]

    def fatal(self, message: str) -> None:
        """A condition the daemon must not run with: log it, stop, exit non-zero."""
        log.critical("{message}", message=message)
        self.exit_code = 1
        if self.hard_exit_on_fatal:
            self.reactor.addSystemEventTrigger("after", "shutdown", self._hard_exit)
        if getattr(self.reactor, "running", False):
            self.reactor.callLater(0, self._stop_reactor)

    def _stop_reactor(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass  # already shutting down

    def _hard_exit(self) -> None:
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(self.exit_code)
