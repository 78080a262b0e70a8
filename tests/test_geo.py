"""GeoIP against MaxMind's test databases; expected values come from their JSON sources."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mirrorbits.geo import (
    ASN_DB,
    CITY_DB,
    EMPTY_RECORD,
    GeoIP,
    GeoIPLoadError,
    GeoIPService,
    GeoRecord,
    parse_ip,
)

DATA = Path(__file__).resolve().parent / "data" / "geoip"
CITY_SRC = DATA / "GeoLite2-City-Test.mmdb"
ASN_SRC = DATA / "GeoLite2-ASN-Test.mmdb"
BROKEN_CITY_SRC = DATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb"


@cache
def _source(name: str) -> list[tuple[Any, dict[str, Any]]]:
    """(network, data) pairs of a test DB's JSON source, most specific network first."""
    entries = []
    for item in json.loads((DATA / name).read_text()):
        for net, data in item.items():
            entries.append((ipaddress.ip_network(net), data))
    entries.sort(key=lambda e: -e[0].prefixlen)
    return entries


def _find(name: str, ip: str) -> dict[str, Any]:
    addr = ipaddress.ip_address(ip)
    for net, data in _source(name):
        if net.version == addr.version and addr in net:
            return data
    return {}


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def expected_record(ip: str) -> GeoRecord:
    """What Go's GetRecord returns for ``ip``, computed from the JSON sources."""
    city = _find("GeoLite2-City-Test.json", ip)
    asn = _find("GeoLite2-ASN-Test.json", ip)
    loc = city.get("location", {})
    return GeoRecord(
        country_code=city.get("country", {}).get("iso_code", ""),
        continent_code=city.get("continent", {}).get("code", ""),
        city=city.get("city", {}).get("names", {}).get("en", ""),
        country=city.get("country", {}).get("names", {}).get("en", ""),
        latitude=_f32(float(loc.get("latitude", 0.0))),
        longitude=_f32(float(loc.get("longitude", 0.0))),
        as_name=asn.get("autonomous_system_organization", ""),
        as_num=asn.get("autonomous_system_number", 0),
    )


def _install(directory: Path, src: Path, name: str) -> None:
    """Atomically put ``src`` at ``directory/name`` (copy + rename, as geoipupdate does)."""
    tmp = directory / (name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, directory / name)


@pytest.fixture
def geodir(tmp_path: Path) -> Path:
    _install(tmp_path, CITY_SRC, CITY_DB)
    _install(tmp_path, ASN_SRC, ASN_DB)
    return tmp_path


# v4 and v6, with and without city / ASN / country, chosen from the JSON sources.
LOOKUP_IPS = [
    "89.160.20.115",  # SE, Linköping, AS 29518 Bredband2 AB
    "81.2.69.142",  # GB, London, no ASN entry
    "216.160.83.57",  # US, Milton, AS 209 without organisation
    "67.43.156.7",  # BT, no city, AS 35908
    "175.16.199.10",  # CN, Changchun
    "2001:218::5",  # JP, IPv6
    "2a02:cfc0::1",  # FR, IPv6
    "2001:480::1",  # US, San Diego, IPv6
    "2a02:d500::1",  # continent EU and a location but no country: invalid
    "2a01:e00::1",  # ASN only (Free SAS), IPv6
    "1.0.0.1",  # ASN only, IPv4
    "10.0.0.1",  # in neither database
]


@pytest.mark.parametrize("ip", LOOKUP_IPS)
def test_lookup_matches_json_sources(geodir: Path, ip: str) -> None:
    geo = GeoIP(str(geodir))
    got = geo.lookup(ip)
    assert got == expected_record(ip)
    assert got.valid == bool(got.country_code)


def test_lookup_details(geodir: Path) -> None:
    geo = GeoIP(str(geodir))
    se = geo.lookup("89.160.20.115")
    assert (se.country_code, se.continent_code, se.city, se.as_num) == ("SE", "EU", "Linköping", 29518)
    assert se.valid
    # float32, exactly as Go's float32(float64): not the float64 value of the source
    assert se.latitude == _f32(58.4167) and se.latitude != 58.4167
    assert list(se.go_fields()) == [
        "CountryCode", "ContinentCode", "City", "Country", "Latitude", "Longitude", "ASName", "ASNum",
    ]  # fmt: skip
    only_continent = geo.lookup("2a02:d500::1")
    assert only_continent.continent_code == "EU" and not only_continent.valid
    only_asn = geo.lookup("2a01:e00::1")
    assert only_asn.as_num == 12322 and not only_asn.valid
    assert geo.lookup("10.0.0.1") == EMPTY_RECORD


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(geodir: Path) -> None:
    geo = GeoIP(str(geodir))
    assert geo.lookup("::ffff:89.160.20.115") == geo.lookup("89.160.20.115")
    assert geo.lookup("::ffff:89.160.20.115").valid


@pytest.mark.parametrize(
    "ip",
    ["", "[::1]", "[2001:218::5]", "89.160.20.115:80", "unknown", "01.2.3.4", "fe80::1%eth0", " 1.0.0.1"],
)
def test_unparseable_ip_gives_empty_record(geodir: Path, ip: str) -> None:
    geo = GeoIP(str(geodir))
    assert parse_ip(ip) is None
    assert geo.lookup(ip) == EMPTY_RECORD
    assert not geo.lookup(ip).valid


def test_lookup_cache_is_bounded_and_hit(geodir: Path) -> None:
    geo = GeoIP(str(geodir), cache_size=4)
    ips = [f"89.160.20.{i}" for i in range(112, 124)]
    first = [geo.lookup(ip) for ip in ips]
    assert geo.cache_info().currsize == 4
    assert geo.lookup(ips[-1]) is first[-1]
    assert geo.cache_info().hits == 1


def test_missing_asn_database_degrades(tmp_path: Path) -> None:
    _install(tmp_path, CITY_SRC, CITY_DB)
    geo = GeoIP(str(tmp_path))
    assert geo.city_loaded and not geo.asn_loaded and not geo.all_failed
    assert geo.errors == (f"open {tmp_path / ASN_DB}: no such file or directory",)
    rec = geo.lookup("89.160.20.115")
    assert rec.country_code == "SE" and rec.as_num == 0 and rec.as_name == ""
    with pytest.raises(GeoIPLoadError, match="^GeoIP data missing: GeoLite2-ASN.mmdb not loaded from the directory "):
        geo.require_all()
    with capturedLogs() as events:
        assert geo.startup_report(has_fallbacks=False)
    texts = [e["log_format"] for e in events]
    assert any("degraded mode" in t for t in texts)


def test_missing_city_database_degrades(tmp_path: Path) -> None:
    _install(tmp_path, ASN_SRC, ASN_DB)
    geo = GeoIP(str(tmp_path))
    rec = geo.lookup("89.160.20.115")
    assert rec.as_num == 29518 and rec.country_code == "" and not rec.valid


def test_no_database_at_all(tmp_path: Path) -> None:
    geo = GeoIP(str(tmp_path / "nowhere"))
    assert geo.all_failed and len(geo.errors) == 2
    assert geo.lookup("89.160.20.115") == EMPTY_RECORD
    with capturedLogs() as events:
        assert geo.startup_report(has_fallbacks=False) is False
        assert geo.startup_report(has_fallbacks=True) is True
    assert sum("Can't load the GeoIP databases" in e["log_format"] for e in events) == 2
    # ... says what happens then: mirrors are still used, at random (not "all by the fallbacks")
    degraded = [e["log_format"] for e in events if "Can't load" in e["log_format"]][1]
    assert "chosen at random" in degraded and "all requests" not in degraded
    # ... and the log says where it looked, what it wants, under which key, and how to get it
    helps = [e["help"] for e in events if "help" in e]
    assert len(helps) == 2 and helps[0] == geo.missing_text()
    for needle in (str(tmp_path / "nowhere"), CITY_DB, ASN_DB, "GeoipDatabasePath", "geoipupdate",
                   "GeoLite2 account", "DB-IP Lite"):
        assert needle in helps[0]


def test_garbage_file_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / CITY_DB).write_bytes(b"not a maxmind database" * 10)
    _install(tmp_path, ASN_SRC, ASN_DB)
    geo = GeoIP(str(tmp_path))
    assert not geo.city_loaded and geo.asn_loaded
    assert geo.errors and str(tmp_path / CITY_DB) in geo.errors[0]
    assert geo.lookup("89.160.20.115").as_num == 29518


def test_lookup_error_empties_the_whole_record(tmp_path: Path) -> None:
    """Go: an error in either DB makes the record empty, even the part the other DB found."""
    _install(tmp_path, BROKEN_CITY_SRC, CITY_DB)
    _install(tmp_path, ASN_SRC, ASN_DB)
    geo = GeoIP(str(tmp_path))
    assert geo.city_loaded and geo.asn_loaded
    assert geo.lookup("89.160.20.115") == EMPTY_RECORD
    assert geo.lookup("2a01:e00::1").as_num == 12322  # not in the broken City DB: no error there


def test_updated_copy_is_preferred(tmp_path: Path) -> None:
    (tmp_path / CITY_DB).write_bytes(b"stale garbage")
    _install(tmp_path, CITY_SRC, CITY_DB + ".updated")
    _install(tmp_path, ASN_SRC, ASN_DB)
    geo = GeoIP(str(tmp_path))
    assert geo.path_for(CITY_DB) == str(tmp_path / (CITY_DB + ".updated"))
    assert geo.path_for(ASN_DB) == str(tmp_path / ASN_DB)
    assert geo.city_loaded and geo.errors == ()
    assert geo.lookup("89.160.20.115").valid


def test_check_for_update_picks_up_replaced_files(tmp_path: Path) -> None:
    _install(tmp_path, ASN_SRC, ASN_DB)
    geo = GeoIP(str(tmp_path))
    ip = "89.160.20.115"
    assert not geo.lookup(ip).valid  # cached now
    assert geo.check_for_update() is False  # nothing changed

    _install(tmp_path, CITY_SRC, CITY_DB)  # the City DB appears
    with capturedLogs() as events:
        assert geo.check_for_update() is True
    assert geo.lookup(ip) == expected_record(ip)  # the cache was dropped with the swap
    assert any("Loading {path} database" in e["log_format"] for e in events)
    assert geo.cache_info().currsize == 1

    # Replaced by an unusable file: the old data stays, the failure is reported once.
    bad = tmp_path / "bad.tmp"
    bad.write_bytes(b"garbage")
    os.replace(bad, tmp_path / CITY_DB)
    with capturedLogs() as events:
        assert geo.check_for_update() is False
        assert geo.check_for_update() is False
    assert sum(e["log_level"].name == "error" for e in events) == 1
    assert geo.city_loaded and geo.lookup(ip).valid
    assert geo.errors and "keeping" not in geo.errors[0]

    # A good file again (new inode, same build epoch): swapped in and the error cleared.
    _install(tmp_path, CITY_SRC, CITY_DB)
    assert geo.check_for_update() is True
    assert geo.errors == ()
    assert geo.reload() is False  # explicit reload with nothing changed: no-op

    # The file is switched to another database type through ".updated": noticed too.
    _install(tmp_path, ASN_SRC, CITY_DB + ".updated")
    with capturedLogs() as events:
        assert geo.check_for_update() is True
    assert not geo.lookup(ip).valid and geo.lookup(ip).as_num == 29518
    assert any("not a {expected} one" in e["log_format"] for e in events)


def test_reload_retries_a_failed_file(tmp_path: Path) -> None:
    (tmp_path / CITY_DB).write_bytes(b"garbage")
    geo = GeoIP(str(tmp_path))
    assert not geo.city_loaded
    with capturedLogs() as events:
        assert geo.check_for_update() is False  # same broken file: not retried
    assert events == []
    with capturedLogs() as events:
        assert geo.reload() is False  # SIGHUP: retried and logged again
    assert len(events) >= 1


def test_set_directory_switches_databases(geodir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    geo = GeoIP(str(geodir))
    assert geo.lookup("89.160.20.115").valid
    other = tmp_path_factory.mktemp("other")
    _install(other, ASN_SRC, CITY_DB)  # wrong type on purpose: no country any more
    _install(other, ASN_SRC, ASN_DB)
    assert geo.set_directory(str(other)) is True
    assert geo.directory == str(other)
    assert not geo.lookup("89.160.20.115").valid
    assert geo.set_directory(str(other)) is False


def test_service_checks_periodically(tmp_path: Path) -> None:
    _install(tmp_path, ASN_SRC, ASN_DB)
    geo = GeoIP(str(tmp_path))
    clock = Clock()
    service = GeoIPService(geo, interval=30.0, clock=clock)
    service.startService()
    try:
        _install(tmp_path, CITY_SRC, CITY_DB)
        clock.advance(29)
        assert not geo.city_loaded
        clock.advance(1)
        assert geo.city_loaded and geo.lookup("89.160.20.115").valid
    finally:
        service.stopService()
    assert not service.running
    assert clock.getDelayedCalls() == []


# --------------------------------------------------------------------------------------------
# Hand-built databases (Go's decoding rules): a tiny MaxMind DB writer.


def _mmdb_encode(value: Any) -> bytes:
    def ctrl(kind: int, size: int) -> bytes:
        assert size < 29 + 256
        extra = b"" if size < 29 else bytes([size - 29])
        size = min(size, 29)
        if kind <= 7:
            return bytes([(kind << 5) | size]) + extra
        return bytes([size, kind - 7]) + extra

    if isinstance(value, tuple):  # ("u16" | "u32" | "u64", n): libmaxminddb wants exact metadata types
        kind = {"u16": 5, "u32": 6, "u64": 9}[value[0]]
        raw = value[1].to_bytes((value[1].bit_length() + 7) // 8, "big") if value[1] else b""
        return ctrl(kind, len(raw)) + raw
    if isinstance(value, bool):
        return ctrl(14, int(value))
    if isinstance(value, str):
        raw = value.encode()
        return ctrl(2, len(raw)) + raw
    if isinstance(value, float):
        return ctrl(3, 8) + struct.pack(">d", value)
    if isinstance(value, int):
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
        return ctrl(6 if value < 2**32 else 9, len(raw)) + raw
    if isinstance(value, dict):
        return ctrl(7, len(value)) + b"".join(_mmdb_encode(k) + _mmdb_encode(v) for k, v in value.items())
    if isinstance(value, list):
        return ctrl(11, len(value)) + b"".join(_mmdb_encode(v) for v in value)
    raise TypeError(value)


def write_mmdb(path: Path, record: dict[str, Any], database_type: str, build_epoch: int = 1700000000) -> None:
    """An IPv4-only database (one node, both branches → ``record``): every IPv4 address matches."""
    node_count = 1
    pointer = (node_count + 16).to_bytes(3, "big")
    tree = pointer + pointer
    metadata = {
        "node_count": ("u32", node_count),
        "record_size": ("u16", 24),
        "ip_version": ("u16", 4),
        "database_type": database_type,
        "languages": ["en"],
        "binary_format_major_version": ("u16", 2),
        "binary_format_minor_version": ("u16", 0),
        "build_epoch": ("u64", build_epoch),
        "description": {"en": "test"},
    }
    body = tree + b"\x00" * 16 + _mmdb_encode(record) + b"\xab\xcd\xefMaxMind.com" + _mmdb_encode(metadata)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)


CASE54_CITY = {
    "city": {"names": {"en": "test1", "fr": "test1-fr"}},
    "country": {"iso_code": "test2", "names": {"en": "test3"}},
    "continent": {"code": "test4"},
    "location": {"latitude": 24.0, "longitude": 42.0},
}
CASE54_ASN = {"autonomous_system_number": 42, "autonomous_system_organization": "forty two"}


def test_record_holds_exactly_the_database_values(tmp_path: Path) -> None:
    write_mmdb(tmp_path / CITY_DB, CASE54_CITY, "GeoLite2-City")
    write_mmdb(tmp_path / ASN_DB, CASE54_ASN, "GeoLite2-ASN")
    geo = GeoIP(str(tmp_path))
    assert geo.errors == ()
    assert geo.lookup("192.0.2.1") == GeoRecord(
        "test2", "test4", "test1", "test3", 24.0, 42.0, "forty two", 42
    )
    assert geo.build_epochs() == {CITY_DB: 1700000000, ASN_DB: 1700000000}
    # IPv6 in an IPv4-only database is a lookup *error* in Go: the whole record is empty.
    assert geo.lookup("2001:db8::1") == EMPTY_RECORD


@pytest.mark.parametrize(
    "bad_city",
    [
        {**CASE54_CITY, "location": {"latitude": "24", "longitude": 42.0}},  # string into float64
        {**CASE54_CITY, "location": {"latitude": 24, "longitude": 42.0}},  # uint into float64
        {**CASE54_CITY, "country": ["FR"]},  # array into a struct
        {**CASE54_CITY, "city": {"names": {"en": 5}}},  # uint into string
    ],
)
def test_type_mismatch_is_a_lookup_error(tmp_path: Path, bad_city: dict[str, Any]) -> None:
    write_mmdb(tmp_path / CITY_DB, bad_city, "GeoLite2-City")
    write_mmdb(tmp_path / ASN_DB, CASE54_ASN, "GeoLite2-ASN")
    geo = GeoIP(str(tmp_path))
    assert geo.lookup("192.0.2.1") == EMPTY_RECORD


def test_missing_fields_are_zero_values(tmp_path: Path) -> None:
    write_mmdb(tmp_path / CITY_DB, {"country": {"iso_code": "FR"}, "extra": [1, 2]}, "GeoLite2-City")
    write_mmdb(tmp_path / ASN_DB, {"autonomous_system_number": 7}, "GeoLite2-ASN")
    geo = GeoIP(str(tmp_path))
    rec = geo.lookup("192.0.2.1")
    assert rec == GeoRecord(country_code="FR", as_num=7)
    assert rec.valid


def test_same_build_epoch_rewritten_in_place_is_still_swapped(tmp_path: Path) -> None:
    """Go keeps the old DB when the build epoch is unchanged; we follow the file's identity."""
    write_mmdb(tmp_path / CITY_DB, CASE54_CITY, "GeoLite2-City", build_epoch=5)
    geo = GeoIP(str(tmp_path))
    assert geo.lookup("192.0.2.1").country_code == "test2"
    write_mmdb(
        tmp_path / CITY_DB, {**CASE54_CITY, "country": {"iso_code": "NEW"}}, "GeoLite2-City", build_epoch=5
    )
    assert geo.check_for_update() is True
    assert geo.lookup("192.0.2.1").country_code == "NEW"
