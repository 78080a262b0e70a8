"""Go's ``time.Time`` texts: ``String()`` (the ``modTime`` of file hashes), RFC 3339 with
nanoseconds (JSON), RFC 1123, and the mirror log layout; and their parsers.

Times are carried as integer epoch **nanoseconds** (Python ``datetime`` only has microseconds and
stops at year 9999; Go's zero time is year 1).  The calendar arithmetic is proleptic Gregorian for
any year.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timezone, tzinfo
from typing import Literal

__all__ = [
    "NS_PER_SECOND",
    "ZERO_GTS",
    "ZERO_RFC3339",
    "ZERO_TIME_NS",
    "Zone",
    "civil_to_unix_ns",
    "days_from_civil",
    "format_go_datetime",
    "format_gts",
    "format_rfc1123",
    "format_rfc3339nano",
    "parse_gts",
    "parse_gts_offset",
    "parse_rfc3339nano",
    "zone_of_parsed_offset",
]

NS_PER_SECOND = 1_000_000_000

#: Go's zero ``time.Time`` as seconds relative to the Unix epoch (0001-01-01 00:00:00 UTC).
ZERO_TIME_UNIX = -62135596800
ZERO_TIME_NS = ZERO_TIME_UNIX * NS_PER_SECOND

#: ``time.Time{}.String()``: what Go writes for "no time".
ZERO_GTS = "0001-01-01 00:00:00 +0000 UTC"
#: ``time.Time{}`` in RFC 3339 (JSON).
ZERO_RFC3339 = "0001-01-01T00:00:00Z"

#: Where a time is shown: the daemon's local zone, UTC, GMT (FTP MDTM), any ``tzinfo``, or a fixed
#: offset in seconds east of UTC without a name (Go ``FixedZone("", off)``, printed numerically).
Zone = Literal["local", "UTC", "GMT"] | tzinfo | int

# ---------------------------------------------------------------------------------------------------
# Calendar arithmetic (proleptic Gregorian, any year; Python datetime stops at 1..9999)


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_to_unix_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
                     nanos: int = 0) -> int | None:
    """Unix ns of a UTC wall time, or ``None`` when a field is out of range (the checks of Go's
    ``time.Parse``: a 31 April or a 24:00 is refused, not normalised as ``time.Date`` would)."""
    if not (1 <= month <= 12 and 0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        return None
    if not 1 <= day <= _days_in_month(year, month):
        return None
    secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    return secs * NS_PER_SECOND + nanos


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return y + (m <= 2), m, d


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


_NUMERIC_UTC_NAME = re.compile(r"^UTC[+-]\d\d:\d\d(:\d\d)?$")


def _zone_at(secs: int, zone: Zone) -> tuple[int, str]:
    """(offset seconds east of UTC, abbreviation or "" when Go would print it numerically)."""
    if zone == "UTC":
        return 0, "UTC"
    if zone == "GMT":
        return 0, "GMT"
    if zone == "local":
        try:
            tm = time.localtime(secs)
        except (OverflowError, OSError, ValueError):
            return 0, "UTC"
        return int(tm.tm_gmtoff or 0), tm.tm_zone or ""
    if isinstance(zone, int) and not isinstance(zone, bool):
        return zone, ""
    if isinstance(zone, tzinfo):
        if zone is UTC:
            return 0, "UTC"
        try:
            dt = datetime.fromtimestamp(secs, zone)
        except (OverflowError, OSError, ValueError):
            return 0, "UTC"
        off = dt.utcoffset()
        name = dt.tzname() or ""
        if isinstance(zone, timezone) and _NUMERIC_UTC_NAME.match(name):
            name = ""  # an unnamed fixed offset: Go prints it numerically
        return (int(off.total_seconds()) if off is not None else 0), name
    raise TypeError(f"bad zone: {zone!r}")


def _broken_down(epoch_ns: int, zone: Zone) -> tuple[int, int, int, int, int, int, int, int, str, int]:
    """(year, month, day, hour, min, sec, nsec, offset, abbrev, weekday with Sunday = 0)."""
    secs, nsec = divmod(epoch_ns, NS_PER_SECOND)
    offset, name = _zone_at(secs, zone)
    days, sod = divmod(secs + offset, 86400)
    y, m, d = _civil_from_days(days)
    hh, rem = divmod(sod, 3600)
    mi, ss = divmod(rem, 60)
    return y, m, d, hh, mi, ss, nsec, offset, name, (days + 4) % 7


def _frac9(nsec: int) -> str:
    """Go ``.999999999``: the fraction without trailing zeros, nothing at all when zero."""
    if nsec == 0:
        return ""
    return "." + f"{nsec:09d}".rstrip("0")


def _year(y: int) -> str:
    return f"-{-y:04d}" if y < 0 else f"{y:04d}"


def _numeric_offset(offset: int, colon: bool) -> str:
    sign = "-" if offset < 0 else "+"
    minutes = abs(offset) // 60
    sep = ":" if colon else ""
    return f"{sign}{minutes // 60:02d}{sep}{minutes % 60:02d}"


def format_gts(epoch_ns: int | None, zone: Zone = "local") -> str:
    """Go ``time.Time.String()`` without monotonic part: ``2019-03-04 12:34:56.123456789 +0100 CET``.

    This is the ``modTime`` encoding of ``FILE_*``/``FILEINFO_*``.  ``None`` gives ``ZERO_GTS``.
    """
    if epoch_ns is None:
        return ZERO_GTS
    y, m, d, hh, mi, ss, nsec, offset, name, _ = _broken_down(epoch_ns, zone)
    num = _numeric_offset(offset, colon=False)
    return f"{_year(y)}-{m:02d}-{d:02d} {hh:02d}:{mi:02d}:{ss:02d}{_frac9(nsec)} {num} {name or num}"


def format_rfc3339nano(epoch_ns: int | None, zone: Zone = "local") -> str:
    """Go ``time.RFC3339Nano`` (JSON time text): ``Z`` whenever the offset is 0, trailing fraction
    zeros dropped.  ``None`` (Go zero time) gives ``0001-01-01T00:00:00Z``."""
    if epoch_ns is None:
        return ZERO_RFC3339
    y, m, d, hh, mi, ss, nsec, offset, _, _ = _broken_down(epoch_ns, zone)
    tz = "Z" if offset == 0 else _numeric_offset(offset, colon=True)
    return f"{_year(y)}-{m:02d}-{d:02d}T{hh:02d}:{mi:02d}:{ss:02d}{_frac9(nsec)}{tz}"


def format_go_datetime(epoch_ns: int | None, zone: Zone = "local") -> str:
    """Go layout ``2006-01-02 15:04:05 MST`` (mirror log lines).  A zone without an abbreviation
    prints its offset as ``+0100``, as Go does for ``FixedZone("", …)``."""
    if epoch_ns is None:
        epoch_ns, zone = ZERO_TIME_NS, "UTC"
    y, m, d, hh, mi, ss, _, offset, name, _ = _broken_down(epoch_ns, zone)
    return f"{_year(y)}-{m:02d}-{d:02d} {hh:02d}:{mi:02d}:{ss:02d} {name or _numeric_offset(offset, False)}"


_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_rfc1123(epoch_ns: int | None, zone: Zone = "UTC") -> str:
    """Go ``time.RFC1123`` (``Mon, 02 Jan 2006 15:04:05 MST``); ``None`` is the zero time
    ``Mon, 01 Jan 0001 00:00:00 UTC``."""
    if epoch_ns is None:
        epoch_ns, zone = ZERO_TIME_NS, "UTC"
    y, m, d, hh, mi, ss, _, offset, name, wd = _broken_down(epoch_ns, zone)
    z = name or _numeric_offset(offset, False)
    return f"{_WEEKDAYS[wd]}, {d:02d} {_MONTHS[m - 1]} {_year(y)} {hh:02d}:{mi:02d}:{ss:02d} {z}"


# Go time.Time.String() layout "2006-01-02 15:04:05.999999999 -0700 MST".  The hour may have one
# digit (Go's "15" is not fixed width), a comma is accepted as decimal separator (Go >= 1.17), and
# spaces in the layout match runs of spaces.  Go truncates fraction digits beyond the 9th.
_GTS_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d) +(\d\d?):(\d\d):(\d\d)(?:[.,](\d+))? +([+-])(\d\d)(\d\d) +"
    # Zone abbreviation: informative only (the numeric offset decides the instant).  Go's own
    # parser rejects some abbreviations it writes itself (e.g. "+0545"); we accept them.
    r"([A-Za-z]+|GMT[+-]\d{1,2}|[+-]\d\d(?:\d\d)?)"
)


def parse_gts_offset(s: str) -> tuple[int, int] | None:
    """Parse a Go time string into (epoch ns, UTC offset seconds as written).

    ``None`` means Go's zero time: empty or unparseable text (including a `` m=+…`` monotonic
    suffix, which Go's parser rejects as extra text) and the year-1 zero instant itself.
    """
    if not isinstance(s, str):
        return None
    mt = _GTS_RE.fullmatch(s)
    if mt is None:
        return None
    year, month, day, hour, minute, sec = (int(mt.group(i)) for i in range(1, 7))
    frac = mt.group(7) or ""
    sign, oh, om = mt.group(8), int(mt.group(9)), int(mt.group(10))
    if not (1 <= month <= 12) or not (1 <= day <= _days_in_month(year, month)):
        return None
    if hour > 23 or minute > 59 or sec > 59 or oh > 24 or om > 60:
        return None
    nsec = int((frac[:9]).ljust(9, "0")) if frac else 0
    offset = (oh * 3600 + om * 60) * (-1 if sign == "-" else 1)
    secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec - offset
    ns = secs * NS_PER_SECOND + nsec
    if ns == ZERO_TIME_NS:
        return None
    return ns, offset


def parse_gts(s: str) -> int | None:
    """Parse a Go time string (``modTime``) to epoch nanoseconds; ``None`` = Go zero time."""
    r = parse_gts_offset(s)
    return None if r is None else r[0]


_RFC3339_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))"
)


def parse_rfc3339nano(s: str) -> tuple[int, int | None] | None:
    """Parse RFC 3339 (Go JSON time) into (epoch ns, offset seconds, or ``None`` for ``Z`` = UTC).

    ``None`` overall when the text is not RFC 3339.
    """
    mt = _RFC3339_RE.fullmatch(s)
    if mt is None:
        return None
    year, month, day, hour, minute, sec = (int(mt.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12) or not (1 <= day <= _days_in_month(year, month)):
        return None
    if hour > 23 or minute > 59 or sec > 59:
        return None
    frac = mt.group(7) or ""
    nsec = int(frac[:9].ljust(9, "0")) if frac else 0
    offset: int | None
    if mt.group(8):
        offset = None
    else:
        oh, om = int(mt.group(10)), int(mt.group(11))
        if oh > 23 or om > 59:
            return None
        offset = (oh * 3600 + om * 60) * (-1 if mt.group(9) == "-" else 1)
    secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec - (offset or 0)
    return secs * NS_PER_SECOND + nsec, offset


def zone_of_parsed_offset(epoch_ns: int, offset: int | None) -> Zone:
    """The zone Go's ``time.Parse`` attaches to a parsed time: ``Z`` -> UTC; an offset equal to the
    local zone's offset at that instant -> the local zone (so its abbreviation shows); any other
    offset -> an unnamed fixed zone (printed as ``+0100``)."""
    if offset is None:
        return "UTC"
    local_off, _ = _zone_at(epoch_ns // NS_PER_SECOND, "local")
    return "local" if local_off == offset else offset

