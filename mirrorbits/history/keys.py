"""The dated statistics keys as values: which family, which period, and whether retention expires it.

The Go original writes four levels of every counter (``STATS_FILE_2026_12_05``, ``STATS_FILE_2026_12``,
``STATS_FILE_2026``, ``STATS_FILE``) and never deletes any.  Retention only ever removes whole day and
month keys: the year and all-time keys hold the same counts, so totals stay exact.  Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum

from mirrorbits.config import StatsRetention
from mirrorbits.redis import schema

__all__ = ["Family", "Level", "StatsKey", "SCAN_PATTERN", "coverage", "expired", "key_name", "last_days",
           "last_months", "month_back", "next_month", "parse_period", "parse_stats_key", "period_expired",
           "period_label"]

#: ``SCAN MATCH`` pattern of every dated statistics key (and the undated ones, skipped by the parser).
SCAN_PATTERN = "STATS_*"


class Family(Enum):
    """The three counter families (the key name's stem)."""

    FILE = schema.stats_file_key()
    MIRROR = schema.stats_mirror_key()
    MIRROR_BYTES = schema.stats_mirror_bytes_key()


class Level(Enum):
    DAY = "day"
    MONTH = "month"
    YEAR = "year"
    TOTAL = "total"


_KEY_RE = re.compile(r"^(STATS_MIRROR_BYTES|STATS_MIRROR|STATS_FILE)(?:_(\d{4})(?:_(\d{2})(?:_(\d{2}))?)?)?$")


@dataclass(frozen=True)
class StatsKey:
    """One statistics key: its name, family, level and the first day of its period (None: all time)."""

    name: str
    family: Family
    level: Level
    start: date | None

    @property
    def period(self) -> str:
        """``2026-12-05``, ``2026-12``, ``2026`` or ``total``."""
        return period_label(self.level, self.start)


def parse_stats_key(name: str) -> StatsKey | None:
    """The key ``name`` as a :class:`StatsKey`; None for any other key (``STATS_TOTAL``, a bad date)."""
    m = _KEY_RE.match(name)
    if m is None:
        return None
    family = Family(m.group(1))
    y, mo, d = m.group(2), m.group(3), m.group(4)
    try:
        if y is None:
            return StatsKey(name, family, Level.TOTAL, None)
        if mo is None:
            return StatsKey(name, family, Level.YEAR, date(int(y), 1, 1))
        if d is None:
            return StatsKey(name, family, Level.MONTH, date(int(y), int(mo), 1))
        return StatsKey(name, family, Level.DAY, date(int(y), int(mo), int(d)))
    except ValueError:
        return None


def month_back(day: date, months: int) -> date:
    """The first day of the month ``months`` before ``day``'s month."""
    index = day.year * 12 + (day.month - 1) - months
    return date(index // 12, index % 12 + 1, 1)


def expired(key: StatsKey, retention: StatsRetention, today: date) -> bool:
    """Whether retention removes ``key`` on ``today`` (UTC).

    A window of N days keeps today and the N-1 days before it; a window of N months keeps the current
    month and the N-1 before it.  Year and all-time keys never expire."""
    if key.start is None:
        return False
    if key.level is Level.DAY:
        days = retention.file_days if key.family is Family.FILE else retention.DailyDays
        return days > 0 and key.start <= today - timedelta(days=days)
    if key.level is Level.MONTH:
        months = retention.MonthlyMonths
        return months > 0 and key.start < month_back(today, months - 1)
    return False


def key_name(family: Family, level: Level, start: date | None) -> str:
    """The key of ``family`` for the period of ``level`` that contains ``start``."""
    stem = {Family.FILE: schema.stats_file_key, Family.MIRROR: schema.stats_mirror_key,
            Family.MIRROR_BYTES: schema.stats_mirror_bytes_key}[family]
    if start is None or level is Level.TOTAL:
        return stem()
    if level is Level.YEAR:
        return stem(start.year)
    if level is Level.MONTH:
        return stem(start.year, start.month)
    return stem(start.year, start.month, start.day)


def next_month(day: date) -> date:
    return month_back(day, -1)


def coverage(start: date, end: date) -> list[tuple[Level, date]]:
    """The fewest periods whose keys add up to the days [start, end]: whole years, whole months, days."""
    out: list[tuple[Level, date]] = []
    day = start
    while day <= end:
        if day.month == 1 and day.day == 1 and date(day.year, 12, 31) <= end:
            out.append((Level.YEAR, day))
            day = date(day.year + 1, 1, 1)
        elif day.day == 1 and next_month(day) - timedelta(days=1) <= end:
            out.append((Level.MONTH, day))
            day = next_month(day)
        else:
            out.append((Level.DAY, day))
            day += timedelta(days=1)
    return out


_PERIOD_RE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")


def parse_period(text: str) -> tuple[Level, date] | None:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` as a level and the period's first day; None otherwise."""
    m = _PERIOD_RE.match(text.strip())
    if m is None:
        return None
    try:
        if m.group(2) is None:
            return Level.YEAR, date(int(m.group(1)), 1, 1)
        if m.group(3) is None:
            return Level.MONTH, date(int(m.group(1)), int(m.group(2)), 1)
        return Level.DAY, date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def period_label(level: Level, start: date | None) -> str:
    """The text of a period, as :func:`parse_period` reads it (``total`` for all time)."""
    if start is None or level is Level.TOTAL:
        return "total"
    if level is Level.YEAR:
        return f"{start.year:04d}"
    if level is Level.MONTH:
        return f"{start.year:04d}-{start.month:02d}"
    return start.isoformat()


def last_days(today: date, n: int) -> list[tuple[Level, date]]:
    """The ``n`` days ending with ``today``, oldest first."""
    return [(Level.DAY, today - timedelta(days=i)) for i in range(n - 1, -1, -1)]


def last_months(today: date, n: int) -> list[tuple[Level, date]]:
    """The ``n`` months ending with ``today``'s, oldest first."""
    return [(Level.MONTH, month_back(today, i)) for i in range(n - 1, -1, -1)]


def period_expired(level: Level, start: date, retention: StatsRetention, today: date,
                   family: Family = Family.MIRROR) -> bool:
    """Whether retention removes the ``family`` key of this period."""
    return expired(StatsKey(key_name(family, level, start), family, level, start), retention, today)
