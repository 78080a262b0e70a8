"""``makeService``: the daemon's service tree, shared by ``twistd mirrorbits``, ``mirrorbits.tac`` and
``mirrorbits daemon``.

Start order (children start in the order they were added, and stop in reverse, one after the
other): the lifecycle (signals, upgrade), the embedded Redis (if any), the Redis connection with its
schema check, the other parts, then the HTTP listener.  So on the way down the HTTP side stops
accepting and drains first, the stats flush while Redis is still there, and the embedded Redis stops
last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from mirrorbits.app import Mirrorbits
from mirrorbits.config import ConfigError, ConfigHolder, find_config_path, load_config
from mirrorbits.web.site import make_site

log = Logger(namespace="mirrorbits.service")


@dataclass(frozen=True)
class DaemonOptions:
    """What the command line says (Go ``daemon`` flags / twistd plugin options)."""

    config: str | None = None
    pidfile: str | None = None
    debug: bool = False
    monitor: bool = True
    listen: str | None = None  # overrides ListenAddress (handy for tests and quick starts)


class RedisService(service.Service):
    """Connects to Redis, runs the schema check/upgrade in the background, then opens the gate.

    While the check waits (Redis down, another node upgrading) the HTTP side already serves, from
    fallbacks; a database newer than ours stops the daemon with a message naming the version.
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
        embedded = self.app.get_embedded_redis()
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
        from mirrorbits.redis.upgrade import UnsupportedSchema, check_and_upgrade

        try:
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


class MirrorbitsService(service.MultiService):
    """The root of the daemon's services; ``app`` hands out the parts."""

    name = "mirrorbits"

    #: Bound on each child's stop, so one stuck part cannot hang the daemon's exit forever.
    child_stop_timeout = 30.0

    def __init__(self, app: Mirrorbits) -> None:
        super().__init__()
        self.app = app

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        """Stop the children one after the other, in reverse order (MultiService stops them all at
        once: the stats would flush and Redis close while HTTP requests still run)."""
        service.Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_in_order())

    async def _stop_in_order(self) -> None:
        for child in reversed(list(self)):
            d = defer.maybeDeferred(child.stopService)
            d.addTimeout(self.child_stop_timeout, self.app.reactor)
            try:
                await d
            except defer.TimeoutError:
                log.error("Stopping {name} took more than {t}s; going on", name=child.name,
                          t=self.child_stop_timeout)
            except Exception:
                log.failure("Stopping {name} failed", name=child.name)


def load_options_config(options: DaemonOptions) -> ConfigHolder:
    path = find_config_path(options.config)
    if path is None:
        raise ConfigError("Configuration could not be found.\n\tUse -config <path>")
    config = load_config(path)
    if options.listen:
        config = config.replace(ListenAddress=options.listen)
    for warning in config.warnings:
        log.warn("{warning}", warning=warning)
    return ConfigHolder(config, path)


def makeService(options: DaemonOptions | dict[str, Any], reactor: Any = None,  # noqa: N802
                config: ConfigHolder | None = None) -> MirrorbitsService:
    """Build the daemon.  Raises :class:`ConfigError` for a config that cannot be used."""
    if isinstance(options, dict):
        options = DaemonOptions(**{k: v for k, v in options.items()
                                   if k in DaemonOptions.__dataclass_fields__})
    holder = config or load_options_config(options)
    app = Mirrorbits(holder, reactor, monitor=options.monitor)
    root = MirrorbitsService(app)
    from mirrorbits.lifecycle import register_lifecycle
    from mirrorbits.lifecycle.control import Lifecycle
    from mirrorbits.lifecycle.listener import HTTPListener
    from mirrorbits.lifecycle.upgrade import inherited_listener

    inherited = inherited_listener()  # OLD_FD of a seamless upgrade, or systemd's LISTEN_FDS
    upgrading = inherited is not None and inherited.parent_pid is not None
    http = HTTPListener(make_site(app), lambda: options.listen or holder.current.ListenAddress,
                        app.reactor, inherited=inherited.sock if inherited else None,
                        paused=upgrading, fatal=app.fatal)
    lifecycle = Lifecycle(app, http, listen_override=options.listen, pidfile=options.pidfile,
                          inherited=inherited)
    register_lifecycle(app, lifecycle)
    lifecycle.setServiceParent(root)
    embedded = app.get_embedded_redis()
    if embedded is not None:
        embedded.setServiceParent(root)
    RedisService(app).setServiceParent(root)
    for part in app.extra_services():
        part.setServiceParent(root)
    http.setServiceParent(root)
    return root
