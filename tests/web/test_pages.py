"""``?mirrorlist``, ``?mirrorstats`` and ``?mirrors`` over real HTTP and Redis, and the page helpers."""

from __future__ import annotations

import json
import math
import time
from html.parser import HTMLParser
from typing import Any

from twisted.internet import defer

from mirrorbits.model import Mirror
from mirrorbits.redis import schema
from mirrorbits.web.mirrorsjson import mirror_state
from mirrorbits.web.pages import build_stats_rows, concaturl, fuzzy_time, sizeof
from tests.web.test_http_cases import RedirectorTestCase, d, put_file, put_mirror


class Tables(HTMLParser):
    """Rows of the tables by id, as lists of cell texts; and all the text of the page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: set[str] = set()
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "table":
            self._table = str(a.get("id"))
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag in ("script", "style"):
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag in ("script", "style"):
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            return
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def test_sizeof_and_concaturl() -> None:
    assert [sizeof(n) for n in (0, 1, 1024, 1000000)] == ["0.0 bytes", "1.0 bytes", "1.0 KiB", "976.6 KiB"]
    for base, path in (("http://test.example/somedir/", "/somefile.bin"),
                       ("http://test.example/somedir", "/somefile.bin"),
                       ("http://test.example/somedir", "somefile.bin")):
        assert concaturl(base, path) == "http://test.example/somedir/somefile.bin"


def test_fuzzy_time() -> None:
    assert fuzzy_time(30) == "up-to-date"
    assert fuzzy_time(-120) == "in the future"
    assert fuzzy_time(60) == "1 minute ago"
    assert fuzzy_time(150) == "2 minutes ago"
    assert fuzzy_time(3600 * 5) == "5 hours ago"
    assert fuzzy_time(86400 * 3) == "3 days ago"
    assert fuzzy_time(86400 * 800) == "2 years ago"


def test_mirror_state() -> None:
    assert mirror_state(Mirror(enabled=False, http_up=True, https_up=True)) == "disabled"
    assert mirror_state(Mirror(enabled=True, http_up=True, https_up=True)) == "up"
    assert mirror_state(Mirror(enabled=True)) == "down"
    assert mirror_state(Mirror(enabled=True, http_url="http://a/", http_up=True)) == "up"
    assert mirror_state(Mirror(enabled=True, http_url="https://a/", http_up=True)) == "down"
    assert mirror_state(Mirror(enabled=True, http_url="a/", http_up=True)) == "degraded"


def test_stats_rows_no_nan_and_sorted() -> None:
    mirrors = [Mirror(id=1, name="a"), Mirror(id=2, name="b", last_mod_time=0)]
    rows = build_stats_rows(mirrors, {}, {}, now=100 * 3600)
    assert all(r.percent_d == 0 and r.percent_b == 0 for r in rows)
    assert not any(math.isnan(r.percent_d) for r in rows)
    rows = build_stats_rows(mirrors, {1: 1, 2: 4}, {1: 10, 2: 5}, now=100 * 3600)
    assert [(r.mirror.name, r.percent_d, r.percent_b) for r in rows] == [("b", 100.0, 50.0), ("a", 25.0, 100.0)]
    assert rows[0].sync_hours == 100 and rows[0].sync_text == "4 days ago" and not rows[1].sync_valid


class Pages(RedirectorTestCase):
    def setUp(self) -> None:
        super().setUp()
        put_file(self.r, sha256="ab" * 32)
        put_mirror(self.r, 1, "http://a.mirror/", countries="FR DE", continentCode="EU",
                   sponsorName="Sponsor A")
        put_mirror(self.r, 2, "https://c.mirror/", countries="US", continentCode="NA")
        put_mirror(self.r, 3, "http://d.mirror/", countries="IT", enabled="0")

    def test_mirrorlist_page(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            resp = await h.request("/testy.tgz?mirrorlist")
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("Content-Type"), "text/html; charset=utf-8")
            self.assertEqual(resp.header("Cache-Control"), "private, no-cache")
            html = resp.body.decode()
            self.assertTrue(html.startswith("<!DOCTYPE html>"))
            self.assertIn("<title>Mirrorlist /testy.tgz</title>", html)
            self.assertIn("<svg", html)  # the load distribution pie
            page = Tables(html)
            rows = page.tables["mirrors"]
            self.assertEqual(len(rows), 2)
            self.assertEqual({r[1] for r in rows}, {"Sponsor A", "m2"})
            urls = {r[2] for r in rows}
            self.assertEqual(urls, {"http://a.mirror/", "https://c.mirror/"})
            self.assertTrue(all(r[5] == "0 Km" and r[6] == "n/a" for r in rows))  # no GeoIP: random
            self.assertEqual(page.tables["excluded"], [["m3", "", "IT", "", "0 Km", "Disabled"]])
            self.assertEqual(page.tables["hashes"], [["N/A"], ["N/A"], ["ab" * 32]])
            self.assertIn("ab" * 32, page.all_text)
            self.assertIn("N/A", page.all_text)
            self.assertIn("48.0 bytes (48 bytes)", page.all_text)
            self.assertIn("Sun, 01 Jun 2025 06:00:00 UTC", page.all_text)
            self.assertIn("chosen at random", page.all_text)
            self.assertIn("Random: 100%", page.all_text)
            self.assertNotIn("fallback", page.ids)
            # Fallback and empty list.
            resp = await h.request("/nothere?mirrorlist")
            self.assertEqual(resp.status, 404)
            self.r.delete(schema.file_mirrors_key("/testy.tgz"))
            self.r.publish(schema.CHANNEL_MIRROR_FILE_UPDATE, "1 /testy.tgz")
            h.view.clear()
            page = Tables((await h.request("/testy.tgz?mirrorlist")).body.decode())
            self.assertIn("fallback", page.ids)
            self.assertEqual(page.tables["mirrors"][0][2], "http://fallback.mirror/")
        return d(run())

    def test_mirrorlist_not_scanned(self) -> defer.Deferred[None]:
        async def run() -> None:
            open(f"{self.repo}/new.iso", "wb").close()
            h = await self.harness()
            page = Tables((await h.request("/new.iso?mirrorlist")).body.decode())
            self.assertIn("has not been scanned yet", page.all_text)
        return d(run())

    def test_mirrorstats_pairs_by_id(self) -> defer.Deferred[None]:
        async def run() -> None:
            t = time.gmtime()
            day = (t.tm_year, t.tm_mon, t.tm_mday)
            for mid, n, b in (("1", 5, 5000), ("2", 20, 1000), ("3", 0, 0), ("4", 7, 7)):
                self.r.hset(schema.stats_mirror_key(*day), mid, n)
                self.r.hset(schema.stats_mirror_bytes_key(*day), mid, b)
            # Mirror 4 is in MIRRORS but its hash is broken: skipped without shifting the others.
            self.r.hset(schema.MIRRORS, "4", "broken")
            self.r.hset(schema.mirror_key(4), mapping={"ID": "4", "name": "broken", "enabled": "maybe"})
            self.r.hset(schema.mirror_key(2), mapping={"lastModTime": str(int(time.time()) - 3 * 86400),
                                                       "tzoffset": "3600000"})
            h = await self.harness()
            resp = await h.request("/anything?mirrorstats")
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("Content-Type"), "text/html; charset=utf-8")
            html = resp.body.decode()
            self.assertNotIn("NaN", html)
            page = Tables(html)
            rows = page.tables["mirrorstats"]
            self.assertEqual([(r[0], r[1], r[2]) for r in rows],
                             [("m2", "up", "20"), ("m1", "up", "5"), ("m3", "disabled", "0")])
            self.assertEqual(rows[0][4], "1000.0 bytes")
            self.assertEqual(rows[1][4], "4.9 KiB")
            self.assertEqual(rows[0][5], "3 days ago")
            self.assertEqual(rows[1][5], "unknown")
            self.assertEqual(rows[0][6], "1h0m0s")  # Adjusted TZ column (some mirror has one)
            self.assertIn("<title>20 downloads</title>", html)
            self.assertIn('class="sync-orange"', html)
            self.assertIn("Since 00:00 UTC: 25 downloads", page.all_text)
        return d(run())

    def test_mirrors_json(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            resp = await h.request("/?mirrors")
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("Content-Type"), "application/json; charset=utf-8")
            self.assertTrue(resp.body.endswith(b"\n"))
            doc: list[dict[str, Any]] = json.loads(resp.body)
            self.assertEqual([(m["ID"], m["Name"], m["State"]) for m in doc],
                             [(1, "m1", "up"), (2, "m2", "up"), (3, "m3", "disabled")])
            self.assertNotIn("AdminEmail", doc[0])
            self.assertEqual(doc[0]["CountryCodes"], "FR DE")
            self.assertEqual(doc[0]["LastSync"], "0001-01-01T00:00:00Z")
            pretty = await h.request("/?mirrors&pretty")
            self.assertTrue(pretty.body.startswith(b"[\n    {\n"))
            # ?mirrors does not shadow the Go types.
            resp = await h.request("/?mirrors&mirrorstats")
            self.assertEqual(resp.header("Content-Type"), "text/html; charset=utf-8")
        return d(run())

    def test_gzip_pages_have_the_compressed_length(self) -> defer.Deferred[None]:
        async def run() -> None:
            import gzip

            h = await self.harness(Gzip=True)
            for path in ("/?mirrors&pretty", "/?mirrorstats", "/testy.tgz?stats", "/testy.tgz?sha256"):
                resp = await h.request(path, headers={"Accept-Encoding": "gzip, deflate"})
                self.assertEqual(resp.header("Content-Encoding"), "gzip", path)
                self.assertEqual(int(resp.header("Content-Length") or -1), len(resp.body), path)
                self.assertTrue(gzip.decompress(resp.body), path)
        return d(run())
