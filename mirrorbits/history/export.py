"""``mirrorbits stats export``: the download counters of files and mirrors over a period, as CSV or JSON.

For spreadsheets and external dashboards.  The numbers are the counters themselves, summed over the
fewest keys that cover the period (whole years, whole months, then days), so the export of all time,
or of any period whose keys are still there, adds up to what Redis holds.  A period key that retention
already removed is listed in ``missing`` instead of being silently counted as zero.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import date

from mirrorbits.history.keys import Family, Level, coverage, key_name
from mirrorbits.redis.connection import RedisClient
from mirrorbits.redis.replies import hash_dict

__all__ = ["MirrorCounters", "StatsExport", "collect_export", "export_csv", "export_json"]


@dataclass(frozen=True)
class MirrorCounters:
    """One mirror's redirects and bytes over the period (``name`` empty for a removed mirror)."""

    id: int
    name: str = ""
    downloads: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class StatsExport:
    """The counters of a period: ``start``/``end`` as ``YYYY-MM-DD`` (both empty: all time)."""

    start: str = ""
    end: str = ""
    files: dict[str, int] = field(default_factory=dict)
    mirrors: list[MirrorCounters] = field(default_factory=list)
    #: Keys of the period that no longer exist (removed by retention, or never written).
    missing: list[str] = field(default_factory=list)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


async def collect_export(redis: RedisClient, start: date | None, end: date | None,
                         names: dict[int, str]) -> StatsExport:
    """The counters of [start, end] (all time when ``start`` is None); ``names`` maps mirror ids to
    names."""
    periods: list[tuple[Level, date | None]] = [(Level.TOTAL, None)]
    if start is not None and end is not None:
        periods = list(coverage(start, end))
    cmds: list[tuple[str, ...]] = []
    for level, day in periods:
        for family in Family:
            cmds.append(("HGETALL", key_name(family, level, day)))
    replies = await redis.pipeline(cmds)
    files: dict[str, int] = {}
    downloads: dict[int, int] = {}
    sizes: dict[int, int] = {}
    missing: list[str] = []
    for (cmd, reply) in zip(cmds, replies, strict=True):
        values = hash_dict(reply)
        name = cmd[1]
        if not values:
            if name.startswith(key_name(Family.FILE, Level.TOTAL, None)):
                missing.append(name)  # one name per period is enough: the file key
            continue
        if name.startswith(key_name(Family.MIRROR_BYTES, Level.TOTAL, None)):
            target = sizes
        elif name.startswith(key_name(Family.MIRROR, Level.TOTAL, None)):
            target = downloads
        else:
            for path, count in values.items():
                files[path] = files.get(path, 0) + _int(count)
            continue
        for mid, count in values.items():
            try:
                i = int(mid)
            except ValueError:
                continue
            target[i] = target.get(i, 0) + _int(count)
    mirrors = [MirrorCounters(i, names.get(i, ""), downloads.get(i, 0), sizes.get(i, 0))
               for i in sorted(set(downloads) | set(sizes))]
    return StatsExport("" if start is None else start.isoformat(), "" if end is None else end.isoformat(),
                       dict(sorted(files.items())), mirrors, missing)


def export_csv(data: StatsExport) -> str:
    """One row per mirror then per file: ``kind,id,name,downloads,bytes`` (files have no id or bytes)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["kind", "id", "name", "downloads", "bytes"])
    for m in data.mirrors:
        w.writerow(["mirror", m.id, m.name, m.downloads, m.bytes])
    for path, n in data.files.items():
        w.writerow(["file", "", path, n, ""])
    return out.getvalue()


def export_json(data: StatsExport) -> str:
    doc = {
        "from": data.start or None, "to": data.end or None,
        "mirrors": [{"id": m.id, "name": m.name, "downloads": m.downloads, "bytes": m.bytes}
                    for m in data.mirrors],
        "files": [{"path": p, "downloads": n} for p, n in data.files.items()],
        "missing": data.missing,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
