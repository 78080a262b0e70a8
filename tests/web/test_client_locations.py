"""The redirector's per-client cache of GeoIP record and location: hit, bounded, and dropped when
the GeoIP databases are reloaded (real MaxMind test databases, and one written for the test)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

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
