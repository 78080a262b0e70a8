"""``mirrorbits stats``: the dates the user gives, the Redis stats keys that cover them (Go's
``TimeKeyCoverage``), and the per-file and per-mirror tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from mirrorbits.admin.formatting.mirrorlist import mirror_state
from mirrorbits.admin.tabwriter import tabulate
from mirrorbits.model import Mirror

__all__ = [
    "format_stats_file",
    "format_stats_mirror",
    "parse_stats_date_strict",
    "readable_size",
    "stats_key_coverage",
]


_STATS_DATE = re.compile(r"(\d{4})-(\d\d?)-(\d\d?)")


def parse_stats_date_strict(text: str) -> datetime:
    """Go's ``time.Parse("2006-1-2", text)``: 00:00 UTC of that day; ValueError if it does not parse."""
    m = _STATS_DATE.fullmatch(text)
    if not m:
        raise ValueError(f"invalid date {text!r} (expected YYYY-MM-DD)")
    try:
        return datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=UTC)
    except ValueError:
        # Includes year 0, which Go accepts but protobuf timestamps cannot carry.
        raise ValueError(f"invalid date {text!r} (expected YYYY-MM-DD)") from None


def _add_month(t: datetime, years: int = 0, months: int = 0) -> datetime:
    # time.Date(y, m+1, 1, 0, 0, 0, 0, loc) with Go's month normalisation.
    total = t.year * 12 + (t.month - 1) + years * 12 + months
    return datetime(total // 12, total % 12 + 1, 1, tzinfo=t.tzinfo)


def stats_key_coverage(start: datetime, end: datetime) -> list[str]:
    """Port of Go's ``utils.TimeKeyCoverage``: the stats key suffixes covering [start, end].

    Both times are taken in UTC (the daemon's view). Suffixes look like ``2026_11_24``, ``2026_10``,
    ``2026``.
    """
    start = start.astimezone(UTC)
    end = end.astimezone(UTC)
    dates: list[str] = []
    if start.date() == end.date():
        return [start.strftime("%Y_%m_%d")]
    if start.day != 1:
        month = start.month
        while not (start.month != month or start == end):
            dates.append(start.strftime("%Y_%m_%d"))
            start += timedelta(days=1)
    while True:
        next_year = _add_month(start, years=1).replace(month=1)
        next_month = _add_month(start, months=1)
        if start.day == 1 and start.month == 1 and next_year <= end:
            dates.append(f"{start.year:04d}")
            start = next_year
        elif next_month <= end:
            dates.append(start.strftime("%Y_%m"))
            start = next_month
        else:
            break
    while not (start + timedelta(days=1) > end):
        dates.append(start.strftime("%Y_%m_%d"))
        start += timedelta(days=1)
    return dates


def readable_size(value: int) -> str:
    """Go's ``utils.ReadableSize``: ``0.0 bytes``, ``1.4 MiB``, ``4.7 GiB`` (never beyond TiB)."""
    v = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:3.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_stats_file(files: Mapping[str, int]) -> str:
    """``stats file``: ``<path>:\\t<count>`` sorted by path, a separator line, the total (tab writer)."""
    keys = sorted(files, key=lambda k: k.encode("utf-8", "surrogatepass"))
    total = sum(int(v) for v in files.values())
    out = [f"{k}:\t{int(files[k])}\n" for k in keys]
    if keys:
        out.append("\t\n")
    out.append(f"Total download requests: \t{total}\n")
    return tabulate("".join(out))


def format_stats_mirror(name: str, mirror: Mirror, requests: int, nbytes: int, human: bool = True) -> str:
    """``stats mirror``: identifier, status, requests and bytes, through the tab writer."""
    size = readable_size(nbytes) if human else str(nbytes)
    text = (f"Identifier:\t{name}\n"
            f"Status:\t{mirror_state(mirror)}\n"
            f"Download requests:\t{requests}\n"
            f"Bytes transferred:\t{size}\n")
    return tabulate(text)
