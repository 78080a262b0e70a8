"""Real daemon processes, a seeded Redis world and a paced HTTP load client, for lifecycle tests.

The load client is plain asyncio over raw sockets (no retries, no connection pool magic), so that
every refused connection, reset, short read or timeout is seen and counted as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorbits.redis import schema
from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
MODTIME = "2025-06-01 06:00:00.123456789 +0000 UTC"
FILE = "/testy.tgz"
MIRROR_URL = "http://example.mirror/"
REDIRECT_TO = "http://example.mirror/testy.tgz"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
#: Logged once the schema check has passed and the view is warm: the daemon answers from its data
#: (earlier it answers from the fallbacks), well after the reactor runs and the signal handlers are
#: in place (under twistd a signal sent earlier would meet the default action).
READY = "Cache warmed"


def seed_world(r: Any) -> None:
    """One file carried by one mirror: every GET of FILE is a counted 302 to the mirror."""
    r.set(schema.DB_VERSION_KEY, str(schema.DB_VERSION))
    r.hset(schema.file_key(FILE), mapping={"size": "48", "modTime": MODTIME, "sha1": "",
                                           "sha256": "", "md5": ""})
    r.sadd(schema.FILES, FILE)
    r.hset(schema.mirror_key(1), mapping={"ID": "1", "name": "m1", "http": MIRROR_URL,
                                          "enabled": "1", "httpUp": "1", "httpsUp": "1"})
    r.hset(schema.MIRRORS, "1", "m1")
    r.sadd(schema.file_mirrors_key(FILE), "1")
    r.hset(schema.file_info_key(1, FILE), mapping={"size": "48", "modTime": MODTIME})


def write_config(tmp: Path, port: int, redis: RedisServer | str, extra: str = "") -> Path:
    """The world's config; ``redis`` is the server or an address (a proxy's, ``embedded``)."""
    address = redis if isinstance(redis, str) else redis.address
    repo = tmp / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / FILE.lstrip("/")).write_bytes(b"x" * 48)
    conf = tmp / "mirrorbits.conf"
    conf.write_text(
        f"Repository: {repo}\nRedisAddress: {address}\nDataDir: {tmp / 'data'}\n"
        f"ListenAddress: 127.0.0.1:{port}\nRPCListenAddress: 127.0.0.1:{free_port()}\n"
        f"GeoipDatabasePath: {tmp / 'nogeoip'}\n{extra}")
    return conf


def go_style(conf: Path, pidfile: Path) -> list[str]:
    return [sys.executable, "-m", "mirrorbits", "daemon", "-config", str(conf),
            "-p", str(pidfile), "-monitor=false"]


def twistd(conf: Path) -> list[str]:
    return TWISTD + ["-n", "--pidfile=", "mirrorbits", "--no-monitor", "--config", str(conf)]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in ("OLD_FD", "OLD_NAME", "OLD_PPID", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET"):
        e.pop(key, None)
    e.update(extra)
    return e


class Daemon:
    """One daemon started by the test; later generations are followed through the pid file."""

    def __init__(self, args: list[str], cwd: Path, *, pidfile: Path | None = None,
                 extra_env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()) -> None:
        self.logpath = cwd / "daemon.log"
        self.pidfile = pidfile
        with open(self.logpath, "ab") as log:
            self.proc = processes.spawn(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                        env=env(**(extra_env or {})), pass_fds=pass_fds)

    def output(self) -> str:
        return self.logpath.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} (x{count}) not logged in {timeout}s:\n{self.output()[-4000:]}")
            time.sleep(0.05)

    def current_pid(self) -> int:
        assert self.pidfile is not None
        return int(self.pidfile.read_text())

    def wait_pid_change(self, old: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                pid = self.current_pid()
                if pid != old:
                    return pid
            if time.monotonic() > deadline:
                raise AssertionError(f"pid file still {old} after {timeout}s:\n{self.output()[-4000:]}")
            time.sleep(0.05)


def wait_exit(pid: int, timeout: float = 20.0) -> int:
    """Exit status of ``pid``, a child of ours (directly or through :func:`subreaper`)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still running after {timeout}s")
        time.sleep(0.05)


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """Orphaned daemons (an upgraded child whose parent exited) become our children, so their exit
    status can be collected and they do not linger as zombies."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


# -------------------------------------------------------------------------------------------------
# The load client


@dataclass
class Results:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    locations: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    per_second: Counter[int] = field(default_factory=Counter)
    started: float = 0.0
    ended: float = 0.0
    #: When (``time.monotonic()``) the server closed a reused keep-alive connection before sending
    #: any byte of the next answer: clients retry such a request on a new connection (an idle
    #: connection may be closed by the server at any time), so with ``retry_idle_close`` it is
    #: recorded here and retried instead of counted as an error.
    idle_closes: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.total / max(1e-9, self.ended - self.started)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if self.errors[kind] <= 5:  # a few of each kind: a rare kind is not crowded out
            self.examples.append(f"{kind}: {detail}")


class _Closed(Exception):
    def __init__(self, message: str, partial: int) -> None:
        super().__init__(message)
        self.partial = partial


async def _read_response(reader: asyncio.StreamReader,
                         head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise _Closed(f"connection closed after {len(e.partial)} bytes of response",
                      len(e.partial)) from None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers and not head_only:
        body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


class LoadClient:
    """Paced HTTP/1.1 load on one port: ``keepalive`` connections reusing their socket and
    ``fresh`` workers opening a new connection per request (so accepts go on all the time)."""

    def __init__(self, port: int, path: str = FILE, *, rate: float = 600.0, keepalive: int = 4,
                 fresh: int = 4, timeout: float = 10.0, host: str = "127.0.0.1",
                 method: str = "GET", retry_idle_close: bool = False) -> None:
        self.port = port
        self.retry_idle_close = retry_idle_close
        self.method = method
        self.host = host
        self.path = path
        self.rate = rate
        self.keepalive = keepalive
        self.fresh = fresh
        self.timeout = timeout
        self.results = Results()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def request_bytes(self, close: bool) -> bytes:
        extra = "Connection: close\r\n" if close else ""
        return (f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"User-Agent: lifecycle-load\r\n{extra}\r\n").encode()

    def _record(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.results.per_second[int(time.monotonic() - self.results.started)] += 1
        self.results.statuses[status] += 1
        self.results.locations[headers.get("location", "")] += 1
        if status != 302:
            self.results.bodies[body[:60].decode(errors="replace")] += 1

    async def _keepalive_worker(self, interval: float, offset: float) -> None:
        reader = writer = None
        reused = False  # the connection already carried an answer
        retry = False
        next_at = time.monotonic() + offset
        while not self._stop.is_set():
            if not retry:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
            retry = False
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port), self.timeout)
                    reused = False
                assert reader is not None
                writer.write(self.request_bytes(close=False))
                try:
                    status, headers, body = await asyncio.wait_for(_read_response(reader),
                                                                   self.timeout)
                except (_Closed, ConnectionResetError, BrokenPipeError) as e:
                    if not (self.retry_idle_close and reused
                            and getattr(e, "partial", 0) == 0):
                        raise
                    # closed by the server while idle: retried on a new connection, as clients do
                    self.results.idle_closes.append(time.monotonic())
                    writer.close()
                    reader = writer = None
                    retry = True
                    continue
                reused = True
                self._record(status, headers, body)
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader = writer = None
            except ConnectionRefusedError as e:
                self.results.error("refused", str(e))
                reader = writer = None
            except TimeoutError:
                self.results.error("timeout", "keep-alive request")
                reader = writer = None
            except (_Closed, ConnectionError, OSError) as e:
                self.results.error("failed", f"keep-alive: {type(e).__name__}: {e}")
                reader = writer = None
        if writer is not None:
            writer.close()

    async def _fresh_worker(self, interval: float, offset: float) -> None:
        next_at = time.monotonic() + offset
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout)
            except ConnectionRefusedError as e:
                self.results.error("refused", str(e))
                continue
            except (TimeoutError, OSError) as e:
                self.results.error("connect", f"{type(e).__name__}: {e}")
                continue
            try:
                writer.write(self.request_bytes(close=True))
                status, headers, body = await asyncio.wait_for(_read_response(reader), self.timeout)
                self._record(status, headers, body)
            except TimeoutError:
                self.results.error("timeout", "fresh request")
            except (_Closed, ConnectionError, OSError) as e:
                self.results.error("failed", f"fresh: {type(e).__name__}: {e}")
            finally:
                writer.close()

    async def _main(self) -> None:
        n = self.keepalive + self.fresh
        interval = n / self.rate
        tasks = [self._keepalive_worker(interval, i * interval / n) for i in range(self.keepalive)]
        tasks += [self._fresh_worker(interval, (self.keepalive + i) * interval / n)
                  for i in range(self.fresh)]
        self.results.started = time.monotonic()
        await asyncio.gather(*tasks)
        self.results.ended = time.monotonic()

    def start(self) -> LoadClient:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Results:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(self.timeout + 5)
        return self.results


def burst(port: int, n: int, concurrency: int = 50, path: str = FILE,
          on_progress: Callable[[int], None] | None = None, method: str = "GET") -> Results:
    """``n`` requests as fast as possible over ``concurrency`` fresh-connection workers."""
    results = Results()
    client = LoadClient(port, path, method=method)

    async def one(queue: asyncio.Queue[int]) -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError as e:
                results.error("refused", str(e))
                continue
            except OSError as e:  # e.g. reset during the handshake: counted, not a crash
                results.error("connect", f"{type(e).__name__}: {e}")
                continue
            try:
                writer.write(client.request_bytes(close=True))
                status, headers, body = await asyncio.wait_for(
                    _read_response(reader, head_only=method == "HEAD"), 10)
                results.statuses[status] += 1
                results.locations[headers.get("location", "")] += 1
            except (TimeoutError, _Closed, ConnectionError, OSError) as e:
                results.error("failed", f"{type(e).__name__}: {e}")
            finally:
                writer.close()
            if on_progress is not None:
                on_progress(sum(results.statuses.values()))

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        results.started = time.monotonic()
        await asyncio.gather(*(one(queue) for _ in range(concurrency)))
        results.ended = time.monotonic()

    asyncio.run(main())
    return results


def redirects(port: int, n: int = 20, wait: float = 10.0) -> bool:
    """All of ``n`` requests redirected to the mirror (waiting up to ``wait`` s for the daemon's
    view of Redis to be warm, right after a start).  HEAD requests: never counted as downloads."""
    deadline = time.monotonic() + wait
    while True:
        r = burst(port, n, concurrency=4, method="HEAD")
        if r.statuses[302] == n and set(r.locations) == {REDIRECT_TO}:
            return True
        if time.monotonic() > deadline or r.errors:
            print(f"redirects({port}): {dict(r.statuses)} {r.examples}")
            return False
        time.sleep(0.1)


def stats_total(redis: RedisServer) -> int:
    return int(redis.client().get("STATS_TOTAL") or 0)


def check_load_results(results: Any, redis: Any, out: str) -> None:
    """What every run under load must show: >= 500 req/s (unless other work took the CPU, said so),
    no failed request, only redirects to the mirror, and every 302 counted in Redis."""
    load_avg = os.getloadavg()[0]
    if load_avg > 1.5 * (os.cpu_count() or 1):
        # Other work on the machine took the CPU: the rate says nothing about the daemon then.
        print(f"NOT checking the >= 500 req/s rate: load average {load_avg:.1f} on "
              f"{os.cpu_count()} CPUs (achieved {results.rate:.0f}/s)")
    else:
        assert results.rate >= 500, (load_avg, sorted(results.per_second.items()))
    assert not results.errors, (results.examples, out[-3000:])
    assert set(results.statuses) == {302} and set(results.locations) == {REDIRECT_TO}, results
    # every counted download reached Redis, including the last ones of each old generation
    assert stats_total(redis) == results.statuses[302], out[-3000:]
