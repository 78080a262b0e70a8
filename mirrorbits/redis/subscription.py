"""Pub/sub subscriptions that survive reconnects and master switches.

A plain SUBSCRIBE is lost silently when its connection drops; the daemon's caches are built on these
messages, so a :class:`Subscription` dials again (on the master the client currently knows, found
through Sentinel), re-subscribes, and calls ``on_reconnect`` so its owner can rebuild what it built
from earlier messages (messages sent meanwhile are gone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter
from twisted.internet import defer, task
from twisted.logger import Logger

from mirrorbits.redis.protocol import RedisProtocol, connect

if TYPE_CHECKING:
    from mirrorbits.redis.connection import RedisClient

log = Logger(namespace="mirrorbits.redis")

PUBSUB_RECONNECTS = Counter("mirrorbits_redis_pubsub_reconnects", "Pub/sub subscriptions opened "
                            "again after their connection was lost")

#: How long SUBSCRIBE (and AUTH before it) may take.
SUBSCRIBE_TIMEOUT = 2.0


class Subscription:
    """A subscription to ``channels``; ``addresses`` overrides the target (the client's sentinel
    watch subscribes on every sentinel at once)."""

    RETRY = 0.5

    def __init__(self, client: RedisClient, channels: Sequence[str],
                 on_message: Callable[[str, str], None], on_reconnect: Callable[[], None] | None,
                 addresses: list[str] | None = None, forget: bool = True) -> None:
        self.client = client
        self.channels = list(channels)
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.addresses = addresses
        self._forget = forget
        self._conns: list[RedisProtocol] = []
        self._stopped = False
        self._had_connection = False
        self._loop: defer.Deferred[None] | None = None
        self._wake: defer.Deferred[None] | None = None
        self.subscribed = False

    def start(self) -> None:
        self._loop = defer.Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda f: log.failure("subscriber loop died", f))

    def stop(self) -> None:
        self._stopped = True
        if self._forget:
            self.client.forget(self)
        self._close()
        if self._wake is not None and not self._wake.called:
            self._wake.cancel()  # cancels the pending delayed call too

    def reconnect(self) -> None:
        """Drop the current connection(s); the loop dials again at once."""
        self._close()

    def _close(self) -> None:
        for conn in self._conns:
            conn.abort()
        self._conns = []

    def _deliver(self, channel: str, message: str) -> None:
        try:
            self.on_message(channel, message)
        except Exception:
            log.failure("pub/sub listener failed on {channel}", channel=channel)

    async def _sleep(self, seconds: float) -> None:
        self._wake = task.deferLater(self.client.reactor, seconds, lambda: None)
        try:
            await self._wake
        except defer.CancelledError:
            pass
        self._wake = None

    async def _open(self) -> list[RedisProtocol]:
        reactor = self.client.reactor
        if self.addresses is not None:
            conns = []
            for addr in self.addresses:
                try:
                    conns.append(await connect(reactor, addr))
                except Exception as e:
                    log.debug("sentinel {a} unreachable: {e}", a=addr, e=e)
            if not conns:
                raise ConnectionError("no sentinel reachable")
            return conns
        await self.client.when_ready()
        settings = self.client.settings
        address = await self.client.current_master()
        conn = await connect(reactor, address)
        try:
            if settings.password:
                await conn.execute("AUTH", settings.password, timeout=SUBSCRIBE_TIMEOUT)
            await conn.execute("PING", timeout=SUBSCRIBE_TIMEOUT)
        except BaseException:
            conn.abort()
            raise
        return [conn]

    async def _run(self) -> None:
        while not self._stopped:
            try:
                conns = await self._open()
            except Exception as e:
                if "LOADING" in str(e):
                    log.warn("Redis is still loading the dataset in memory")
                await self._sleep(self.RETRY)
                continue
            if self._stopped:
                for c in conns:
                    c.abort()
                return
            self._conns = conns
            lost = []
            try:
                for conn in conns:
                    conn.on_message = self._deliver
                    lost.append(conn.when_lost())
                    await conn.subscribe(self.channels, timeout=SUBSCRIBE_TIMEOUT)
            except Exception as e:
                log.debug("subscribe failed: {e}", e=e)
                self._close()
                await self._sleep(self.RETRY)
                continue
            self.subscribed = True
            if self._had_connection:
                PUBSUB_RECONNECTS.inc()
            if self._had_connection and self.on_reconnect is not None:
                try:
                    self.on_reconnect()
                except Exception:
                    log.failure("pub/sub reconnect listener failed")
            self._had_connection = True
            await defer.DeferredList(lost, fireOnOneCallback=True)
            self.subscribed = False
            self._close()
            if not self._stopped:
                log.info("Pubsub disconnected, reconnecting")
                await self._sleep(0.05)
