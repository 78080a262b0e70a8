"""Go-compatible text formats.

The Go Mirrorbits leaks several Go-runtime text formats into Redis, HTTP responses and CLI output:
float32 shortest decimals, ``time.Time.String()``, RFC 3339 with nanoseconds, ``time.Duration``
strings and ``encoding/json`` output.  A drop-in replacement sharing one Redis with Go nodes must
write and read these byte for byte, so they all live here as pure functions.

Times are carried as integer epoch **nanoseconds** (Python ``datetime`` only has microseconds).
"""

from __future__ import annotations

import math
import re
import struct
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timezone, tzinfo
from fractions import Fraction
from functools import lru_cache
from typing import Literal

__all__ = [
    "Float32",
    "ZERO_GTS",
    "ZERO_RFC3339",
    "Zone",
    "days_from_civil",
    "f32",
    "format_duration",
    "format_float32",
    "format_float64",
    "format_go_datetime",
    "format_gts",
    "format_rfc1123",
    "format_rfc3339nano",
    "go_fields",
    "go_json_dumps",
    "go_json_marshal",
    "json_float32",
    "json_float64",
    "parse_duration",
    "parse_go_bool",
    "parse_go_float",
    "parse_go_int",
    "parse_gts",
    "parse_gts_offset",
    "parse_rfc3339nano",
    "redis_version_number",
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

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# ---------------------------------------------------------------------------------------------------
# float32


_F32 = struct.Struct("<f")
_f32_pack = _F32.pack
_f32_unpack = _F32.unpack


def f32(x: float) -> float:
    """Round ``x`` to IEEE-754 binary32, as a Go ``float32(x)`` conversion does (overflow -> ±Inf).

    The one float32 rounding of the package (it is on the selection hot path: pre-bound struct)."""
    try:
        return _f32_unpack(_f32_pack(x))[0]  # type: ignore[no-any-return]
    except OverflowError:
        return math.copysign(math.inf, x)


class Float32(float):
    """A float that Go holds as ``float32``: the value is rounded on creation, and JSON/Redis
    encoders write it with the float32 shortest form (``48.8567``, not ``48.856700897216797``)."""

    __slots__ = ()

    def __new__(cls, x: float = 0.0) -> Float32:
        return super().__new__(cls, f32(float(x)))

    def __repr__(self) -> str:
        return f"Float32({format_float32(self)})"


def _digits_from_repr(x: float) -> tuple[str, int]:
    """Shortest round-trip digits of a positive finite float64: (digits, dp), value = 0.DIGITS × 10**dp.

    Python's ``repr`` is the shortest round-trip string and, among those, the closest one; Go's
    Ryu-based ``FormatFloat(x, _, -1, 64)`` picks the same digits.
    """
    s = repr(x)
    mant, _, exp = s.partition("e")
    e = int(exp) if exp else 0
    ip, _, fp = mant.partition(".")
    digits = (ip + fp).lstrip("0")
    lead_zeros = len(ip + fp) - len((ip + fp).lstrip("0"))
    dp = len(ip) - lead_zeros + e
    digits = digits.rstrip("0") or "0"
    return digits, dp


@lru_cache(maxsize=4096)
def _shortest32(x: float) -> tuple[str, int]:
    """Shortest decimal that reads back as the same float32 (Go ``FormatFloat(x, _, -1, 32)``).

    Fast path: when the rounding interval of ``x`` is symmetric (``x`` not a power of two), the
    correctly rounded p-digit decimal is in the interval whenever any p-digit decimal is, so the
    first p whose ``%.{p-1}e`` text reads back as ``x`` wins.  Reading back goes through float64,
    which could double-round only when the float64 lands exactly on a float32 midpoint: those
    cases, and powers of two, take the exact path.
    """
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    if bits & 0x7FFFFF == 0:
        return _shortest32_exact(x)
    below = struct.unpack("<f", struct.pack("<I", bits - 1))[0]
    above = struct.unpack("<f", struct.pack("<I", bits + 1))[0] if bits < 0x7F7FFFFF else math.inf
    mid_lo, mid_hi = (x + below) / 2, (x + above) / 2
    for p in range(1, 10):
        text = f"{x:.{p - 1}e}"
        d = float(text)
        if d == mid_lo or d == mid_hi:
            return _shortest32_exact(x)
        if f32(d) == x:
            mant, _, exp = text.partition("e")
            return mant.replace(".", "").rstrip("0") or "0", int(exp) + 1
    return _shortest32_exact(x)  # pragma: no cover - 9 digits always round-trip a float32


def _shortest32_exact(x: float) -> tuple[str, int]:
    """Exact arithmetic over the rounding interval of ``x`` (asymmetric at powers of two, inclusive
    when the mantissa is even, like round-half-even parsing); among the shortest candidates the
    one nearest to ``x`` wins.  Returns (digits, dp) with value = 0.DIGITS × 10**dp.
    """
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    exp_bits = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    if exp_bits == 0:
        mant, e = frac, -149
    else:
        mant, e = frac | 0x800000, exp_bits - 150
    ulp = Fraction(2) ** e
    v = mant * ulp
    half_up = ulp / 2
    half_down = ulp / 4 if (frac == 0 and exp_bits > 1) else ulp / 2
    lo, hi = v - half_down, v + half_up
    inclusive = mant % 2 == 0
    # dp: smallest integer with v < 10**dp
    dp = math.floor(math.log10(float(v))) + 1
    while v >= Fraction(10) ** dp:
        dp += 1
    while v < Fraction(10) ** (dp - 1):
        dp -= 1
    for p in range(1, 18):
        scale = Fraction(10) ** (dp - p)
        lo_s, hi_s = lo / scale, hi / scale
        d_lo = math.ceil(lo_s)
        if not inclusive and d_lo == lo_s:
            d_lo += 1
        d_hi = math.floor(hi_s)
        if not inclusive and d_hi == hi_s:
            d_hi -= 1
        if d_lo > d_hi:
            continue
        t = v / scale
        d = math.floor(t)
        rest = t - d
        if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and d % 2 == 1):
            d += 1
        d = min(max(d, d_lo), d_hi)
        s = str(d)
        new_dp = dp - p + len(s)
        return s.rstrip("0") or "0", new_dp
    raise AssertionError("no shortest representation found")  # pragma: no cover


def _shortest(x: float, bits: int) -> tuple[bool, str, int]:
    """(negative, digits, dp) of the shortest form; zero is ("0", 1)."""
    neg = math.copysign(1.0, x) < 0
    ax = abs(x)
    if ax == 0:
        return neg, "0", 1
    if bits == 32:
        digits, dp = _shortest32(f32(ax))
    else:
        digits, dp = _digits_from_repr(ax)
    return neg, digits, dp


def _fmt_e(neg: bool, digits: str, dp: int) -> str:
    """Go ``%e`` with the shortest digits: ``d.ddde±XX`` (at least two exponent digits)."""
    out = "-" if neg else ""
    out += digits[0]
    if len(digits) > 1:
        out += "." + digits[1:]
    exp = dp - 1 if digits != "0" else 0
    sign = "-" if exp < 0 else "+"
    exp = abs(exp)
    return f"{out}e{sign}{exp:02d}"


def _fmt_f(neg: bool, digits: str, dp: int) -> str:
    """Go ``%f`` with ``max(nd - dp, 0)`` decimals (exactly the shortest digits)."""
    out = "-" if neg else ""
    nd = len(digits)
    if dp > 0:
        out += digits[:dp] + "0" * max(dp - nd, 0)
    else:
        out += "0"
    decimals = max(nd - dp, 0)
    if decimals:
        frac = "".join(digits[i] if 0 <= i < nd else "0" for i in range(dp, dp + decimals))
        out += "." + frac
    return out


def _check_finite(x: float) -> None:
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"unsupported value: {x!r}")


def _format_g(x: float, bits: int) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    neg, digits, dp = _shortest(x, bits)
    exp = dp - 1
    if digits != "0" and (exp < -4 or exp >= 6):
        return _fmt_e(neg, digits, dp)
    return _fmt_f(neg, digits, dp)


def format_float32(x: float) -> str:
    """Go ``strconv.FormatFloat(float32(x), 'g', -1, 32)``: how redigo writes a float32 to Redis
    (``latitude``/``longitude``) and how ``%v`` prints one: ``48.8582``, ``0``, ``1e-05``, ``1e+06``."""
    return _format_g(x, 32)


def format_float64(x: float) -> str:
    """Go ``strconv.FormatFloat(x, 'g', -1, 64)`` (``%v`` of a float64)."""
    return _format_g(x, 64)


_F32_1E_6 = f32(1e-6)
_F32_1E21 = f32(1e21)


def _json_float(x: float, bits: int) -> str:
    _check_finite(x)
    ax = abs(x)
    use_e = False
    if ax != 0:
        if bits == 64:
            use_e = ax < 1e-6 or ax >= 1e21
        else:
            # Go compares float32(abs) with the constants converted to float32.
            a32 = f32(ax)
            use_e = a32 < _F32_1E_6 or a32 >= _F32_1E21
    neg, digits, dp = _shortest(x, bits)
    if not use_e:
        return _fmt_f(neg, digits, dp)
    s = _fmt_e(neg, digits, dp)
    # encoding/json cleans up e-09 to e-9
    if len(s) >= 4 and s[-4] == "e" and s[-3] == "-" and s[-2] == "0":
        s = s[:-2] + s[-1]
    return s


def json_float32(x: float) -> str:
    """Go ``encoding/json`` text of a float32: ``48.8567``, ``0``, ``100``, ``1e-7``, ``1e+21``."""
    return _json_float(x, 32)


def json_float64(x: float) -> str:
    """Go ``encoding/json`` text of a float64 (exponent only when abs < 1e-6 or >= 1e21)."""
    return _json_float(x, 64)


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


# ---------------------------------------------------------------------------------------------------
# time.Duration

_NS, _US, _MS, _S, _M, _H = 1, 1_000, 1_000_000, 1_000_000_000, 60_000_000_000, 3_600_000_000_000


def _fmt_frac(v: int, prec: int) -> tuple[str, int]:
    """Go ``fmtFrac``: the fraction of ``v / 10**prec`` without trailing zeros, and the integer part."""
    digits = ""
    printed = False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        v //= 10
    return ("." + digits if printed else ""), v


def format_duration(ns: int) -> str:
    """Go ``time.Duration.String()``: ``0s``, ``1.5µs``, ``500ms``, ``1m40s``, ``1h0m0s``, ``-10s``."""
    neg = ns < 0
    u = -ns if neg else ns
    if u < _S:
        if u == 0:
            return "0s"
        if u < _US:
            frac, ip, unit = "", u, "ns"
        elif u < _MS:
            (frac, ip), unit = _fmt_frac(u, 3), "µs"
        else:
            (frac, ip), unit = _fmt_frac(u, 6), "ms"
        out = f"{ip}{frac}{unit}"
    else:
        frac, secs = _fmt_frac(u, 9)
        out = f"{secs % 60}{frac}s"
        mins = secs // 60
        if mins > 0:
            out = f"{mins % 60}m" + out
            hours = mins // 60
            if hours > 0:
                out = f"{hours}h" + out
    return "-" + out if neg else out


_UNITS = {"ns": _NS, "us": _US, "µs": _US, "μs": _US, "ms": _MS, "s": _S, "m": _M, "h": _H}


def parse_duration(s: str) -> int:
    """Go ``time.ParseDuration``: ``[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+`` to nanoseconds (ValueError)."""
    orig = s
    bad = ValueError(f'time: invalid duration "{orig}"')
    neg = False
    if s and s[0] in "-+":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise bad
    total = 0
    while s:
        if not (s[0] == "." or s[0].isascii() and s[0].isdigit()):
            raise bad
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        pre = i > 0
        v = int(s[:i]) if pre else 0
        if v > 1 << 63:
            raise bad
        s = s[i:]
        f, scale, post = 0, 1.0, False
        if s.startswith("."):
            s = s[1:]
            j = 0
            overflow = False
            while j < len(s) and "0" <= s[j] <= "9":
                if not overflow:
                    if f > ((1 << 63) - 1) // 10:
                        overflow = True
                    else:
                        f = f * 10 + int(s[j])
                        scale *= 10
                j += 1
            post = j > 0
            s = s[j:]
        if not pre and not post:
            raise bad
        k = 0
        while k < len(s) and s[k] != "." and not ("0" <= s[k] <= "9"):
            k += 1
        if k == 0:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        u = s[:k]
        s = s[k:]
        unit = _UNITS.get(u)
        if unit is None:
            raise ValueError(f'time: unknown unit "{u}" in duration "{orig}"')
        if v > (1 << 63) // unit:
            raise bad
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))
            if v > 1 << 63:
                raise bad
        total += v
        if total > 1 << 63:
            raise bad
    if neg:
        return -total
    if total > _INT64_MAX:
        raise bad
    return total


# ---------------------------------------------------------------------------------------------------
# encoding/json

_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    # Go >= 1.22 writes \b and \f short; older Go wrote \u0008 / \u000c (both decode the same).
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_SPECIAL = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _json_escape_char(mt: re.Match[str]) -> str:
    ch = mt.group(0)
    esc = _JSON_ESCAPES.get(ch)
    if esc is not None:
        return esc
    o = ord(ch)
    if 0xD800 <= o <= 0xDFFF:
        # A lone surrogate stands for undecodable bytes (surrogateescape): Go writes each invalid
        # byte as the replacement character.
        return "\\ufffd"
    return f"\\u{o:04x}"


def _json_str(s: str) -> str:
    return '"' + _JSON_SPECIAL.sub(_json_escape_char, s) + '"'


def _encode(value: object, out: list[str], indent: str | None, level: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_json_str(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Float32):
        out.append(json_float32(value))
    elif isinstance(value, float):
        out.append(json_float64(value))
    elif isinstance(value, Mapping):
        if not value:
            out.append("{}")
            return
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            if indent is not None:
                out.append("\n" + indent * (level + 1))
            out.append(_json_str(str(k)))
            out.append(": " if indent is not None else ":")
            _encode(v, out, indent, level + 1)
        if indent is not None:
            out.append("\n" + indent * level)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            if indent is not None:
                out.append("\n" + indent * (level + 1))
            _encode(v, out, indent, level + 1)
        if indent is not None:
            out.append("\n" + indent * level)
        out.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(value).__name__}")


def go_json_marshal(value: object, indent: str | None = None) -> str:
    """Go ``json.Marshal`` (or ``json.MarshalIndent(v, "", indent)``): no trailing newline.

    Dict key order is kept (Go struct field order); ``Float32`` values use the float32 form,
    plain floats the float64 form; NaN/Inf raise ValueError like Go's UnsupportedValueError.
    """
    out: list[str] = []
    _encode(value, out, indent, 0)
    return "".join(out)


def go_json_dumps(value: object, pretty: bool = False) -> str:
    """The JSON renderer's body: compact output ends with one ``\\n`` (``json.Encoder``); pretty
    output is indented by 4 spaces with ``": "`` and no trailing newline (``json.MarshalIndent``)."""
    if pretty:
        return go_json_marshal(value, "    ")
    return go_json_marshal(value) + "\n"


# ---------------------------------------------------------------------------------------------------
# strconv parsing (how redigo's ScanStruct reads hash fields)

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(s: str) -> bool:
    """Go ``strconv.ParseBool``."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{s}": invalid syntax')


_INT_RE = re.compile(r"[+-]?[0-9]+")
_UINT_RE = re.compile(r"[0-9]+")


def parse_go_int(s: str, bits: int = 64, signed: bool = True) -> int:
    """Go ``strconv.ParseInt(s, 10, bits)`` / ``ParseUint``: strict base 10, no spaces or
    underscores, a sign only when signed, range-checked against the width (ValueError)."""
    fn = "ParseInt" if signed else "ParseUint"
    if not (_INT_RE if signed else _UINT_RE).fullmatch(s or ""):
        raise ValueError(f'strconv.{fn}: parsing "{s}": invalid syntax')
    v = int(s)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= v <= hi:
        raise ValueError(f'strconv.{fn}: parsing "{s}": value out of range')
    return v


_FLOAT_RE = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.I)


def parse_go_float(s: str, bits: int = 64) -> float:
    """Go ``strconv.ParseFloat(s, bits)`` for decimal text (hex floats are not supported);
    a value out of the width's range raises ValueError like Go's ErrRange."""
    if not _FLOAT_RE.fullmatch(s or ""):
        raise ValueError(f'strconv.ParseFloat: parsing "{s}": invalid syntax')
    v = float(s)
    if bits == 32:
        r = f32(v)
        if math.isinf(r) and not math.isinf(v):
            raise ValueError(f'strconv.ParseFloat: parsing "{s}": value out of range')
        return r
    if math.isinf(v) and not re.search("inf", s, re.I):
        raise ValueError(f'strconv.ParseFloat: parsing "{s}": value out of range')
    return v


# Go unicode.IsSpace (Python's str.split() also splits on U+001C..U+001F, Go does not).
_GO_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def go_fields(s: str) -> list[str]:
    """Go ``strings.Fields``: split on runs of Unicode white space, no empty items."""
    return [p for p in _GO_SPACE.split(s) if p]


# ---------------------------------------------------------------------------------------------------
# Redis server version


def redis_version_number(v: str) -> int:
    """The Go ``parseVersion``: split on ``.``, pad to 3 parts with ``0``, zero-pad each part to 2
    characters, concatenate and read as int64; -1 when that fails.  Quirks kept on purpose:
    ``5.0.0-rc1`` -> -1 and ``3.2.100`` -> 302100 (above ``6.0.0``)."""
    parts = v.split(".")
    while len(parts) < 3:
        parts.append("0")
    text = "".join(p.rjust(2, "0") for p in parts)
    try:
        return parse_go_int(text, 64)
    except ValueError:
        return -1
