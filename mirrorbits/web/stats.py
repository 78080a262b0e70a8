"""Download counting: in-memory aggregation, flushed to the ``STATS_*`` keys every 500 ms.

Why this shape: the redirect path must never wait
for Redis, so :meth:`DownloadStats.count_download` only adds to three dictionaries (file, mirror,
bytes, each per UTC day).  A timer writes them in one atomic Lua script (atomic as a ``MULTI``;
see ``_FLUSH_SCRIPT``) with the Go key names, fields and increments, so Go and Python nodes add up
in the same counters.  While Redis is unusable the counts stay in memory and are retried; a clean stop writes them before the process exits.

Deliberate differences from the Go original:

* fallback redirects are **not** counted under the pseudo-mirror ids ``0``, ``-1``… (Go does):
  they count as downloads of the file (``STATS_FILE*``, ``STATS_TOTAL``) but add nothing
  to ``STATS_MIRROR*`` (pass ``mirror_id=None``);
* Go blocks the request when its 1000-slot queue is full; here counting never blocks (the
  aggregate is bounded by distinct (day, path) pairs, not by requests);
* the ``Range`` de-duplication with ``DOWNLOADED_<sha256>_<path>`` runs in the background; its
  answer decides whether the count is added (a Redis error counts, as in Go).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mirrorbits import faults
from mirrorbits.config import Config
from mirrorbits.gocompat import redis_version_number
from mirrorbits.reactor import default_reactor
from mirrorbits.redis import schema
from mirrorbits.redis.packing import LUA_UNPACKER
from mirrorbits.redis.replies import as_str_list

if TYPE_CHECKING:
    from mirrorbits.redis.connection import RedisClient
    from mirrorbits.web.render import Results

__all__ = ["DownloadStats", "DownloadStatsCollector", "FLUSH_INTERVAL", "utc_day"]

log = Logger(namespace="mirrorbits.stats")

FLUSH_DURATION = Histogram("mirrorbits_downloads_flush_duration_seconds",
                           "Duration of one write of the pending download counters to Redis",
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                    1.0, 2.5))
FLUSH_FAILURES = Counter("mirrorbits_downloads_flush_failures", "Writes of the download counters "
                         "that failed (the counts are kept in memory for the next one)")

#: Go's push ticker.
FLUSH_INTERVAL = 0.5
#: A clean stop keeps trying to write the last counts this long before giving up (and saying so).
STOP_DEADLINE = 3.0
_STOP_RETRY = 0.1
#: ``SET … GET`` exists from this Redis version on.
_SET_GET_VERSION = redis_version_number("6.2.0")

Day = tuple[int, int, int]

# The flush is one Lua script rather than a MULTI of HINCRBYs: a script is atomic like MULTI/EXEC,
# and its arguments are a handful of packed strings, so the cost in this process no longer grows with
# 4-5 commands per distinct path (encoding each argument, then parsing a QUEUED reply per command).
#
#   KEYS: per UTC day, the 4 levels (day, month, year, all time) of STATS_FILE, STATS_MIRROR and
#         STATS_MIRROR_BYTES (12 keys per day); STATS_TOTAL last.
#   ARGV[1]: the STATS_TOTAL increment; then per day two packed strings (``<len>:<bytes>`` items,
#         as in scan.local): (path, count)* and (mirror id, count, bytes)*.
#
# The same key/field/increment set as the MULTI wrote (zero increments are skipped, as before).
# Error semantics follow MULTI: a command refused before anything was written (OOM, READONLY...:
# what MULTI rejects at queueing time, EXECABORT) fails the whole flush, nothing written, so the
# counts are retried without double counting; a per-key data error (WRONGTYPE, not an integer,
# overflow) skips that one increment and the rest is written (returned as a list, for the log).
_FLUSH_SCRIPT = LUA_UNPACKER.encode() + b"""
local wrote, fatal, skipped = false, nil, {}
local function call(cmd, key, a, b)
  local r
  if b then r = redis.pcall(cmd, key, a, b) else r = redis.pcall(cmd, key, a) end
  if type(r) == 'table' and r.err then
    local e = r.err
    if wrote or string.sub(e, 1, 10) == 'WRONGTYPE ' or string.sub(e, 1, 4) == 'ERR ' then
      skipped[#skipped + 1] = key .. ': ' .. e
    else
      fatal = e
    end
  else
    wrote = true
  end
end
if ARGV[1] ~= '0' then call('INCRBY', KEYS[#KEYS], ARGV[1]) end
if fatal then return redis.error_reply(fatal) end
for g = 0, (#ARGV - 1) / 2 - 1 do
  local k = 12 * g
  local nextv = unpacker(ARGV[2 + 2 * g])
  local path = nextv()
  while path do
    local c = nextv()
    for l = 1, 4 do call('HINCRBY', KEYS[k + l], path, c) end
    if fatal then return redis.error_reply(fatal) end
    path = nextv()
  end
  nextv = unpacker(ARGV[3 + 2 * g])
  local mid = nextv()
  while mid do
    local c, b = nextv(), nextv()
    if c ~= '0' then for l = 1, 4 do call('HINCRBY', KEYS[k + 4 + l], mid, c) end end
    if b ~= '0' then for l = 1, 4 do call('HINCRBY', KEYS[k + 8 + l], mid, b) end end
    if fatal then return redis.error_reply(fatal) end
    mid = nextv()
  end
end
return skipped
"""


def utc_day(epoch: float) -> Day:
    """(year, month, day) of a Unix time in UTC: the date the counters are written under."""
    t = time.gmtime(epoch)
    return (t.tm_year, t.tm_mon, t.tm_mday)


def _levels(fn: Callable[[int | None, int | None, int | None], str],
            day: Day) -> tuple[str, str, str, str]:
    y, m, d = day
    return (fn(y, m, d), fn(y, m, None), fn(y, None, None), fn(None, None, None))


class DownloadStats(Service):
    """The download counter of one process (an ``IService``: start the timer, flush on stop).

    ``redis`` is a :class:`~mirrorbits.redis.connection.RedisClient`; ``config`` returns the current
    config (``SameDownloadInterval`` is read on every count, so a reload applies at once).
    """

    name = "stats"

    def __init__(self, redis: RedisClient, config: Callable[[], Config],
                 reactor: IReactorTime | None = None, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.config = config
        self.reactor: IReactorTime = default_reactor() if reactor is None else reactor
        self.clock = clock
        self._files: dict[tuple[Day, str], int] = {}
        self._mirrors: dict[tuple[Day, int], int] = {}
        self._bytes: dict[tuple[Day, int], int] = {}
        self._loop: task.LoopingCall | None = None
        self._busy = False
        self._idle_waiters: list[defer.Deferred[None]] = []
        self._dedupes: set[defer.Deferred[None]] = set()
        self._downgraded = False
        self._day_start = float("inf")  # no day cached yet
        self._day_cached: Day = (1970, 1, 1)

    # -- hot path ------------------------------------------------------------------------------

    def count_download(self, results: Results, ranged: bool, user_agent: bytes | None = None) -> None:
        """The redirector's call after a GET redirect with a non-empty list: the first
        mirror of ``results`` (none for a fallback), the local file size, the client IP, and
        whether a ``Range`` header was sent (then its first ``User-Agent`` line, for the
        de-duplication).  Takes the header values rather than a request: the lean lane answers
        without one."""
        mlist = results.mirror_list
        if not mlist:
            return
        cand = mlist[0].candidate
        mirror_id = None if results.fallback or cand.source is None else cand.id
        info = results.file_info
        if not ranged:
            # Client IP and User-Agent only matter to the Range de-duplication; what ``count``
            # does then, without its call (this runs on every redirect).
            if info.path:
                self._add(self.clock(), info.path, mirror_id, info.size)
            return
        agent = user_agent.decode("utf-8", "surrogateescape") if user_agent is not None else ""
        self.count(info.path, mirror_id, info.size, results.ip, agent, True)

    def count(self, path: str, mirror_id: int | None, size: int, client_ip: str = "",
              user_agent: str = "", ranged: bool = False) -> None:
        """Count one redirected GET of ``path`` (the sanitised path) to ``mirror_id`` (None for a
        fallback).  Never waits: a ``Range`` request is de-duplicated in the background."""
        if not path:
            return  # Go: "stats: file parameter is empty"
        now = self.clock()
        if not ranged:  # the common case: no config look-up at all
            self._add(now, path, mirror_id, size)
            return
        interval = self.config().SameDownloadInterval
        if interval <= 0:
            self._add(now, path, mirror_id, size)
            return
        d = defer.Deferred.fromCoroutine(
            self._dedupe_then_count(now, path, mirror_id, size, client_ip, user_agent, interval))
        self._dedupes.add(d)
        d.addErrback(lambda f: log.failure("download de-duplication failed", f))
        d.addBoth(lambda _: self._dedupes.discard(d))

    def _day(self, now: float) -> Day:
        """``utc_day(now)``, computed once per UTC day (a UTC day is always 86400 POSIX seconds)."""
        start = self._day_start
        if start <= now < start + 86400:
            return self._day_cached
        self._day_start = now - now % 86400
        self._day_cached = utc_day(now)
        return self._day_cached

    def _add(self, now: float, path: str, mirror_id: int | None, size: int) -> None:
        start = self._day_start
        day = self._day_cached if start <= now < start + 86400 else self._day(now)
        k = (day, path)
        self._files[k] = self._files.get(k, 0) + 1
        if mirror_id is not None:
            mk = (day, mirror_id)
            self._mirrors[mk] = self._mirrors.get(mk, 0) + 1
            self._bytes[mk] = self._bytes.get(mk, 0) + size

    async def _dedupe_then_count(self, now: float, path: str, mirror_id: int | None, size: int,
                                 client_ip: str, user_agent: str, interval: int) -> None:
        if await self.first_download(path, client_ip, user_agent, interval):
            self._add(now, path, mirror_id, size)

    async def first_download(self, path: str, client_ip: str, user_agent: str, interval: int) -> bool:
        """Whether a ranged request starts a new download: the ``DOWNLOADED_`` key did
        not exist.  ``SET … GET`` on Redis >= 6.2, else ``GET`` then ``SET`` (the timer is refreshed
        on every ranged hit).  Any Redis error means "count it"."""
        digest = hashlib.sha256(f"{client_ip}/{user_agent}".encode("utf-8", "surrogateescape")).hexdigest()
        key = schema.downloaded_key(digest, path)
        version = self.redis.server_version
        try:
            if version and redis_version_number(version) >= _SET_GET_VERSION:
                previous = await self.redis.execute("SET", key, "1", "GET", "EX", interval)
            else:
                previous = await self.redis.execute("GET", key)
                await self.redis.execute("SET", key, "1", "EX", interval)
        except Exception as e:
            log.debug("download de-duplication: {err}", err=e)
            return True
        return previous is None or previous == ""

    # -- flushing ------------------------------------------------------------------------------

    def pending(self) -> int:
        """Downloads counted but not yet written to Redis."""
        return sum(self._files.values())

    def _script_args(self, files: dict[tuple[Day, str], int], mirrors: dict[tuple[Day, int], int],
                     sizes: dict[tuple[Day, int], int]) -> list[str | bytes] | None:
        """``EVAL`` arguments writing these counts (None: nothing to write).

        Cost is one packed record per distinct (day, path) and (day, mirror), whatever the number
        of requests behind it; each record is a few bytes formatted in C, instead of the 4-5
        commands (~19 arguments) per distinct path that txredisapi encoded one by one.
        """
        days: dict[Day, tuple[list[bytes], list[bytes]]] = {}
        total = 0
        for (day, path), v in files.items():
            if v:
                total += v
                group = days.get(day)
                if group is None:
                    group = days[day] = ([], [])
                p = path.encode("utf-8", "surrogateescape")  # as the connection encodes text
                c = b"%d" % v
                group[0].append(b"%d:%s%d:%s" % (len(p), p, len(c), c))
        for day, mid in mirrors.keys() | sizes.keys():
            v, size = mirrors.get((day, mid), 0), sizes.get((day, mid), 0)
            if v or size:
                group = days.get(day)
                if group is None:
                    group = days[day] = ([], [])
                m, c, b = b"%d" % mid, b"%d" % v, b"%d" % size
                group[1].append(b"%d:%s%d:%s%d:%s" % (len(m), m, len(c), c, len(b), b))
        if not days:
            return None
        keys: list[str] = []
        argv: list[bytes] = [b"%d" % total]
        for day, (frecs, mrecs) in days.items():
            for fn in (schema.stats_file_key, schema.stats_mirror_key, schema.stats_mirror_bytes_key):
                keys.extend(_levels(fn, day))
            argv.append(b"".join(frecs))
            argv.append(b"".join(mrecs))
        keys.append(schema.STATS_TOTAL)
        return ["EVAL", _FLUSH_SCRIPT, b"%d" % len(keys), *keys, *argv]

    def _merge_back(self, files: dict[tuple[Day, str], int], mirrors: dict[tuple[Day, int], int],
                    sizes: dict[tuple[Day, int], int]) -> None:
        for k, v in files.items():
            self._files[k] = self._files.get(k, 0) + v
        for src, dst in ((mirrors, self._mirrors), (sizes, self._bytes)):
            for mk, v in src.items():
                dst[mk] = dst.get(mk, 0) + v

    def flush(self) -> defer.Deferred[bool]:
        """Write what is pending in one transaction; True when nothing is left pending.

        One flush at a time: a call during a flush waits for it, then flushes what came since.
        """
        return defer.Deferred.fromCoroutine(self._flush_serial())

    async def _flush_serial(self) -> bool:
        while self._busy:
            waiter: defer.Deferred[None] = defer.Deferred()
            self._idle_waiters.append(waiter)
            await waiter
        self._busy = True
        try:
            return await self._flush()
        finally:
            self._busy = False
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                w.callback(None)

    async def _flush(self) -> bool:
        files, mirrors, sizes = self._files, self._mirrors, self._bytes
        self._files, self._mirrors, self._bytes = {}, {}, {}
        args = self._script_args(files, mirrors, sizes)
        if args is None:
            return True
        started = perf_counter()
        faults.point("stats.flush.before")
        try:
            reply = await self.redis.execute(*args)
            FLUSH_DURATION.observe(perf_counter() - started)
            faults.point("stats.flush.after")
        except Exception as e:
            FLUSH_FAILURES.inc()
            # Kept for the next tick.  (A connection lost after EXEC was sent but before its reply
            # cannot tell whether Redis applied it; like Go we retry, so that rare batch may count
            # twice rather than never.)
            self._merge_back(files, mirrors, sizes)
            if not self._downgraded:
                log.warn("Uncommited stats kept in-memory: {err}", err=e)
            self._downgraded = True
            return False
        skipped = as_str_list(reply)
        if skipped:
            # Per-key data errors (a STATS_ key of another type...): the rest was written, as with
            # the per-command errors of a MULTI.  Go ignores them silently; say which.
            log.warn("stats: {n} counter writes refused: {errs}", n=len(skipped), errs=skipped[:5])
        self._downgraded = False
        return not (self._files or self._mirrors or self._bytes)

    def _tick(self) -> None:
        if not self._busy:
            self.flush().addErrback(lambda f: log.failure("stats flush failed", f))

    # -- service -------------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(FLUSH_INTERVAL, now=False)

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return defer.Deferred.fromCoroutine(self._final_flush())

    async def _final_flush(self) -> None:
        """Write the last counts before exit (Go: "Saving stats"), retrying for a few seconds."""
        log.info("Saving stats")
        if self._dedupes:
            await defer.DeferredList(list(self._dedupes), consumeErrors=True)
        # Let the services stopped in the same tick (the Redis client) finish their synchronous
        # part first; the client dials again on demand, so the flush below still reaches Redis.
        await task.deferLater(self.reactor, 0, lambda: None)
        deadline = self.reactor.seconds() + STOP_DEADLINE
        while True:
            ok = await self.flush()
            if ok:
                break
            if self.reactor.seconds() >= deadline:
                log.error("{n} downloads could not be saved to Redis before exit", n=self.pending())
                break
            await task.deferLater(self.reactor, _STOP_RETRY, lambda: None)
        if self.redis.stopped:
            # The client was stopped before us and we dialled again: close that connection.
            await self.redis.stop()


class DownloadStatsCollector(Collector):
    """``mirrorbits_downloads_pending``: downloads counted but not yet in Redis, read at scrape time
    (from the scrape's thread: the counters are copied in one C-level call before they are summed)."""

    def __init__(self, stats: DownloadStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("mirrorbits_downloads_pending", "Downloads counted in memory and not "
                                "yet written to Redis", value=sum(list(self.stats._files.values())))
