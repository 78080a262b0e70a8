"""Go-compatible text formats: outputs of Go itself, plus round trips."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from datetime import UTC, timedelta, timezone
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorbits.gocompat import (
    ZERO_GTS,
    ZERO_RFC3339,
    Float32,
    NumError,
    days_from_civil,
    f32,
    format_duration,
    format_float32,
    format_go_datetime,
    format_gts,
    format_rfc1123,
    format_rfc3339nano,
    go_fields,
    go_isspace,
    go_json_dumps,
    go_json_marshal,
    go_quote,
    json_float32,
    json_float64,
    parse_go_bool,
    parse_go_float,
    parse_go_int,
    parse_go_uint,
    parse_gts,
    parse_gts_offset,
    parse_rfc3339nano,
    redis_version_number,
    zone_of_parsed_offset,
)

NS = 1_000_000_000


def epoch_ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, ns: int = 0,
             offset: int = 0) -> int:
    """Epoch nanoseconds of a wall time at a UTC offset (seconds), computed independently of the
    module's calendar code through datetime where the range allows."""
    from datetime import datetime
    dt = datetime(y, mo, d, h, mi, s, tzinfo=timezone(timedelta(seconds=offset)))
    base = datetime(1970, 1, 1, tzinfo=UTC)
    delta = dt - base
    return (delta.days * 86400 + delta.seconds) * NS + ns


# --- float32 ---------------------------------------------------------------------------------------

def test_f32_rounds_to_binary32() -> None:
    assert f32(51.507351) == struct.unpack("<f", struct.pack("<f", 51.507351))[0]
    assert f32(51.507351) != 51.507351
    assert f32(1e39) == float("inf")
    assert f32(-1e39) == float("-inf")
    assert Float32(48.8567) == f32(48.8567)


@pytest.mark.parametrize(("value", "text"), [
    (48.8582, "48.8582"),
    (-33.8688, "-33.8688"),
    (0.0, "0"),
    (51.507351, "51.50735"),
    (1e-05, "1e-05"),
    (1e06, "1e+06"),
    (123456.0, "123456"),
    (1234567.0, "1.234567e+06"),
    (0.0001, "0.0001"),
    (0.00001234, "1.234e-05"),
    (2.3387, "2.3387"),
    (-20.0, "-20"),
    (16777216.0, "1.6777216e+07"),
    (3.4028234663852886e38, "3.4028235e+38"),
    (1e-45, "1e-45"),
    (-0.0, "-0"),
    (float("inf"), "+Inf"),
    (1e39, "+Inf"),  # beyond float32: Go's float32(x) is +Inf
])
def test_format_float32_redis_examples(value: float, text: str) -> None:
    assert format_float32(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (48.8567, "48.8567"),
    (0.0, "0"),
    (100.0, "100"),
    (1e-7, "1e-7"),
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (1e-5, "0.00001"),
    (-2.5, "-2.5"),
])
def test_json_float32_examples(value: float, text: str) -> None:
    assert json_float32(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (48.856700897216797, "48.8567008972168"),
    (0.0, "0"),
    (100.0, "100"),
    (1e-7, "1e-7"),
    (1e-6, "0.000001"),
    (1.5e-10, "1.5e-10"),
    (1e21, "1e+21"),
    (123456789.0, "123456789"),
])
def test_json_float64_examples(value: float, text: str) -> None:
    assert json_float64(value) == text


def test_json_float32_threshold_is_float32_constant() -> None:
    # Go compares float32(abs) < float32(1e-6): the float32 nearest 1e-6 is written plainly.
    just_below = f32(1e-6)
    assert just_below < 1e-6
    assert "e" not in json_float32(just_below)
    assert "e" in json_float64(just_below)


def test_json_floats_reject_nan_and_inf() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            json_float64(bad)
        with pytest.raises(ValueError):
            json_float32(bad)


def _nearest_f32(fr: Fraction) -> float:
    """The float32 nearest to an exact rational (ties to even): an independent parser."""
    approx = f32(float(fr))
    bits = struct.unpack("<I", struct.pack("<f", approx))[0]
    cands = [approx]
    for b in (bits - 1, bits + 1):
        if 0 <= b < 0x7F800000:
            cands.append(struct.unpack("<f", struct.pack("<I", b))[0])
    def key(c: float) -> tuple[Fraction, int]:
        return abs(Fraction(c) - fr), struct.unpack("<I", struct.pack("<f", c))[0] & 1
    return min(cands, key=key)


def _digit_count(text: str) -> int:
    mant = text.lstrip("-").split("e")[0].replace(".", "")
    return len(mant.strip("0")) or 1


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None, database=None)
@given(finite32)
def test_float32_text_round_trips_and_is_shortest(x: float) -> None:
    import numpy as np

    for text in (format_float32(x), json_float32(x)):
        assert _nearest_f32(Fraction(text)) == x
        # numpy's Dragon4 "unique" mode is an independent shortest-digit implementation.
        ref = np.format_float_scientific(np.float32(x), unique=True, trim="-")
        assert _digit_count(text) == _digit_count(ref)
    assert parse_go_float(format_float32(x), 32) == x


@settings(max_examples=200, deadline=None, database=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float64_json_round_trips(x: float) -> None:
    assert float(json_float64(x)) == x
    assert float(json.loads(json_float64(x))) == x


# --- Go time strings -------------------------------------------------------------------------------

def test_gts_utc_examples() -> None:
    t = epoch_ns(2025, 6, 1, 6, 0, 0, 123456789)
    assert format_gts(t, "UTC") == "2025-06-01 06:00:00.123456789 +0000 UTC"
    assert format_gts(epoch_ns(2025, 6, 1, 6), "UTC") == "2025-06-01 06:00:00 +0000 UTC"
    assert format_gts(epoch_ns(2025, 6, 1, 6, ns=500_000_000), "GMT") == "2025-06-01 06:00:00.5 +0000 GMT"
    assert format_gts(epoch_ns(2025, 6, 1, 6, ns=120_000_000), "UTC") == "2025-06-01 06:00:00.12 +0000 UTC"
    assert format_gts(None) == ZERO_GTS == "0001-01-01 00:00:00 +0000 UTC"
    assert format_gts(epoch_ns(1, 1, 1), "UTC") == ZERO_GTS


def test_gts_local_zone_examples(local_tz: Callable[[str], None]) -> None:
    local_tz("Europe/Paris")
    assert format_gts(epoch_ns(2019, 3, 4, 12, 34, 56, 123456789, 3600)) == \
        "2019-03-04 12:34:56.123456789 +0100 CET"
    assert format_gts(epoch_ns(2025, 6, 1, 8, 0, 0, 500_000_000, 7200)) == "2025-06-01 08:00:00.5 +0200 CEST"
    local_tz("Europe/Istanbul")
    assert format_gts(epoch_ns(2025, 6, 1, 9, offset=10800)) == "2025-06-01 09:00:00 +0300 +03"
    local_tz("Asia/Kathmandu")
    assert format_gts(epoch_ns(2025, 6, 1, 9, offset=20700)) == "2025-06-01 09:00:00 +0545 +0545"


def test_gts_tzinfo_and_fixed_zones() -> None:
    t = epoch_ns(2025, 1, 15, 12, offset=3600)
    assert format_gts(t, ZoneInfo("Europe/Paris")) == "2025-01-15 12:00:00 +0100 CET"
    assert format_gts(t, timezone(timedelta(hours=1))) == "2025-01-15 12:00:00 +0100 +0100"
    assert format_gts(t, -5400) == "2025-01-15 09:30:00 -0130 -0130"
    assert format_gts(t, UTC) == "2025-01-15 11:00:00 +0000 UTC"


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-06-01 06:00:00.123456789 +0000 UTC", (epoch_ns(2025, 6, 1, 6, ns=123456789), 0)),
    ("2025-06-01 08:00:00.5 +0200 CEST", (epoch_ns(2025, 6, 1, 6, ns=500_000_000), 7200)),
    ("2025-06-01 09:00:00 +0300 +03", (epoch_ns(2025, 6, 1, 6), 10800)),
    ("2019-03-04 12:34:56.123456789 +0100 CET", (epoch_ns(2019, 3, 4, 11, 34, 56, 123456789), 3600)),
    ("2025-06-01 01:00:00 -0500 EST", (epoch_ns(2025, 6, 1, 6), -18000)),
    ("2025-06-01 11:45:00 +0545 +0545", (epoch_ns(2025, 6, 1, 6), 20700)),
    # any number of fraction digits; beyond 9 they are truncated like Go
    ("2025-06-01 06:00:00.1234567891 +0000 UTC", (epoch_ns(2025, 6, 1, 6, ns=123456789), 0)),
    ("1970-01-01 00:00:00 +0000 UTC", (0, 0)),
])
def test_parse_gts_examples(text: str, expected: tuple[int, int]) -> None:
    assert parse_gts_offset(text) == expected
    assert parse_gts(text) == expected[0]


@pytest.mark.parametrize("text", [
    "",
    "garbage",
    "0001-01-01 00:00:00 +0000 UTC",
    "2025-06-01 06:00:00.123456789 +0000 UTC m=+0.000123",
    "2025-06-01 06:00:00 +0000",
    "2025-06-01T06:00:00Z",
    "2025-02-30 06:00:00 +0000 UTC",
    "2025-06-01 24:00:00 +0000 UTC",
    "2025-06-01 06:00:60 +0000 UTC",
    "2025-06-01 06:00:00 +0000 UTC trailing",
])
def test_parse_gts_zero_time(text: str) -> None:
    assert parse_gts(text) is None
    assert parse_gts_offset(text) is None


def test_parse_gts_zero_instant_in_other_zone_is_zero() -> None:
    # Same instant as Go's zero time, written in Paris LMT: IsZero() is true in Go too.
    assert parse_gts("0001-01-01 00:09:00 +0009 LMT") is None


zones = st.sampled_from(["local", "UTC", "GMT", ZoneInfo("Europe/Paris"), ZoneInfo("America/Sao_Paulo"),
                         ZoneInfo("Asia/Kathmandu"), timezone(timedelta(hours=-3, minutes=-30)), 19800])


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(min_value=epoch_ns(1, 1, 1) + 1, max_value=epoch_ns(9999, 12, 30)), zones)
def test_gts_round_trip(t: int, zone: object) -> None:
    if isinstance(zone, ZoneInfo) and t < 0:
        # Before 1970 tzdata uses LMT offsets with seconds (+05:41:16), which the ±hhmm text
        # cannot carry (Go loses them too); keep named zones to the modern era.
        zone = "UTC"
    text = format_gts(t, zone)  # type: ignore[arg-type]
    assert parse_gts(text) == t


def test_days_from_civil() -> None:
    assert days_from_civil(1970, 1, 1) == 0
    assert days_from_civil(2000, 3, 1) == 11017
    assert days_from_civil(1, 1, 1) * 86400 == -62135596800


# --- RFC 3339 / other layouts ----------------------------------------------------------------------

def test_rfc3339nano() -> None:
    t = epoch_ns(2025, 6, 1, 6, ns=123456789)
    assert format_rfc3339nano(t, "UTC") == "2025-06-01T06:00:00.123456789Z"
    assert format_rfc3339nano(t, 7200) == "2025-06-01T08:00:00.123456789+02:00"
    assert format_rfc3339nano(epoch_ns(2025, 6, 1, 6, ns=100_000_000), -9000) == "2025-06-01T03:30:00.1-02:30"
    assert format_rfc3339nano(None) == ZERO_RFC3339 == "0001-01-01T00:00:00Z"
    assert format_rfc3339nano(epoch_ns(2025, 6, 1, 6), "GMT") == "2025-06-01T06:00:00Z"


def test_rfc3339nano_local(local_tz: Callable[[str], None]) -> None:
    local_tz("Europe/Paris")
    t = epoch_ns(2024, 1, 2, 3, 4, 5, 123456789, 3600)
    assert format_rfc3339nano(t) == "2024-01-02T03:04:05.123456789+01:00"
    local_tz("Europe/London")
    assert format_rfc3339nano(epoch_ns(2024, 1, 2, 3)) == "2024-01-02T03:00:00Z"


def test_parse_rfc3339nano_and_zone(local_tz: Callable[[str], None]) -> None:
    local_tz("Europe/Paris")
    ns, off = parse_rfc3339nano("2024-01-02T03:04:05.123456789+01:00")  # type: ignore[misc]
    assert (ns, off) == (epoch_ns(2024, 1, 2, 3, 4, 5, 123456789, 3600), 3600)
    assert format_go_datetime(ns, zone_of_parsed_offset(ns, off)) == "2024-01-02 03:04:05 CET"
    ns2, off2 = parse_rfc3339nano("2026-11-26T03:22:54.463553452Z")  # type: ignore[misc]
    assert off2 is None
    assert format_go_datetime(ns2, zone_of_parsed_offset(ns2, off2)) == "2026-11-26 03:22:54 UTC"
    local_tz("UTC")
    assert format_go_datetime(ns, zone_of_parsed_offset(ns, off)) == "2024-01-02 03:04:05 +0100"
    assert parse_rfc3339nano("2024-01-02 03:04:05Z") is None
    assert parse_rfc3339nano("") is None


def test_rfc1123() -> None:
    assert format_rfc1123(None) == "Mon, 01 Jan 0001 00:00:00 UTC"
    assert format_rfc1123(epoch_ns(2006, 1, 2, 15, 4, 5)) == "Mon, 02 Jan 2006 15:04:05 UTC"
    assert format_rfc1123(epoch_ns(2024, 2, 29, 23, 59, 59)) == "Thu, 29 Feb 2024 23:59:59 UTC"


# --- durations -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"),
    (1, "1ns"),
    (999, "999ns"),
    (1500, "1.5µs"),
    (500_000_000, "500ms"),
    (1_500_000, "1.5ms"),
    (10 * NS, "10s"),
    (100 * NS, "1m40s"),
    (3600 * NS, "1h0m0s"),
    (5400 * NS + 500_000_000, "1h30m0.5s"),
    (-10 * NS, "-10s"),
    (-1800 * NS, "-30m0s"),
    (1_500_000_000, "1.5s"),
    (-1500, "-1.5µs"),
    ((1 << 63) - 1, "2562047h47m16.854775807s"),
    (-(1 << 63), "-2562047h47m16.854775808s"),
])
def test_format_duration(ns: int, text: str) -> None:
    assert format_duration(ns) == text
    assert _duration_ns(text) == ns


_UNIT_NS = {"h": 3600 * NS, "m": 60 * NS, "s": NS, "ms": 1_000_000, "µs": 1_000, "ns": 1}


def _duration_ns(text: str) -> int:
    """An independent reading of Go's Duration text (units with decimal fractions), exact."""
    body = text[1:] if text.startswith("-") else text
    parts = re.findall(r"([0-9.]+)(h|ms|m|µs|ns|s)", body)
    assert "".join(n + u for n, u in parts) == body, text
    total = sum(Fraction(n) * _UNIT_NS[u] for n, u in parts)
    assert total.denominator == 1
    return -int(total) if text.startswith("-") else int(total)


@settings(database=None)
@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_duration_round_trip(ns: int) -> None:
    assert _duration_ns(format_duration(ns)) == ns


# --- encoding/json ---------------------------------------------------------------------------------

def test_json_escapes_like_go() -> None:
    assert go_json_marshal("<a href='x'>&</a>") == '"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e"'
    assert go_json_marshal("\u2028\u2029") == '"\\u2028\\u2029"'
    assert go_json_marshal('q"b\\') == '"q\\"b\\\\"'
    assert go_json_marshal("\n\r\t\x00\x1f\x7f") == '"\\n\\r\\t\\u0000\\u001f\x7f"'
    assert go_json_marshal("é✓") == '"é✓"'
    # undecodable bytes (surrogateescape) become U+FFFD, one per byte, like Go
    bad = b"a\xff\xfeb".decode("utf-8", "surrogateescape")
    assert go_json_marshal(bad) == '"a\\ufffd\\ufffdb"'


def test_json_values_and_newline() -> None:
    doc: dict[str, object] = {"b": True, "n": None, "i": -3, "f": 0.1, "f32": Float32(0.1), "s": [], "o": {}, "l": [1, "x"]}
    assert go_json_dumps(doc) == \
        '{"b":true,"n":null,"i":-3,"f":0.1,"f32":0.1,"s":[],"o":{},"l":[1,"x"]}\n'
    assert go_json_marshal(Float32(48.8567)) == "48.8567"
    # a plain float holding a float32 value gets the float64 shortest form
    assert go_json_marshal(f32(48.8567)) == "48.8567008972168"
    with pytest.raises(ValueError):
        go_json_marshal({"x": float("nan")})
    with pytest.raises(TypeError):
        go_json_marshal({"x": object()})


def test_json_pretty() -> None:
    doc = {"Path": "/a", "List": [{"ID": 1, "Up": False}], "Empty": [], "Obj": {}}
    assert go_json_dumps(doc, pretty=True) == (
        '{\n'
        '    "Path": "/a",\n'
        '    "List": [\n'
        '        {\n'
        '            "ID": 1,\n'
        '            "Up": false\n'
        '        }\n'
        '    ],\n'
        '    "Empty": [],\n'
        '    "Obj": {}\n'
        '}'
    )


def test_json_document_of_a_go_node() -> None:
    """A JSON answer captured from a Go node, rebuilt from values, must come out byte for byte."""
    zero = format_rfc3339nano(None)
    mirror = {
        "ID": 1, "Name": "m1", "HttpURL": "http://a.mirror/", "RsyncURL": "", "FtpURL": "",
        "SponsorName": "", "SponsorURL": "", "SponsorLogoURL": "", "AdminName": "", "AdminEmail": "",
        "CustomData": "", "ContinentOnly": False, "CountryOnly": False, "ASOnly": False, "Score": 0,
        "Latitude": Float32(0), "Longitude": Float32(0), "ContinentCode": "", "CountryCodes": "FR DE",
        "ExcludedCountryCodes": "", "Asnum": 0, "Comment": "", "Enabled": True, "StateSince": zero,
        "Distance": Float32(0), "ComputedScore": 0, "LastSync": zero, "LastSuccessfulSync": zero,
        "LastSuccessfulSyncProtocol": 0, "LastSuccessfulSyncPrecision": 0, "LastModTime": zero,
        "AbsoluteURL": "http://a.mirror/",
    }
    doc = {
        "FileInfo": {"Path": "/testy.tgz", "Size": 48,
                     "ModTime": format_rfc3339nano(parse_gts("2025-06-01 06:00:00.123456789 +0000 UTC"), 0),
                     "Sha256": "1235a5b3…82ec"},
        "IP": "192.0.2.1",
        "ClientInfo": {"CountryCode": "", "ContinentCode": "", "City": "", "Country": "",
                       "Latitude": Float32(0), "Longitude": Float32(0), "ASName": "", "ASNum": 0},
        "MirrorList": [mirror],
        "LocalJSPath": "",
    }
    expected = (
        '{"FileInfo":{"Path":"/testy.tgz","Size":48,"ModTime":"2025-06-01T06:00:00.123456789Z",'
        '"Sha256":"1235a5b3…82ec"},"IP":"192.0.2.1","ClientInfo":{"CountryCode":"","ContinentCode":"",'
        '"City":"","Country":"","Latitude":0,"Longitude":0,"ASName":"","ASNum":0},'
        '"MirrorList":[{"ID":1,"Name":"m1","HttpURL":"http://a.mirror/","RsyncURL":"","FtpURL":"",'
        '"SponsorName":"","SponsorURL":"","SponsorLogoURL":"","AdminName":"","AdminEmail":"","CustomData":"",'
        '"ContinentOnly":false,"CountryOnly":false,"ASOnly":false,"Score":0,"Latitude":0,"Longitude":0,'
        '"ContinentCode":"","CountryCodes":"FR DE","ExcludedCountryCodes":"","Asnum":0,"Comment":"",'
        '"Enabled":true,"StateSince":"0001-01-01T00:00:00Z","Distance":0,"ComputedScore":0,'
        '"LastSync":"0001-01-01T00:00:00Z","LastSuccessfulSync":"0001-01-01T00:00:00Z",'
        '"LastSuccessfulSyncProtocol":0,"LastSuccessfulSyncPrecision":0,"LastModTime":"0001-01-01T00:00:00Z",'
        '"AbsoluteURL":"http://a.mirror/"}],"LocalJSPath":""}\n'
    )
    assert go_json_dumps(doc) == expected


@settings(max_examples=60, database=None, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=20))
def test_json_is_valid_json(value: object) -> None:
    def same(a: object, b: object) -> bool:
        if isinstance(b, float):  # whole floats come out without ".0" and read back as int
            return isinstance(a, (int, float)) and not isinstance(a, bool) and float(a) == b
        if isinstance(b, list):
            return isinstance(a, list) and len(a) == len(b) and all(map(same, a, b))
        if isinstance(b, dict):
            return isinstance(a, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
        return type(a) is type(b) and a == b
    assert same(json.loads(go_json_dumps(value)), value)
    assert same(json.loads(go_json_dumps(value, pretty=True)), value)


# --- strconv ---------------------------------------------------------------------------------------

def test_parse_go_bool() -> None:
    for t in ("1", "t", "T", "true", "TRUE", "True"):
        assert parse_go_bool(t) is True
    for f in ("0", "f", "F", "false", "FALSE", "False"):
        assert parse_go_bool(f) is False
    for bad in ("", "yes", "tRUE", " 1", "2"):
        with pytest.raises(ValueError):
            parse_go_bool(bad)


def test_parse_go_int() -> None:
    assert parse_go_int("42") == 42
    assert parse_go_int("-3600000") == -3600000
    assert parse_go_int("+7") == 7
    assert parse_go_int("127", 8) == 127
    assert parse_go_int("9223372036854775807") == (1 << 63) - 1
    assert parse_go_int("18446744073709551615", 64, signed=False) == (1 << 64) - 1
    for bad, bits, signed in [("", 64, True), ("1.5", 64, True), (" 1", 64, True), ("1_000", 64, True),
                              ("128", 8, True), ("-129", 8, True), ("9223372036854775808", 64, True),
                              ("-1", 64, False), ("+1", 64, False), ("0x10", 64, True), ("١", 64, True)]:
        with pytest.raises(ValueError):
            parse_go_int(bad, bits, signed)


def test_parse_go_float() -> None:
    assert parse_go_float("-20.000000", 32) == -20.0
    assert parse_go_float("48.8582", 32) == f32(48.8582)
    assert parse_go_float("1e-05", 32) == f32(1e-5)
    assert parse_go_float(".5") == 0.5
    for bad in ("", "abc", "1_0", "1e", "0x1p3 "):
        with pytest.raises(ValueError):
            parse_go_float(bad)
    with pytest.raises(ValueError):
        parse_go_float("1e39", 32)


def test_go_isspace_is_unicode_isspace_of_go() -> None:
    assert all(go_isspace(c) for c in "\t\n\v\f\r \x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000")
    assert not any(go_isspace(c) for c in "a\x1c\x1f\u200b\ufeff_")


def test_go_fields() -> None:
    assert go_fields("  FR\tDE\u00a0BE\n") == ["FR", "DE", "BE"]
    assert go_fields("a\x1cb") == ["a\x1cb"]  # not a Go space
    assert go_fields("") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("10", 10), ("+7", 7), ("-7", -7), ("0x1F", 31), ("0X1f", 31), ("010", 8), ("0o17", 15),
     ("0b101", 5), ("1_000", 1000), ("0x_1F", 31), ("-9223372036854775808", -(2**63))],
)
def test_parse_go_int_base0_accepts(text: str, value: int) -> None:
    assert parse_go_int(text, base=0) == value


@pytest.mark.parametrize("text", ["", "abc", "1.5", "08", "_1", "1_", "1__0", "0x", "--1", "+-1", " 1", "-"])
def test_parse_go_int_base0_rejects_syntax(text: str) -> None:
    with pytest.raises(NumError, match="invalid syntax$") as info:
        parse_go_int(text, base=0)
    assert not info.value.out_of_range and info.value.func == "ParseInt"


def test_parse_go_int_base0_range() -> None:
    with pytest.raises(NumError, match="out of range$"):
        parse_go_int("9223372036854775808", base=0)
    with pytest.raises(NumError, match="out of range$"):
        parse_go_int("-0x81", 8, base=0)
    assert parse_go_int("-0x80", 8, base=0) == -128
    assert parse_go_int("127", bits=8, base=0) == 127


def test_parse_go_uint_bases() -> None:
    assert parse_go_uint("18446744073709551615") == 2**64 - 1
    assert parse_go_uint("0x10", base=0) == 16
    assert parse_go_uint("010", base=0) == 8
    assert parse_go_uint("010") == 10
    assert parse_go_uint("1_000", base=0) == 1000
    with pytest.raises(NumError, match="out of range$"):
        parse_go_uint("18446744073709551616", base=0)
    with pytest.raises(NumError, match="out of range$"):
        parse_go_uint("256", 8)
    for bad in ("-1", "+1", "", "1_000", "0x10"):
        with pytest.raises(NumError, match=r'^strconv\.ParseUint: parsing ".*": invalid syntax$'):
            parse_go_uint(bad)
    for bad in ("-1", "+1", "", "1__0", "0x"):
        with pytest.raises(NumError, match="invalid syntax$"):
            parse_go_uint(bad, base=0)


def test_go_quote() -> None:
    assert go_quote("localhost") == '"localhost"'
    assert go_quote('a"b\\c\n\t\x01\x7f') == '"a\\"b\\\\c\\n\\t\\x01\\x7f"'
    assert go_quote("é") == '"é"'


# --- Redis version -------------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "number"), [
    ("3.2", 30200), ("6.2.14", 60214), ("", 0), ("5.0.0-rc1", -1), ("3.2.100", 302100), ("3.2.0", 30200),
])
def test_redis_version_number(version: str, number: int) -> None:
    assert redis_version_number(version) == number


def test_redis_version_comparisons() -> None:
    minimum = redis_version_number("3.2.0")
    for lower in ("", "2.0", "2.0.0"):
        assert redis_version_number(lower) < minimum
    assert redis_version_number("2.0.0") < redis_version_number("3.2")
    for ok in ("3.2", "6.0"):
        assert redis_version_number(ok) >= minimum
    assert redis_version_number("6.0.0") >= redis_version_number("3.2")
    assert redis_version_number("3.2.100") > redis_version_number("6.0.0")  # kept Go quirk


def test_civil_to_unix_ns_refuses_what_time_parse_refuses() -> None:
    from mirrorbits.gocompat import ZERO_TIME_NS, civil_to_unix_ns

    assert civil_to_unix_ns(1970, 1, 1) == 0
    assert civil_to_unix_ns(2019, 3, 4, 12, 34, 56, 7) == 1551702896 * 10**9 + 7
    assert civil_to_unix_ns(1, 1, 1) == ZERO_TIME_NS
    assert civil_to_unix_ns(2000, 2, 29) == 951782400 * 10**9
    for bad in ((1900, 2, 29), (2019, 4, 31), (2019, 13, 1), (2019, 1, 0), (2019, 1, 1, 24),
                (2019, 1, 1, 0, 60), (2019, 1, 1, 0, 0, 60)):
        assert civil_to_unix_ns(*bad) is None, bad
