"""``makeService``: the daemon's service tree, shared by ``twistd mirrorbits``, ``mirrorbits.tac``,
``mirrorbits daemon`` and the HTTP worker processes.

Start order (children start in the order they were added, and stop in reverse, one after the
other): the lifecycle (signals, upgrade), the embedded Redis (if any), the Redis connection with its
schema check, the other parts, then the HTTP listener.  So on the way down the HTTP side stops
accepting and drains first, the stats flush while Redis is still there, and the embedded Redis stops
last.

An HTTP worker process (``DaemonOptions.worker``) gets the worker flavour of the same tree: its own
lifecycle, Redis connection, view, download counters and download log, and the listening socket
its parent passed; no embedded Redis, monitor, scans, admin channel or manhole (the main process
runs those), and it waits for the main process's schema check instead of running one.
"""

from __future__ import annotations

from dataclasses import fields

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from mirrorbits.app import DaemonOptions, Mirrorbits, WorkerSpec
from mirrorbits.config import ConfigError, ConfigHolder, find_config_path, load_config
from mirrorbits.lifecycle.signals import EarlySignals
from mirrorbits.reactor import IDaemonReactor
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient
from mirrorbits.redis.upgrade import UnsupportedSchema, check_and_upgrade

__all__ = ["DaemonOptions", "MirrorbitsService", "RedisService", "WorkerSpec", "load_options_config",
           "makeService"]

log = Logger(namespace="mirrorbits.service")

#: How often an HTTP worker asks whether the main process has brought the schema up to date.
SCHEMA_POLL = 0.5


class RedisService(service.Service):
    """Connects to Redis, runs the schema check/upgrade in the background, then opens the gate.

    While the check waits (Redis down, another node upgrading) the HTTP side already serves, from
    fallbacks; a database newer than ours stops the daemon with a message naming the version.  In an
    HTTP worker the main process runs the check: the worker opens its gate once the version is ours.
    """

    name = "redis"

    def __init__(self, app: Mirrorbits) -> None:
        self.app = app
        self._task: defer.Deferred[None] | None = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._task = defer.Deferred.fromCoroutine(self._start())
        self._task.addErrback(lambda f: log.failure("Redis start-up failed", f))

    async def _start(self) -> None:
        embedded = self.app.get_embedded_redis() if self.app.worker is None else None
        if embedded is not None:
            try:
                await embedded.when_ready()
            except defer.CancelledError:
                return  # stopped while starting (SIGTERM during start-up): not a failure
            except Exception as e:
                self.app.fatal(f"cannot start the embedded Redis: {e}")
                return
        client = self.app.get_redis()
        client.start()
        try:
            if self.app.worker is not None:
                await wait_for_current_schema(client, self.app.reactor)
            else:
                await check_and_upgrade(client, reactor=self.app.reactor)
        except defer.CancelledError:
            return  # stopped while checking: not a failure
        except UnsupportedSchema as e:
            self.app.fatal(str(e))
            return
        except Exception as e:
            self.app.fatal(f"database upgrade failed: {e}")
            return
        if not client.ready:
            client.set_ready()

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        if self._task is not None and not self._task.called:
            self._task.cancel()
        return defer.Deferred.fromCoroutine(self.app.get_redis().stop())


async def wait_for_current_schema(redis: RedisClient, reactor: IDaemonReactor) -> None:
    """Until the database's version is ours (the main process runs the check and the upgrade)."""
    while True:
        try:
            version = await redis.execute("GET", schema.DB_VERSION_KEY, unblocked=True)
            if version is not None and str(version) == str(schema.DB_VERSION):
                return
        except Exception as exc:  # noqa: BLE001 - Redis not there yet
            log.debug("worker: waiting for Redis: {e}", e=exc)
        await task.deferLater(reactor, SCHEMA_POLL, lambda: None)


class MirrorbitsService(service.MultiService):
    """The root of the daemon's services; ``app`` hands out the parts."""

    name = "mirrorbits"

    #: Bound on each child's stop, so one stuck part cannot hang the daemon's exit forever.
    child_stop_timeout = 30.0
    #: Bound on the stop of all the children together (the embedded Redis aside): a part waiting on
    #: Redis (a final flush, a lock release, a scan's commit) while Redis restarts, is paused or
    #: redials must not add its own deadline to the others', so the daemon exits within seconds
    #: whatever Redis does.  Above the HTTP drain (5 s) plus the final stats flush (3 s).
    stop_budget = 10.0
    #: What a child still gets once the budget is spent: the synchronous part of a stop (closing
    #: connections, cancelling timers) runs, a wait on Redis is given up.
    child_stop_floor = 1.0
    #: Children with a bound of their own that must not be cut short: the embedded Redis writes its
    #: snapshot on the way down (it is killed after 20 s).
    own_bound = frozenset({"embedded-redis"})

    def __init__(self, app: Mirrorbits) -> None:
        super().__init__()
        self.app = app
        #: Set by the twistd plugin: the observer (at our log level) that twistd should log to.
        self.log_observer: ILogObserver | None = None

    def setServiceParent(self, parent: service.IServiceCollection) -> None:  # noqa: N802
        """Joining twistd's application: give it :attr:`log_observer` (twistd logs to an
        application's ``ILogObserver`` component when it has one)."""
        if (self.log_observer is not None and isinstance(parent, Componentized)
                and parent.getComponent(ILogObserver) is None):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def startService(self) -> None:  # noqa: N802
        """Start the children in order; one that raises ends the daemon through its fatal path,
        so that the parts already started (the embedded Redis...) are stopped, not left behind,
        and the ones after it are never started."""
        service.Service.startService(self)
        for child in self:
            try:
                child.startService()
            except Exception as e:
                log.failure("Starting {name} failed", name=child.name)
                self.app.fatal(f"cannot start {child.name}: {e}")
                return

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        """Stop the children one after the other, in reverse order (MultiService stops them all at
        once: the stats would flush and Redis close while HTTP requests still run)."""
        service.Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_in_order())

    async def _stop_in_order(self) -> None:
        reactor = self.app.reactor
        deadline = reactor.seconds() + self.stop_budget
        for child in reversed(list(self)):
            if not child.running:
                continue  # never started (a fatal start-up failure before it)
            timeout = self.child_stop_timeout
            if child.name not in self.own_bound:
                timeout = min(timeout, max(deadline - reactor.seconds(), self.child_stop_floor))
            d = defer.maybeDeferred(child.stopService)
            d.addTimeout(timeout, reactor)
            try:
                await d
            except defer.TimeoutError:
                log.error("Stopping {name} took more than {t:.1f}s; going on", name=child.name,
                          t=timeout)
            except Exception:
                log.failure("Stopping {name} failed", name=child.name)


def load_options_config(options: DaemonOptions) -> ConfigHolder:
    path = find_config_path(options.config)
    if path is None:
        raise ConfigError("Configuration could not be found.\n\tUse -config <path>")
    config = load_config(path)
    if options.listen:
        config = config.replace(ListenAddress=options.listen)
    if options.worker is None:  # the main process has said them already
        for warning in config.warnings:
            log.warn("{warning}", warning=warning)
    return ConfigHolder(config, path)


def parts(app: Mirrorbits) -> list[service.IService]:
    """The services between Redis and the HTTP listener, in start order."""
    if app.worker is not None:
        found: list[service.IService | None] = [
            app.get_metrics_service(), app.get_redirector(), app.get_download_stats(),
            app.get_download_log()]
        return [part for part in found if part is not None]
    found = [
        app.get_metrics_service(),
        app.get_source_scanner(),
        app.get_monitor_service() if app.run_monitor else None,
        app.get_redirector(),
        app.get_rpc_service(),
        app.get_manhole_service(),
        app.get_download_stats(),
        app.get_stats_retention(),
        app.get_download_log(),
    ]
    return [part for part in found if part is not None]


def makeService(options: DaemonOptions | dict[str, object],  # noqa: N802
                reactor: IDaemonReactor | None = None,
                config: ConfigHolder | None = None,
                early: EarlySignals | None = None) -> MirrorbitsService:
    """Build the daemon (or, with ``options.worker``, an HTTP worker process).

    ``early``: the handlers each entry point installs first thing, which keep the SIGHUP, SIGUSR1
    and SIGUSR2 that arrive before the lifecycle's own handlers (their default action would kill
    the process half-started); the lifecycle acts on them once the daemon serves.

    Raises :class:`ConfigError` for a config that cannot be used."""
    if isinstance(options, dict):
        known = {f.name for f in fields(DaemonOptions)}
        options = DaemonOptions(**{k: v for k, v in options.items() if k in known})  # type: ignore[arg-type]
    holder = config or load_options_config(options)
    app = Mirrorbits(holder, reactor, monitor=options.monitor, options=options)
    root = MirrorbitsService(app)
    lifecycle = app.get_lifecycle()
    lifecycle.early = early
    lifecycle.setServiceParent(root)
    embedded = app.get_embedded_redis() if app.worker is None else None
    if embedded is not None:
        embedded.setServiceParent(root)
    RedisService(app).setServiceParent(root)
    for part in parts(app):
        part.setServiceParent(root)
    app.get_http_listener().setServiceParent(root)
    return root
