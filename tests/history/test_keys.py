"""Which statistics keys retention removes, and which keys cover a period."""

from __future__ import annotations

from datetime import date

import pytest

from mirrorbits.config import StatsRetention
from mirrorbits.history.keys import Family, Level, coverage, expired, key_name, parse_stats_key

TODAY = date(2026, 3, 10)


@pytest.mark.parametrize(("name", "family", "level", "start"), [
    ("STATS_FILE_2026_03_10", Family.FILE, Level.DAY, date(2026, 3, 10)),
    ("STATS_MIRROR_BYTES_2025_12", Family.MIRROR_BYTES, Level.MONTH, date(2025, 12, 1)),
    ("STATS_MIRROR_2024", Family.MIRROR, Level.YEAR, date(2024, 1, 1)),
    ("STATS_MIRROR_BYTES", Family.MIRROR_BYTES, Level.TOTAL, None),
])
def test_parse(name: str, family: Family, level: Level, start: date | None) -> None:
    key = parse_stats_key(name)
    assert key is not None and (key.family, key.level, key.start) == (family, level, start)
    assert key_name(family, level, start) == name


@pytest.mark.parametrize("name", ["STATS_TOTAL", "STATS_FILE_2026_02_30", "STATS_FILE_26", "STATS_FILEX",
                                  "STATS_MIRROR_2026_13", "FILE_STATS_FILE"])
def test_other_keys_are_not_statistics_periods(name: str) -> None:
    assert parse_stats_key(name) is None


def _expired(name: str, **kw: int) -> bool:
    key = parse_stats_key(name)
    assert key is not None
    return expired(key, StatsRetention(**kw), TODAY)


def test_windows() -> None:
    # 7 days keep today and the 6 days before.
    assert not _expired("STATS_MIRROR_2026_03_04", DailyDays=7)
    assert _expired("STATS_MIRROR_2026_03_03", DailyDays=7)
    # FileDays shortens the per-file window only; 0 means as DailyDays.
    assert _expired("STATS_FILE_2026_03_08", DailyDays=7, FileDays=2)
    assert not _expired("STATS_MIRROR_2026_03_08", DailyDays=7, FileDays=2)
    assert _expired("STATS_FILE_2026_03_03", DailyDays=7)
    # 3 months keep this month and the 2 before.
    assert not _expired("STATS_FILE_2026_01", MonthlyMonths=3)
    assert _expired("STATS_FILE_2025_12", MonthlyMonths=3)
    # 0 keeps forever; years and totals never expire.
    assert not _expired("STATS_FILE_2000_01_01", MonthlyMonths=3)
    assert not _expired("STATS_FILE_2000", DailyDays=1, MonthlyMonths=1)
    assert not _expired("STATS_FILE", DailyDays=1, MonthlyMonths=1)


def test_coverage_uses_the_fewest_keys() -> None:
    assert coverage(date(2025, 12, 30), date(2027, 2, 2)) == [
        (Level.DAY, date(2025, 12, 30)), (Level.DAY, date(2025, 12, 31)), (Level.YEAR, date(2026, 1, 1)),
        (Level.MONTH, date(2027, 1, 1)), (Level.DAY, date(2027, 2, 1)), (Level.DAY, date(2027, 2, 2))]
    assert coverage(date(2026, 3, 5), date(2026, 3, 5)) == [(Level.DAY, date(2026, 3, 5))]
    assert coverage(date(2026, 3, 6), date(2026, 3, 5)) == []
