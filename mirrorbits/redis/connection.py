"""The daemon's Redis client: one command connection, the readiness gate, failover handling.

Every Redis access of a process goes through one :class:`RedisClient`: commands, pipelines and
transactions, the redirector view's bulk reads, and pub/sub (:mod:`mirrorbits.redis.subscription`).
It owns the dialling because the details matter to a download redirector (measured against Redis 7
with Sentinel):

* every dial discovers the master (Sentinel mode, :mod:`mirrorbits.redis.sentinel`) or uses
  ``RedisAddress`` (single mode), checks ``ROLE`` is ``master`` and reads the server version, as the
  Go original does;
* the sentinels' ``+switch-master`` channel is watched, and a ``READONLY``/connection error drops the
  connection, so the next command — of any caller — re-discovers the master at once; subscriptions
  move to the new master too;
* commands issued before the schema check has finished fail with :class:`NotReady`, and while Redis
  is unreachable they fail fast with :class:`Unreachable` instead of queueing, with dials spaced by a
  capped exponential backoff;
* every command has a deadline (:data:`COMMAND_TIMEOUT` unless the caller gives its own), which also
  bounds the wait for a dial: a paused or hung server fails the caller with :class:`CommandTimeout`
  instead of holding it forever;
* a connection that has owed a reply for :data:`DEAD_LINK_SILENCE` seconds without receiving a byte
  is taken for a dead link (a partition: Redis up, nothing crossing, nothing closed). It is aborted
  and the client enters the failing state, logged once, as when Redis stops: commands fail fast and
  the recovery loop dials until the link is back. Aborting (a TCP reset) also makes the kernel drop
  what it had not had acknowledged, so a command given up on is not delivered after the heal. A
  shorter silence (a paused server, a slow script) only fails the commands whose deadline passed.

The wire protocol is :mod:`mirrorbits.redis.protocol` (txredisapi writes the commands, our parser
reads the replies; :mod:`mirrorbits.redis.txcompat` is the seam); replies are typed there
(:data:`~mirrorbits.redis.protocol.Reply`) and read with :mod:`mirrorbits.redis.replies` or the
typed helpers here (:meth:`RedisClient.hgetall`...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits import gocompat
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.redis import sentinel
from mirrorbits.redis.errors import (
    CommandTimeout,
    NotReady,
    RedisUnavailable,
    ResponseError,
    Unreachable,
    UnsupportedRedis,
)
from mirrorbits.redis.protocol import Arg, Command, RedisProtocol, Reply, connect, parse_address
from mirrorbits.redis.replies import as_int, as_list, as_str, as_str_list, hash_dict
from mirrorbits.redis.subscription import Subscription

if TYPE_CHECKING:
    from mirrorbits.config import Config

__all__ = [
    "COMMAND_TIMEOUT",
    "CommandTimeout",
    "NotReady",
    "RedisClient",
    "RedisSettings",
    "RedisUnavailable",
    "Reply",
    "ResponseError",
    "Subscription",
    "Unreachable",
    "UnsupportedRedis",
    "default_data_dir",
    "parse_address",
]

log = Logger(namespace="mirrorbits.redis")

#: Cap of the backoff between two dials while Redis is unreachable.
MAX_BACKOFF = 2.0
#: Longest pause of commands while a failover runs (Sentinel's failover-timeout is usually larger,
#: but the promotion itself takes about a second).
FAILOVER_PAUSE = 10.0
#: Deadline of a command or pipeline unless its caller gives one: far above what any of the daemon's
#: commands takes on a healthy server (the largest scripts run for tens of milliseconds), so only a
#: hung server trips it.
COMMAND_TIMEOUT = 15.0
#: Silence (a reply owed, no byte received) after which the command connection is taken for dead:
#: longer than Redis' own pauses (a fork for a snapshot, the 5 s ``lua-time-limit`` of a slow
#: script), far shorter than TCP's own retransmission give-up (~15 min).
DEAD_LINK_SILENCE = 6.0
#: Deadline of each step of a dial (AUTH, SELECT, ROLE, INFO): a server that accepts connections but
#: does not answer must not hold the dial.
SETUP_TIMEOUT = 2.0

REDIS_UP = Gauge("mirrorbits_redis_up", "1 while the command connection to the Redis master is open")
REDIS_CONNECTS = Counter("mirrorbits_redis_connections", "Successful dials of the Redis master "
                         "(the first one and every reconnect)")
REDIS_DIAL_FAILURES = Counter("mirrorbits_redis_dial_failures", "Dials of Redis that failed")
REDIS_COMMAND_DURATION = Histogram(
    "mirrorbits_redis_command_duration_seconds",
    "Round trip of one command or pipeline, from the request to its last reply",
    buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
REDIS_ERRORS = Counter("mirrorbits_redis_errors", "Commands that failed, by reason (unavailable: "
                       "no usable connection or no answer in time; reply: an error reply)", ["reason"])
REDIS_UNAVAILABLE = REDIS_ERRORS.labels("unavailable")
REDIS_ERROR_REPLIES = REDIS_ERRORS.labels("reply")
SENTINEL_FAILOVERS = Counter("mirrorbits_redis_sentinel_failovers", "Master switches announced "
                             "by the sentinels (+switch-master)")


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is.  Built from the config at dial time, so a reload applies to new connections."""

    address: str = "127.0.0.1:6379"
    password: str = ""
    db: int = 0
    sentinels: tuple[str, ...] = ()
    master_name: str = ""

    @classmethod
    def from_config(cls, config: Config) -> RedisSettings:
        return cls(
            address=config.RedisAddress,
            password=config.RedisPassword,
            db=config.RedisDB,
            sentinels=tuple(s.Host for s in config.RedisSentinels),
            master_name=config.RedisSentinelMasterName,
        )



class RedisClient:
    """The process's Redis: one multiplexed command connection plus subscribers.

    Redis is single-threaded, so one pipelined connection carries the load of a whole process; a
    transaction is written in one piece (MULTI, commands, EXEC) so commands of other callers cannot
    interleave with it.
    """

    def __init__(self, settings: Callable[[], RedisSettings],
                 reactor: IDaemonReactor | None = None) -> None:
        self.reactor: IDaemonReactor = reactor if reactor is not None else default_reactor()
        self._settings = settings
        self._conn: RedisProtocol | None = None
        self._dialing = False
        self._dial_waiters: list[defer.Deferred[RedisProtocol]] = []
        self._last_failure: float = 0.0
        self._backoff = 0.0
        self._last_error: Exception | None = None
        self.failing = False
        self.ready = False
        self._ready_waiters: list[defer.Deferred[None]] = []
        self.master_address: str = ""
        self.server_version: str = ""
        self._subscriptions: list[Subscription] = []
        self._sentinel_watch: Subscription | None = None
        self._recovery: task.LoopingCall | None = None
        self._stopped = False
        self._connection_listeners: list[Callable[[], None]] = []
        self._failover_until = 0.0
        self._reconnect_call: IDelayedCall | None = None
        #: The current outage was logged: the next lines are the reconnection, not a line per dial.
        self._outage_logged = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._stopped = False
        self._recovery = task.LoopingCall(self._recover)
        self._recovery.clock = self.reactor
        self._recovery.start(1.0, now=False)
        self._watch_sentinels()

    @property
    def stopped(self) -> bool:
        """True from :meth:`stop` until the next :meth:`start`: a caller that still dials (a final
        flush at shutdown) knows it must close the connection it opened itself."""
        return self._stopped

    async def stop(self) -> None:
        self._stopped = True
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        if self._recovery is not None and self._recovery.running:
            self._recovery.stop()
        for sub in list(self._subscriptions):
            sub.stop()
        if self._sentinel_watch is not None:
            self._sentinel_watch.stop()
            self._sentinel_watch = None
        self._drop_connection()

    def set_ready(self) -> None:
        """Open the readiness gate (called once the schema version is known to be current)."""
        self.ready = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def when_ready(self) -> defer.Deferred[None]:
        if self.ready:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    def on_new_connection(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every successful dial of the command connection."""
        self._connection_listeners.append(listener)

    @property
    def settings(self) -> RedisSettings:
        return self._settings()

    async def current_master(self) -> str:
        """The address of the master the command connection talks to, dialling (and asking the
        sentinels) first if there is no connection."""
        await self._get_connection()
        return self.master_address or self._settings().address

    # -- dialling ------------------------------------------------------------------------------

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    def _usable(self) -> RedisProtocol | None:
        conn = self._conn
        return conn if conn is not None and conn.usable else None

    async def _get_connection(self, timeout: float | None = None) -> RedisProtocol:
        """The usable command connection, dialling if there is none. While Redis is failing, a
        caller never waits for a dial (the recovery loop's or its own): it fails fast with
        :class:`Unreachable`. Otherwise it waits at most ``timeout`` seconds for the dial."""
        if self._failover_until:
            if self.reactor.seconds() < self._failover_until:
                raise Unreachable("Redis master failover in progress")
            self._failover_until = 0.0
        conn = self._usable()
        if conn is not None:
            return conn
        if not self._dialing:
            now = self.reactor.seconds()
            if self.failing and now - self._last_failure < self._backoff:
                raise Unreachable(str(self._last_error or "redis endpoint unreachable"))
            self._dialing = True
            defer.Deferred.fromCoroutine(self._dial_and_notify())
            if not self._dialing:  # the dial finished synchronously
                conn = self._usable()
                if conn is not None:
                    return conn
                raise Unreachable(str(self._last_error or "redis endpoint unreachable"))
        if self.failing:
            raise Unreachable(str(self._last_error or "redis endpoint unreachable"))
        waiter: defer.Deferred[RedisProtocol] = defer.Deferred()
        self._dial_waiters.append(waiter)
        if timeout is not None:
            waiter.addTimeout(timeout, self.reactor)
        try:
            return await waiter
        except defer.TimeoutError:
            raise CommandTimeout(f"Redis did not answer within {timeout:g} s") from None

    async def _dial_and_notify(self) -> None:
        """One dial at a time; everyone who asked for a connection meanwhile gets its result."""
        error: BaseException | None = None
        conn: RedisProtocol | None = None
        try:
            conn = await self._dial()
        except BaseException as e:  # handed to the waiters
            error = e
        self._dialing = False
        waiters, self._dial_waiters = self._dial_waiters, []
        for w in waiters:
            if conn is not None:
                w.callback(conn)
            else:
                w.errback(Failure(error))

    async def _dial(self) -> RedisProtocol:
        settings = self._settings()
        try:
            conn, address = await self._dial_master(settings)
        except UnsupportedRedis:
            raise
        except Exception as e:
            err = e if isinstance(e, Unreachable) else Unreachable(str(e) or e.__class__.__name__)
            self._enter_failing(err)
            REDIS_DIAL_FAILURES.inc()
            raise err from None
        self._conn = conn
        REDIS_CONNECTS.inc()
        REDIS_UP.set(1)
        self._backoff = 0.0
        if self.failing or address != self.master_address:
            log.info("Connected to redis master {addr} (version {v})", addr=address,
                     v=self.server_version or "unknown")
        self.failing = False
        self._outage_logged = False
        self.master_address = address
        conn.when_lost().addCallback(self._lost, conn)
        for listener in list(self._connection_listeners):
            try:
                listener()
            except Exception:
                log.failure("connection listener failed")
        return conn

    def _enter_failing(self, err: Exception) -> None:
        """Redis cannot be used: fail commands fast (spacing dials by the backoff) and say so once
        per outage."""
        self._last_error = err
        self._last_failure = self.reactor.seconds()
        self._backoff = min(MAX_BACKOFF, max(0.05, self._backoff * 2))
        if not self._outage_logged:
            log.error("Redis: {err}", err=err)
            self._outage_logged = True
        self.failing = True
        REDIS_UP.set(0)

    def _check_link(self, conn: RedisProtocol) -> None:
        """If ``conn`` has owed a reply in silence for :data:`DEAD_LINK_SILENCE` seconds, the link
        is gone: abort it (what was not acknowledged is dropped, not delivered later) and leave the
        rest to the recovery loop."""
        silence = conn.silent_for()
        if self._conn is not conn or silence < DEAD_LINK_SILENCE:
            return
        self._enter_failing(Unreachable(f"no answer from {self.master_address or 'Redis'} for "
                                        f"{silence:.0f} s, connection dropped"))
        self._drop_connection()

    def _lost(self, _: None, conn: RedisProtocol) -> None:
        if self._conn is conn:
            self._conn = None
            REDIS_UP.set(0)
        self._reconnect_soon()

    def _reconnect_soon(self) -> None:
        """Reconnect in the background, so the link is back before the next request needs it; if
        Redis stays away, the failure state and the 1 s recovery loop take over."""
        if not self._stopped and (self._reconnect_call is None or not self._reconnect_call.active()):
            self._reconnect_call = self.reactor.callLater(0.05, self._reconnect)

    def _reconnect(self) -> None:
        self._reconnect_call = None
        if self._stopped or self._usable() is not None or self._dialing:
            return
        d = defer.Deferred.fromCoroutine(self._get_connection())
        d.addErrback(lambda f: None)

    async def _dial_master(self, settings: RedisSettings) -> tuple[RedisProtocol, str]:
        if settings.sentinels:
            if not settings.master_name:
                log.error("Config: RedisSentinelMasterName cannot be empty!")
            else:
                for address in settings.sentinels:
                    try:
                        master = await sentinel.ask_master(self.reactor, address, settings.master_name)
                        conn = await self._open_master(master, settings, want_version=False)
                        return conn, master
                    except UnsupportedRedis:
                        raise
                    except Exception as e:
                        log.debug("sentinel {s}: {e}", s=address, e=e)
                if not self.failing:
                    log.warn("No redis master available, trying using the configured RedisAddress "
                             "as fallback")
        if not settings.address:
            raise Unreachable("redis endpoint unreachable")
        conn = await self._open_master(settings.address, settings, want_version=True)
        return conn, settings.address

    async def _open_master(self, address: str, settings: RedisSettings, *,
                           want_version: bool) -> RedisProtocol:
        conn = await connect(self.reactor, address)
        try:
            if settings.password:
                await conn.execute("AUTH", settings.password, timeout=SETUP_TIMEOUT)
            await conn.execute("SELECT", settings.db, timeout=SETUP_TIMEOUT)
            if sentinel.role_of(await conn.execute("ROLE", timeout=SETUP_TIMEOUT)) != "master":
                raise Unreachable(f"{address} is not a master")
            if want_version:
                info = await conn.execute("INFO", "server", timeout=SETUP_TIMEOUT)
                for line in str(info).splitlines():
                    if line.startswith("redis_version:"):
                        self.server_version = line.split(":", 1)[1].strip()
                if self.server_version and \
                        gocompat.redis_version_number(self.server_version) < \
                        gocompat.redis_version_number("3.2.0"):
                    raise UnsupportedRedis("Unsupported Redis version, please upgrade to Redis >= 3.2.0")
            else:
                self.server_version = ""
        except BaseException:
            conn.abort()
            raise
        return conn

    def _recover(self) -> None:
        """Every second: drop a connection silent for too long; while Redis is failing, force a
        dial and log if it fails."""
        if self._conn is not None:
            self._check_link(self._conn)
        if not self.failing or self._stopped or self._dialing:
            return
        self._backoff = 0.0
        d = defer.Deferred.fromCoroutine(self._get_connection())

        def failed(f: Failure) -> None:
            if not self._outage_logged:
                log.warn("Database is down: {err}", err=f.getErrorMessage())
                self._outage_logged = True

        d.addErrback(failed)

    # -- commands ------------------------------------------------------------------------------

    def _check_gate(self, unblocked: bool) -> None:
        if not unblocked and not self.ready:
            raise NotReady()

    async def execute(self, *args: Arg, unblocked: bool = False,
                      timeout: float = COMMAND_TIMEOUT) -> Reply:
        """Run one command; an error reply raises :class:`ResponseError`, no usable Redis (down,
        not ready, no answer within ``timeout`` seconds) raises :class:`RedisUnavailable`."""
        (reply,) = await self.pipeline([args], unblocked=unblocked, timeout=timeout)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def pipeline(self, commands: Iterable[Command], *, unblocked: bool = False,
                       timeout: float = COMMAND_TIMEOUT) -> list[Reply]:
        """Send many commands in one write; returns their replies (errors as ResponseError values)."""
        self._check_gate(unblocked)
        started = perf_counter()
        conn: RedisProtocol | None = None
        try:
            begun = self.reactor.seconds()
            conn = await self._get_connection(timeout)
            sent = self.reactor.seconds()
            replies = await conn.request(commands, max(0.0, timeout - (sent - begun)))
        except CommandTimeout:
            REDIS_UNAVAILABLE.inc()
            if conn is not None:
                self._check_link(conn)
            raise
        except RedisUnavailable:
            REDIS_UNAVAILABLE.inc()
            raise
        REDIS_COMMAND_DURATION.observe(perf_counter() - started)
        for r in replies:
            if isinstance(r, ResponseError):
                REDIS_ERROR_REPLIES.inc()
                self._check_error(conn, r)
        return replies

    async def transaction(self, commands: Iterable[Command], *, unblocked: bool = False,
                          timeout: float = COMMAND_TIMEOUT) -> list[Reply]:
        """MULTI/EXEC in one write; returns the EXEC reply (per-command errors as values)."""
        batch: list[Command] = [("MULTI",)]
        batch.extend(commands)
        batch.append(("EXEC",))
        replies = await self.pipeline(batch, unblocked=unblocked, timeout=timeout)
        for r in replies[:-1]:
            if isinstance(r, ResponseError):
                # A queueing error (wrong arity...) aborts the whole transaction: EXECABORT.
                raise r
        result = replies[-1]
        if isinstance(result, ResponseError):
            raise result
        return as_list(result)

    def _check_error(self, conn: RedisProtocol, err: ResponseError) -> None:
        text = str(err)
        if text.startswith("READONLY") or text.startswith("MASTERDOWN"):
            # We are talking to a demoted master: re-discover on the next command.
            log.warn("Redis {addr} is no longer the master ({e}), re-discovering",
                     addr=self.master_address, e=text)
            if self._conn is conn:
                self._drop_connection()

    # -- typed helpers ---------------------------------------------------------------------------

    async def hgetall(self, key: str, *, unblocked: bool = False) -> dict[str, str]:
        """The fields of hash ``key`` (empty when it does not exist)."""
        return hash_dict(await self.execute("HGETALL", key, unblocked=unblocked))

    async def smembers(self, key: str, *, unblocked: bool = False) -> list[str]:
        """The members of set ``key``, in Redis' order."""
        return as_str_list(await self.execute("SMEMBERS", key, unblocked=unblocked))

    async def get(self, key: str, *, unblocked: bool = False) -> str | None:
        return as_str(await self.execute("GET", key, unblocked=unblocked))

    async def publish(self, channel: str, message: str, *, unblocked: bool = False) -> int:
        return as_int(await self.execute("PUBLISH", channel, message, unblocked=unblocked))

    # -- pub/sub -------------------------------------------------------------------------------

    def subscribe(self, channels: Sequence[str], on_message: Callable[[str, str], None],
                  on_reconnect: Callable[[], None] | None = None) -> Subscription:
        """Subscribe on the current master and keep the subscription alive across reconnects."""
        sub = Subscription(self, channels, on_message, on_reconnect)
        self._subscriptions.append(sub)
        sub.start()
        return sub

    def forget(self, sub: Subscription) -> None:
        """``sub`` stopped: no longer move it to a new master."""
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def _watch_sentinels(self) -> None:
        settings = self._settings()
        if not settings.sentinels or not settings.master_name:
            return
        self._sentinel_watch = Subscription(self, sentinel.EVENT_CHANNELS, self._sentinel_event, None,
                                            addresses=list(settings.sentinels), forget=False)
        self._sentinel_watch.start()

    def _sentinel_event(self, channel: str, message: str) -> None:
        event = sentinel.read_event(channel, message, self._settings().master_name)
        if event is None:
            return
        if event.kind == "switched":
            SENTINEL_FAILOVERS.inc()
            log.info("Sentinel: master {name} switched to {new}", name=event.master_name,
                     new=event.new_address)
            self._failover_until = 0.0
            self._drop_connection()
            self._reconnect_soon()
            for sub in list(self._subscriptions):
                sub.reconnect()
        elif event.kind == "started":
            if not self._failover_until:
                log.warn("Sentinel: failover of {name} started, pausing Redis commands",
                         name=event.master_name)
            # A write acknowledged by the old master from now on would be lost when it is demoted:
            # stop using it until +switch-master names the new one (or the failover is aborted).
            self._failover_until = self.reactor.seconds() + FAILOVER_PAUSE
            self._drop_connection()
        elif event.kind == "aborted" and self._failover_until:
            log.warn("Sentinel: failover of {name} aborted ({event})", name=event.master_name,
                     event=event.channel)
            self._failover_until = 0.0


def default_data_dir() -> str:
    """Where the embedded Redis keeps its data unless the config says otherwise."""
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "mirrorbits")
