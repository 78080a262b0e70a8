"""The redirector's per-client cache of GeoIP record and location: hit, bounded, and dropped when
the GeoIP databases are reloaded (real MaxMind test databases, and one written for the test)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.internet.address import IPv4Address

from mirrorbits.config import Config
from mirrorbits.geo import ASN_DB, CITY_DB, GeoIP, GeoRecord
from mirrorbits.web.resource import RedirectorResource
from tests.test_geo import ASN_SRC, CASE54_CITY, CITY_SRC, write_mmdb

SWEDEN = "89.160.20.115"  # SE, Linköping, AS 29518 in the test databases


@pytest.fixture
def geo(tmp_path: Path) -> GeoIP:
    shutil.copyfile(CITY_SRC, tmp_path / CITY_DB)
    shutil.copyfile(ASN_SRC, tmp_path / ASN_DB)
    return GeoIP(str(tmp_path))


def redirector(geo: GeoIP) -> tuple[RedirectorResource, list[str]]:
    """A redirector on ``geo`` and the list of the IPs it asked the databases about."""
    asked: list[str] = []
    lookup = geo.lookup

    def counting(ip: str) -> GeoRecord:
        asked.append(ip)
        return lookup(ip)

    geo.lookup = counting  # type: ignore[method-assign]
    app = SimpleNamespace(config=Config(), get_geoip=lambda: geo)
    return RedirectorResource(app), asked  # type: ignore[arg-type]


def test_a_client_seen_again_is_not_looked_up_again(geo: GeoIP) -> None:
    res, asked = redirector(geo)
    rec, loc = res._client_location(SWEDEN)
    assert (rec.country_code, rec.continent_code, rec.as_num) == ("SE", "EU", 29518)
    assert (loc.country, loc.continent, loc.asnum, loc.valid) == ("SE", "EU", 29518, True)
    again = res._client_location(SWEDEN)
    assert again[0] is rec and again[1] is loc
    assert asked == [SWEDEN]


def test_a_geoip_reload_drops_every_kept_location(geo: GeoIP, tmp_path: Path) -> None:
    res, asked = redirector(geo)
    assert res._client_location(SWEDEN)[0].country_code == "SE"
    write_mmdb(tmp_path / "new.mmdb", CASE54_CITY, "GeoLite2-City")
    os.replace(tmp_path / "new.mmdb", tmp_path / CITY_DB)
    assert res._client_location(SWEDEN)[0].country_code == "SE"  # not reloaded yet: kept
    assert geo.reload() is True
    rec, loc = res._client_location(SWEDEN)
    assert (rec.country_code, rec.city, loc.country, loc.continent) == ("test2", "test1", "test2", "test4")
    assert asked == [SWEDEN, SWEDEN]
    assert geo.reload() is False  # nothing changed on disk: what is kept stays valid
    res._client_location(SWEDEN)
    assert asked == [SWEDEN, SWEDEN]


def test_the_table_is_bounded(geo: GeoIP) -> None:
    res, _ = redirector(geo)
    res.client_locations = 3
    for i in range(10):
        res._client_location(f"10.0.0.{i}")
        assert len(res._locations) <= 3


class _Channel:
    """What the lean lane asks of a connection to find its client: the peer address."""

    def __init__(self, host: str) -> None:
        self.host = host

    def getPeer(self) -> IPv4Address:  # noqa: N802 - twisted's name
        return IPv4Address("TCP", self.host, 40000)


def test_the_lean_lane_keeps_a_client_per_forwarded_line(geo: GeoIP, tmp_path: Path) -> None:
    res, asked = redirector(geo)
    peer = _Channel("127.0.0.1")
    line = b" " + SWEDEN.encode() + b", 10.0.0.1"
    generation, ip, (rec, loc) = res._lean_client(line, peer)  # type: ignore[arg-type,misc]
    assert (ip, rec.country_code, loc.asnum) == (SWEDEN, "SE", 29518)
    assert res._lean_client(line, peer) is res._lean_client(line, peer)  # type: ignore[arg-type]
    assert asked == [SWEDEN]
    # An empty element falls back to the peer, like every unusable line, and is not kept.
    assert res._lean_client(b" , 10.0.0.1", _Channel(SWEDEN))[1] == SWEDEN  # type: ignore[arg-type,index]
    assert res._lean_client(None, _Channel("10.0.0.2"))[1] == "10.0.0.2"  # type: ignore[arg-type,index]
    assert res._lean_client(b"\x7f1.2.3.4", peer) is None  # type: ignore[arg-type]
    assert set(res._forwarded_clients) == {line}
    # A reload of the GeoIP databases makes every kept client stale.
    write_mmdb(tmp_path / "new.mmdb", CASE54_CITY, "GeoLite2-City")
    os.replace(tmp_path / "new.mmdb", tmp_path / CITY_DB)
    assert geo.reload() is True
    again = res._lean_client(line, peer)  # type: ignore[arg-type]
    assert again is not None and again[0] != generation and again[2][0].country_code == "test2"


def test_the_lean_lanes_forwarded_lines_are_bounded(geo: GeoIP) -> None:
    res, _ = redirector(geo)
    res.client_locations = 3
    for i in range(10):
        assert res._lean_client(b"10.0.0.%d" % i, _Channel("127.0.0.1")) is not None  # type: ignore[arg-type]
        assert len(res._forwarded_clients) <= 3
