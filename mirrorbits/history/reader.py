"""The reads behind the history pages: only the keys a page shows, in one pipelined round trip each.

A period's totals come from the per-mirror hashes (``STATS_MIRROR_<period>``, a few dozen fields),
never from the per-file ones (up to one field per file of the repository): downloads on these pages
are the downloads redirected to a mirror.  The per-file hash of one period is read only for its top
files.  A period whose key retention has removed is marked ``pruned`` rather than shown as zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from mirrorbits.config import StatsRetention
from mirrorbits.history.keys import Family, Level, key_name, period_expired, period_label
from mirrorbits.redis.connection import RedisClient
from mirrorbits.redis.protocol import Reply
from mirrorbits.redis.replies import as_list, hash_dict

__all__ = ["Point", "PeriodShares", "mirror_series", "period_shares", "top_files", "totals"]

Period = tuple[Level, date]


@dataclass(frozen=True)
class Point:
    """One period of a series: its label, downloads and bytes, and whether retention removed it."""

    label: str
    downloads: int = 0
    bytes: int = 0
    pruned: bool = False


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _pruned(period: Period, retention: StatsRetention, today: date, present: bool) -> bool:
    return not present and period_expired(period[0], period[1], retention, today)


async def totals(redis: RedisClient, periods: list[Period], retention: StatsRetention,
                 today: date) -> list[Point]:
    """Downloads and bytes of every mirror summed, per period (``HVALS`` of the per-mirror hashes)."""
    cmds: list[tuple[str, ...]] = []
    for level, start in periods:
        cmds.append(("HVALS", key_name(Family.MIRROR, level, start)))
        cmds.append(("HVALS", key_name(Family.MIRROR_BYTES, level, start)))
    replies = await redis.pipeline(cmds) if cmds else []
    out = []
    for i, period in enumerate(periods):
        counts, sizes = as_list(replies[2 * i]), as_list(replies[2 * i + 1])
        out.append(Point(period_label(*period), sum(map(_int, counts)), sum(map(_int, sizes)),
                         _pruned(period, retention, today, bool(counts or sizes))))
    return out


async def mirror_series(redis: RedisClient, mirror_ids: list[int], periods: list[Period],
                        retention: StatsRetention, today: date) -> dict[int, list[Point]]:
    """Each mirror's downloads and bytes per period (``HMGET`` of the mirrors' fields, per period)."""
    out: dict[int, list[Point]] = {i: [] for i in mirror_ids}
    if not mirror_ids or not periods:
        return out
    fields = [str(i) for i in mirror_ids]
    cmds: list[tuple[str, ...]] = []
    for level, start in periods:
        cmds.append(("HMGET", key_name(Family.MIRROR, level, start), *fields))
        cmds.append(("HMGET", key_name(Family.MIRROR_BYTES, level, start), *fields))
        cmds.append(("EXISTS", key_name(Family.MIRROR, level, start)))
    replies = await redis.pipeline(cmds)
    for n, period in enumerate(periods):
        counts: list[Reply] = as_list(replies[3 * n])
        sizes: list[Reply] = as_list(replies[3 * n + 1])
        pruned = _pruned(period, retention, today, _int(replies[3 * n + 2]) > 0)
        label = period_label(*period)
        for k, mid in enumerate(mirror_ids):
            out[mid].append(Point(label, _int(counts[k]) if k < len(counts) else 0,
                                  _int(sizes[k]) if k < len(sizes) else 0, pruned))
    return out


@dataclass(frozen=True)
class PeriodShares:
    """One period's downloads and bytes per mirror id (every id counted, removed mirrors too)."""

    downloads: dict[int, int]
    bytes: dict[int, int]
    pruned: bool = False


async def period_shares(redis: RedisClient, period: Period, retention: StatsRetention,
                        today: date) -> PeriodShares:
    level, start = period
    replies = await redis.pipeline([("HGETALL", key_name(Family.MIRROR, level, start)),
                                    ("HGETALL", key_name(Family.MIRROR_BYTES, level, start))])
    maps: list[dict[int, int]] = []
    for reply in replies:
        m: dict[int, int] = {}
        for k, v in hash_dict(reply).items():
            try:
                m[int(k)] = m.get(int(k), 0) + _int(v)
            except ValueError:
                continue
        maps.append(m)
    return PeriodShares(maps[0], maps[1], _pruned(period, retention, today, bool(maps[0] or maps[1])))


# The top files are chosen inside Redis: a year's per-file hash holds a field per file of the
# repository (100,000 and more), and sending them all here to keep 20 cost more than the rest of the
# page.  The script reads the hash once and keeps the n largest (count descending, then path) by
# insertion into a short sorted list; it only reads.
#   KEYS[1]: the per-file hash; ARGV[1]: n.  Reply: {fields in the hash, path1, count1, path2, ...}.
_TOP_FILES_SCRIPT = """
local n = tonumber(ARGV[1])
local flat = redis.call('HGETALL', KEYS[1])
local counts, paths = {}, {}
local size = 0
for i = 1, #flat, 2 do
  local path, c = flat[i], tonumber(flat[i + 1]) or 0
  if size < n or c > counts[size] or (c == counts[size] and path < paths[size]) then
    local j = size
    if size < n then size = size + 1 end
    while j >= 1 and (counts[j] < c or (counts[j] == c and paths[j] > path)) do
      if j + 1 <= n then counts[j + 1], paths[j + 1] = counts[j], paths[j] end
      j = j - 1
    end
    counts[j + 1], paths[j + 1] = c, path
  end
end
local out = {#flat / 2}
for i = 1, size do
  out[#out + 1] = paths[i]
  out[#out + 1] = counts[i]
end
return out
"""


async def top_files(redis: RedisClient, period: Period, n: int, retention: StatsRetention,
                    today: date) -> tuple[list[tuple[str, int]], int, bool]:
    """The ``n`` most downloaded files of the period (ties by path), the number of files downloaded,
    and whether retention removed the period's per-file key."""
    level, start = period
    reply = as_list(await redis.execute("EVAL", _TOP_FILES_SCRIPT, "1",
                                        key_name(Family.FILE, level, start), str(n)))
    count = _int(reply[0]) if reply else 0
    top = [(str(reply[i]), _int(reply[i + 1])) for i in range(1, len(reply) - 1, 2)]
    pruned = not count and period_expired(level, start, retention, today, Family.FILE)
    return top, count, pruned
