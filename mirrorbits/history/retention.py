"""Pruning the dated statistics keys, and measuring what every family of them costs in Redis.

Why whole keys: the per-day per-file hash (``STATS_FILE_YYYY_MM_DD``) holds one field per file that was
downloaded that day, so with a million files each day adds a hash of up to a million fields that the
Go original keeps forever.  Retention deletes the day and month keys that left their window, never the
yearly and all-time keys (which hold the same counts), so totals stay exact.

Every step is bounded: keys are found with ``SCAN`` (never ``KEYS``), measured with ``MEMORY USAGE``
(sampled, constant time) and deleted with ``UNLINK`` (the memory is freed in a background thread of
Redis) in batches of :data:`BATCH` keys, so no command blocks Redis for long, even on a huge hash.
A Go node sharing the Redis keeps counting into the current keys, which are never in the prune set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mirrorbits.config import Config, StatsRetention
from mirrorbits.history.keys import SCAN_PATTERN, Family, Level, expired, parse_stats_key
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, RedisUnavailable, ResponseError
from mirrorbits.redis.locks import GenericLock
from mirrorbits.redis.replies import as_int, as_list, as_str_list

__all__ = ["BATCH", "FamilyUsage", "KeySize", "PruneReport", "RetentionService", "prune", "scan_stats_keys",
           "usage"]

log = Logger(namespace="mirrorbits.history.retention")

#: Keys measured or deleted per round trip.
BATCH = 100
#: ``SCAN`` hint: keys examined per call.
SCAN_COUNT = 1000
#: The ``LOCK_<name>`` that makes one node of a cluster prune at a time.
LOCK_NAME = "statsretention"
#: When, after 00:00 UTC, the daily prune runs (the previous day's keys are complete by then).
DAILY_OFFSET = 5 * 60.0
#: The first prune after start-up, so that a newly configured retention takes effect soon.
FIRST_DELAY = 60.0


@dataclass(frozen=True)
class KeySize:
    """One key and the memory Redis reports for it (``MEMORY USAGE``, bytes)."""

    name: str
    bytes: int


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed (or, with ``dry_run``, would remove)."""

    dry_run: bool = False
    keys: list[KeySize] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(k.bytes for k in self.keys)


@dataclass(frozen=True)
class FamilyUsage:
    """The statistics keys of one family and level (``STATS_FILE`` per day...): how many, how big."""

    family: str
    level: str
    keys: int = 0
    bytes: int = 0
    oldest: str = ""
    newest: str = ""


async def scan_stats_keys(redis: RedisClient) -> list[str]:
    """Every key named ``STATS_*``, by incremental ``SCAN`` (sorted, without duplicates)."""
    found: set[str] = set()
    cursor = "0"
    while True:
        reply = as_list(await redis.execute("SCAN", cursor, "MATCH", SCAN_PATTERN, "COUNT", str(SCAN_COUNT)))
        cursor = str(reply[0])
        found.update(as_str_list(reply[1]))
        if cursor == "0":
            return sorted(found)


async def _memory(redis: RedisClient, names: list[str], then: str | None = None) -> list[KeySize]:
    """``MEMORY USAGE`` of ``names`` in batches; with ``then``, that command (``UNLINK``) follows each
    batch's measures in the same round trip."""
    out: list[KeySize] = []
    for start in range(0, len(names), BATCH):
        batch = names[start:start + BATCH]
        cmds: list[tuple[str, ...]] = [("MEMORY", "USAGE", n) for n in batch]
        if then is not None:
            cmds.append((then, *batch))
        replies = await redis.pipeline(cmds)
        for name, reply in zip(batch, replies, strict=False):
            size = 0 if isinstance(reply, ResponseError) else as_int(reply)
            out.append(KeySize(name, size))
        if then is not None and isinstance(replies[-1], ResponseError):
            raise replies[-1]
    return out


async def prune(redis: RedisClient, retention: StatsRetention, today: date, dry_run: bool = False) -> PruneReport:
    """Delete (or with ``dry_run`` only list) the statistics keys outside the retention window."""
    if not retention.enabled:
        return PruneReport(dry_run)
    doomed = []
    for name in await scan_stats_keys(redis):
        key = parse_stats_key(name)
        if key is not None and expired(key, retention, today):
            doomed.append(name)
    return PruneReport(dry_run, await _memory(redis, doomed, None if dry_run else "UNLINK"))


async def usage(redis: RedisClient) -> list[FamilyUsage]:
    """The memory taken by each family and level of statistics keys (and ``STATS_TOTAL``)."""
    names = await scan_stats_keys(redis)
    sizes = await _memory(redis, names)
    groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for ks in sizes:
        key = parse_stats_key(ks.name)
        if key is not None:
            group = (key.family.value, key.level.value)
            period = key.period
        elif ks.name == schema.STATS_TOTAL:
            group, period = (schema.STATS_TOTAL, Level.TOTAL.value), "total"
        else:
            continue  # another STATS_ key (not one of ours)
        groups.setdefault(group, []).append((period, ks.bytes))
    order = [f.value for f in Family] + [schema.STATS_TOTAL]
    levels = [lv.value for lv in Level]
    out = []
    for (family, level), items in sorted(groups.items(), key=lambda g: (order.index(g[0][0]),
                                                                         levels.index(g[0][1]))):
        periods = sorted(p for p, _ in items)
        out.append(FamilyUsage(family, level, len(items), sum(b for _, b in items), periods[0], periods[-1]))
    return out


def utc_today(now: float) -> date:
    return datetime.fromtimestamp(now, UTC).date()


class RetentionService(Service):
    """Prunes once a day (shortly after 00:00 UTC, and once soon after start-up), under ``LOCK_`` so
    that one node of a cluster does it at a time; pruning is idempotent, so a node that comes later
    the same day finds nothing left to do.  Does nothing while retention is not configured."""

    name = "stats-retention"

    def __init__(self, redis: RedisClient, config: Callable[[], Config], reactor: IReactorTime) -> None:
        self.redis = redis
        self.config = config
        self.reactor = reactor
        self._call: IDelayedCall | None = None
        self.last: PruneReport | None = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._schedule(FIRST_DELAY)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, delay: float) -> None:
        self._call = self.reactor.callLater(delay, self._fire)

    def _next_delay(self) -> float:
        now = self.reactor.seconds()
        midnight = datetime.combine(utc_today(now) + timedelta(days=1), datetime.min.time(), UTC)
        return midnight.timestamp() + DAILY_OFFSET - now

    def _fire(self) -> None:
        d = defer.ensureDeferred(self.run_once())
        d.addErrback(lambda f: log.failure("Pruning the statistics failed", f))
        d.addBoth(lambda _: self._schedule(self._next_delay()) if self.running else None)

    async def run_once(self) -> PruneReport | None:
        """One prune under the cluster lock; None when retention is off or another node holds it."""
        retention = self.config().StatsRetention
        if not retention.enabled:
            return None
        lock = GenericLock(self.redis, LOCK_NAME, clock=self.reactor)
        try:
            if not await lock.acquire():
                log.info("Another node is pruning the statistics")
                return None
        except (RedisUnavailable, ResponseError) as e:
            log.warn("Cannot prune the statistics now: {e}", e=e)
            return None
        try:
            report = await prune(self.redis, retention, utc_today(self.reactor.seconds()))
        finally:
            await lock.release()
        self.last = report
        if report.keys:
            log.info("Statistics retention removed {n} keys ({size} bytes)", n=len(report.keys),
                     size=report.freed)
        return report
