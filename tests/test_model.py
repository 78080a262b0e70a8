"""Mirror/FileInfo records and the mirror log: Go's Redis encodings, read back through a real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from mirrorbits.gocompat import Float32, format_gts, parse_gts
from mirrorbits.model import (
    LOG_ADDED,
    LOG_ERROR,
    LOG_SCAN_COMPLETED,
    LOG_SCAN_STARTED,
    LOG_STATE_CHANGED,
    PROTO_HTTPS,
    EmptyMirrorHash,
    FileInfo,
    Mirror,
    mirror_log_json,
    normalize_codes,
    normalize_url,
    render_mirror_log,
)
from tests.fixtures.redis import RedisServer

NS = 1_000_000_000


#: MIRROR_7 as a Go daemon leaves it after `add`, a scan and a health check.
GO_HASH = {
    "ID": "7", "name": "mirror1", "http": "https://m.example.org/pub/", "rsync": "rsync://m.example.org/pub/",
    "ftp": "", "sponsorName": "ACME Corp", "sponsorURL": "https://acme.example", "sponsorLogo": "",
    "adminName": "Jane", "adminEmail": "jane@example.org", "customData": "", "continentOnly": "0",
    "countryOnly": "1", "asOnly": "0", "score": "-10", "latitude": "48.8582", "longitude": "2.3387",
    "continentCode": "EU", "countryCodes": "FR BE", "excludedCountryCodes": "DE", "asnum": "64500",
    "comment": "line1\nline2", "allowredirects": "2", "enabled": "1", "httpUp": "0", "httpsUp": "1",
    "httpDownReason": "", "httpsDownReason": "", "stateSince": "1707052800", "lastSync": "1707052900",
    "lastSuccessfulSync": "1707052901", "lastSuccessfulSyncProtocol": "0",
    "lastSuccessfulSyncPrecision": "1000000000", "tzoffset": "-3600000", "lastModTime": "0",
}


def test_from_redis_go_hash() -> None:
    m = Mirror.from_redis(GO_HASH)
    assert m.id == 7 and m.name == "mirror1" and m.http_url == "https://m.example.org/pub/"
    assert m.country_only and not m.continent_only and not m.as_only
    assert m.score == -10 and m.asnum == 64500 and m.allow_redirects == 2
    assert isinstance(m.latitude, Float32) and m.latitude == Float32(48.8582)
    assert m.longitude == Float32(2.3387)
    assert m.enabled and not m.http_up and m.https_up
    assert (m.state_since, m.last_sync, m.last_successful_sync) == (1707052800, 1707052900, 1707052901)
    assert m.last_mod_time == 0  # "0" is a real time (1970), not "no time"
    assert m.tz_offset == -3600000
    assert m.last_successful_sync_precision == NS
    assert m.comment == "line1\nline2"
    assert m.country_list == ["FR", "BE"] and m.excluded_country_codes == "DE"
    assert m.to_redis() and dict(m.to_redis()) == GO_HASH


def test_from_redis_go_spellings() -> None:
    # Bools as true/false, latitude "-20.000000": what other Go writers leave in the hash
    m = Mirror.from_redis({"ID": "1", "enabled": "true", "httpUp": "false", "latitude": "-20.000000",
                           "asnum": "444", "countryCodes": "FR UK", "unknownField": "whatever"})
    assert (m.id, m.enabled, m.http_up, m.latitude, m.asnum) == (1, True, False, -20.0, 444)
    assert m.country_list == ["FR", "UK"]


def test_missing_fields_take_zero_values() -> None:
    m = Mirror.from_redis({"ID": "3"})
    assert m == Mirror(id=3)
    assert m.state_since is None and m.last_sync is None and m.last_mod_time is None
    assert m.name == "" and m.score == 0 and not m.enabled and m.latitude == 0


def test_from_redis_accepts_bytes() -> None:
    m = Mirror.from_redis({k.encode(): v.encode() for k, v in GO_HASH.items()})
    assert m == Mirror.from_redis(GO_HASH)


def test_empty_hash_is_an_error() -> None:
    with pytest.raises(EmptyMirrorHash):
        Mirror.from_redis({})


@pytest.mark.parametrize(("field", "bad"), [
    ("ID", "x"), ("ID", "1.0"), ("score", "1.5"), ("score", " 1"), ("enabled", "yes"), ("httpUp", "2"),
    ("continentOnly", ""), ("latitude", "north"), ("longitude", "1e39"), ("asnum", "-1"),
    ("stateSince", "2024-01-01"), ("lastSync", "1.5"), ("lastSuccessfulSyncProtocol", "128"),
    ("lastSuccessfulSyncPrecision", "1s"), ("tzoffset", "9223372036854775808"), ("allowredirects", "null"),
    ("lastModTime", ""),
])
def test_bad_field_fails_whole_load_naming_it(field: str, bad: str) -> None:
    h = dict(GO_HASH, **{field: bad})
    with pytest.raises(ValueError, match=f"'{field}'"):
        Mirror.from_redis(h)


def test_config_fields_to_redis_order_and_encodings() -> None:
    m = Mirror.from_redis(GO_HASH)
    assert m.config_fields_to_redis() == [
        ("ID", "7"), ("name", "mirror1"), ("http", "https://m.example.org/pub/"),
        ("rsync", "rsync://m.example.org/pub/"), ("ftp", ""), ("sponsorName", "ACME Corp"),
        ("sponsorURL", "https://acme.example"), ("sponsorLogo", ""), ("adminName", "Jane"),
        ("adminEmail", "jane@example.org"), ("customData", ""), ("continentOnly", "0"), ("countryOnly", "1"),
        ("asOnly", "0"), ("score", "-10"), ("latitude", "48.8582"), ("longitude", "2.3387"),
        ("continentCode", "EU"), ("countryCodes", "FR BE"), ("excludedCountryCodes", "DE"),
        ("asnum", "64500"), ("comment", "line1\nline2"), ("allowredirects", "2"), ("enabled", "1"),
        ("httpUp", "0"),
    ]


def test_config_fields_forced_down_flag() -> None:
    assert Mirror(http_url="http://a/").config_fields_to_redis()[-1] == ("httpsUp", "0")
    assert Mirror(http_url="https://a/").config_fields_to_redis()[-1] == ("httpUp", "0")
    assert Mirror(http_url="a/").config_fields_to_redis()[-1] == ("enabled", "0")
    pairs = dict(Mirror(latitude=51.507351, longitude=1e-5).config_fields_to_redis())
    assert (pairs["latitude"], pairs["longitude"]) == ("51.50735", "1e-05")


def test_normalisation() -> None:
    assert normalize_codes("fr,de  be") == "FR DE BE"
    assert normalize_codes(" eu ") == "EU"
    assert normalize_codes("") == ""
    assert normalize_url("http://a/b") == "http://a/b/"
    assert normalize_url("http://a/b/") == "http://a/b/"
    assert normalize_url("") == ""
    m = Mirror(http_url="127.0.0.3/repo", rsync_url="rsync://x/y", continent_code="eu",
               country_codes="fr,de", excluded_country_codes="us , ca").normalized()
    assert (m.http_url, m.rsync_url, m.ftp_url) == ("127.0.0.3/repo/", "rsync://x/y/", "")
    assert (m.continent_code, m.country_codes, m.excluded_country_codes) == ("EU", "FR DE", "US CA")


@pytest.mark.parametrize(("url", "http_up", "https_up", "up"), [
    ("http://a/", True, True, True),
    ("http://a/", False, False, False),
    ("http://a/", True, False, True),
    ("https://a/", True, False, False),
    ("https://a/", False, True, True),
    ("a/", True, False, False),  # scheme-less with mixed flags is not up
    ("a/", False, True, False),
    ("a/", True, True, True),
])
def test_is_up(url: str, http_up: bool, https_up: bool, up: bool) -> None:
    assert Mirror(http_url=url, http_up=http_up, https_up=https_up).is_up() is up


def test_mirror_round_trip_through_redis(redis_db: RedisServer) -> None:
    r = redis_db.client()
    m = Mirror(id=5, name="m5", http_url="http://a.example/", latitude=-33.8688, longitude=151.2093,
               country_codes="AU", score=3, enabled=True, allow_redirects=1, comment="é <&>")
    r.hset("MIRROR_5", mapping=dict(m.config_fields_to_redis()))
    r.hset("MIRROR_5", mapping={"httpUp": "1", "stateSince": "1707052800"})
    raw = redis_db.client(decode=False).hgetall("MIRROR_5")
    assert raw[b"latitude"] == b"-33.8688" and raw[b"enabled"] == b"1" and raw[b"httpsUp"] == b"0"
    back = Mirror.from_redis(raw)
    assert back.latitude == m.latitude and back.comment == "é <&>"
    assert back == replace(m, http_up=True, state_since=1707052800)


# --- FileInfo ------------------------------------------------------------------------------------

def test_fileinfo_from_hmget() -> None:
    fi = FileInfo.from_redis("/test/file.tgz", ["43000", "2025-06-01 08:00:00.5 +0200 CEST", "aa", "bb", "cc"])
    assert fi.size == 43000 and (fi.sha1, fi.sha256, fi.md5) == ("aa", "bb", "cc")
    assert fi.mod_time_ns == int(datetime(2025, 6, 1, 6, tzinfo=UTC).timestamp()) * NS + 500_000_000
    assert fi.mod_time_offset == 7200
    assert fi.mod_time_rfc3339() == "2025-06-01T08:00:00.5+02:00"


def test_fileinfo_unknown_and_invalid() -> None:
    assert FileInfo.from_redis("/x", [None] * 5) == FileInfo("/x")
    assert FileInfo.from_redis("/x", [""] * 5) == FileInfo("/x")
    fi = FileInfo.from_redis("/x", ["12a", "2025-06-01 06:00:00 +0000 UTC m=+0.1", None, None, None])
    assert (fi.size, fi.mod_time_ns) == (0, None)
    assert fi.mod_time_rfc3339() == "0001-01-01T00:00:00Z"
    assert FileInfo.from_redis("/x", [b"7", b"2025-06-01 06:00:00 +0000 UTC"]).size == 7


def test_fileinfo_reads_what_the_scanners_write(redis_db: RedisServer, local_tz: Callable[[str], None]) -> None:
    local_tz("Europe/Paris")
    t = int(datetime(2019, 3, 4, 11, 34, 56, tzinfo=UTC).timestamp()) * NS + 123456789
    assert format_gts(t) == "2019-03-04 12:34:56.123456789 +0100 CET"
    r = redis_db.client()
    r.hset("FILE_/a/b.iso", mapping={"size": "10", "modTime": format_gts(t), "sha1": "", "sha256": "ab" * 32,
                                     "md5": ""})
    back = FileInfo.from_redis("/a/b.iso", r.hmget("FILE_/a/b.iso", "size", "modTime", "sha1", "sha256", "md5"))
    assert back.mod_time_ns == t and back.size == 10 and back.sha256 == "ab" * 32
    assert back.mod_time_offset == 3600 and back.mod_time_rfc3339() == "2019-03-04T12:34:56.123456789+01:00"


# --- mirror log ----------------------------------------------------------------------------------

def test_mirror_log_json_go_example(local_tz: Callable[[str], None]) -> None:
    local_tz("Europe/Paris")
    ts = int(datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC).timestamp()) * NS + 123456789
    line = mirror_log_json(LOG_STATE_CHANGED, 3, ts, Proto=PROTO_HTTPS, Up=False, Reason="Unreachable")
    assert line == ('{"Type":6,"MirrorID":3,"Timestamp":"2024-01-02T03:04:05.123456789+01:00",'
                    '"Proto":2,"Up":false,"Reason":"Unreachable"}')
    assert render_mirror_log(line) == "2024-01-02 03:04:05 CET: HTTPS mirror is down: Unreachable"


def test_mirror_log_rendering(redis_db: RedisServer, local_tz: Callable[[str], None]) -> None:
    local_tz("UTC")
    ts = int(datetime(2026, 11, 26, 3, 22, 54, tzinfo=UTC).timestamp()) * NS + 463553452
    entries = [
        mirror_log_json(LOG_ADDED, 1, ts),
        mirror_log_json(LOG_SCAN_STARTED, 1, ts, Typ=0),
        mirror_log_json(LOG_ERROR, 1, ts, Err="rsync: Error in socket I/O"),
        mirror_log_json(LOG_SCAN_COMPLETED, 1, ts, FilesIndexed=3, KnownIndexed=2, Removed=0, TZOffset=0),
        mirror_log_json(LOG_SCAN_COMPLETED, 1, ts, FilesIndexed=1, KnownIndexed=1, Removed=2, TZOffset=3600000),
        mirror_log_json(LOG_STATE_CHANGED, 1, ts, Proto=1, Up=True, Reason=""),
        mirror_log_json(LOG_STATE_CHANGED, 1, ts, Proto=0, Up=False, Reason=""),
        mirror_log_json(LOG_SCAN_STARTED, 1, ts, Typ=5),
        "not json",
        '{"Type":99,"MirrorID":1,"Timestamp":"2026-11-26T03:22:54Z"}',
        '{"Type":1,"MirrorID":1,"Timestamp":"yesterday","Err":"x"}',
    ]
    assert json.loads(entries[0]) == {"Type": 2, "MirrorID": 1, "Timestamp": "2026-11-26T03:22:54.463553452Z"}
    r = redis_db.client()
    r.rpush("MIRRORLOGS_1", *entries)
    rendered = [render_mirror_log(x) for x in r.lrange("MIRRORLOGS_1", -500, -1)]
    assert [x for x in rendered if x is not None] == [
        "2026-11-26 03:22:54 UTC: Mirror added",
        "2026-11-26 03:22:54 UTC: RSYNC scan started",
        "2026-11-26 03:22:54 UTC: Error: rsync: Error in socket I/O",
        "2026-11-26 03:22:54 UTC: Scan completed: 3 files (2 known), 0 removed",
        "2026-11-26 03:22:54 UTC: Scan completed: 1 files (1 known), 2 removed "
        "(corrected timezone offset: 1h0m0s)",
        "2026-11-26 03:22:54 UTC: HTTP mirror is up",
        "2026-11-26 03:22:54 UTC: Mirror is down",
        "2026-11-26 03:22:54 UTC: Scan started using a unknown protocol",
    ]
    assert rendered[-3:] == [None, None, None]


def test_log_foreign_offset_is_numeric(local_tz: Callable[[str], None]) -> None:
    local_tz("UTC")
    line = '{"Type":4,"MirrorID":2,"Timestamp":"2024-01-02T03:04:05.5+01:00"}'
    assert render_mirror_log(line) == "2024-01-02 03:04:05 +0100: Mirror enabled"


def _entry(**kw: object) -> str:
    return json.dumps({"MirrorID": 1, "Timestamp": "2026-11-26T03:22:54.463553452Z", **kw})


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"Type": 1, "Err": "rsync: Error in socket I/O"}, "Error: rsync: Error in socket I/O"),
        ({"Type": 2}, "Mirror added"),
        ({"Type": 3}, "Mirror edited"),
        ({"Type": 4}, "Mirror enabled"),
        ({"Type": 5}, "Mirror disabled"),
        ({"Type": 6, "Proto": 1, "Up": True, "Reason": ""}, "HTTP mirror is up"),
        ({"Type": 6, "Proto": 2, "Up": False, "Reason": ""}, "HTTPS mirror is down"),
        ({"Type": 6, "Proto": 1, "Up": False, "Reason": "Unreachable"}, "HTTP mirror is down: Unreachable"),
        ({"Type": 6, "Proto": 0, "Up": True}, "Mirror is up"),
        ({"Type": 7, "Typ": 0}, "RSYNC scan started"),
        ({"Type": 7, "Typ": 1}, "FTP scan started"),
        ({"Type": 7, "Typ": 9}, "Scan started using a unknown protocol"),
        ({"Type": 8, "FilesIndexed": 3, "KnownIndexed": 2, "Removed": 0, "TZOffset": 0},
         "Scan completed: 3 files (2 known), 0 removed"),
        ({"Type": 8, "FilesIndexed": 3, "KnownIndexed": 2, "Removed": 1, "TZOffset": -1800000},
         "Scan completed: 3 files (2 known), 1 removed (corrected timezone offset: -30m0s)"),
    ],
)
def test_log_lines(fields: dict[str, object], text: str, local_tz: Callable[[str], None]) -> None:
    local_tz("UTC")
    assert render_mirror_log(_entry(**fields)) == f"2026-11-26 03:22:54 UTC: {text}"


def test_log_skips_bad_entries() -> None:
    assert render_mirror_log("not json") is None
    assert render_mirror_log(_entry(Type=42)) is None
    assert render_mirror_log(json.dumps([1, 2])) is None
    assert render_mirror_log(_entry(Type="2")) is None


def test_log_timestamp_zones(local_tz: Callable[[str], None]) -> None:
    local_tz("Europe/Paris")
    e = json.dumps({"Type": 2, "MirrorID": 1, "Timestamp": "2026-01-15T10:00:00.5+01:00"})
    assert render_mirror_log(e) == "2026-01-15 10:00:00 CET: Mirror added"
    e = json.dumps({"Type": 2, "MirrorID": 1, "Timestamp": "2026-07-15T10:00:00+02:00"})
    assert render_mirror_log(e) == "2026-07-15 10:00:00 CEST: Mirror added"
    e = json.dumps({"Type": 2, "MirrorID": 1, "Timestamp": "2026-07-15T10:00:00-03:30"})
    assert render_mirror_log(e) == "2026-07-15 10:00:00 -0330: Mirror added"


def test_gts_written_for_files_is_parseable_by_both_sides() -> None:
    # What the local scanner writes must read back as the same instant.
    t = 1_700_000_000 * NS + 1
    assert parse_gts(format_gts(t)) == t
