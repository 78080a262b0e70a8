"""Types shared by the mirror listers (rsync, FTP) and the scan commit.

A lister turns a mirror's listing into a stream of :class:`ListedFile`; the commit
(`scan.commit`) writes them to Redis.  Keeping the record here, free of any Redis or
Twisted import, lets the parsers be tested as pure functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

#: Precision of the modification times a scan delivers, in nanoseconds.
PRECISION_NONE = 0
PRECISION_MS = 1_000_000
PRECISION_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ListedFile:
    """One regular file seen on a mirror.

    ``path`` is repository-relative and starts with ``/``.  ``mtime_ns`` is Unix time in
    nanoseconds, or ``None`` for Go's zero time (``0001-01-01 00:00:00 +0000 UTC``),
    which is what the Go original stores when it could not learn the time.  ``zone`` is
    the zone name the Go original would print in the GTS string: ``"UTC"`` for rsync and
    MLSD times (and for the zero time), ``"GMT"`` for MDTM and Unix ``LIST`` times.
    """

    path: str
    size: int
    mtime_ns: int | None
    zone: str = "UTC"


#: Callback receiving each file.  It may return an awaitable (e.g. a Deferred from a
#: batched Redis write); the lister then stops reading until it completes, so memory
#: stays bounded whatever the size of the listing.
OnFile = Callable[[ListedFile], "Awaitable[object] | None"]


#: Unix nanoseconds of Go's zero time (0001-01-01 00:00:00 UTC).
GO_ZERO_TIME_NS = -62135596800 * 1_000_000_000

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def days_in_month(year: int, month: int) -> int:
    """Days of ``month`` (1-12) in the proleptic Gregorian ``year`` (year 0 is leap, as in Go)."""
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def civil_to_unix_ns(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, nanos: int = 0
) -> int | None:
    """Unix ns of a UTC wall time, or None when a field is out of range (Go's time.Parse checks)."""
    if not (1 <= month <= 12 and 0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        return None
    if not 1 <= day <= days_in_month(year, month):
        return None
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return (days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000_000 + nanos


class ScanError(Exception):
    """A mirror listing failed; ``str(err)`` is the text the Go original logs."""


class ScanAborted(ScanError):
    """The scan was stopped (daemon stopping or the caller cancelled it)."""

    def __init__(self, message: str = "scan aborted") -> None:
        super().__init__(message)


@dataclass(slots=True)
class ListingOutcome:
    """What a successful listing reports besides the files themselves."""

    files: int = 0
    precision_ns: int = PRECISION_NONE
    warnings: list[str] = field(default_factory=list)
    skipped_lines: int = 0
