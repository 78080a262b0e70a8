"""Metalink documents and digest headers, against a real redis-server and a real twisted.web
server over loopback (raw HTTP, so a plain request can be compared header for header)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

from mirrorbits.config import TorrentConfig
from mirrorbits.formats import digest, torrent
from mirrorbits.model import FileInfo
from mirrorbits.redis import schema
from mirrorbits.web.formats import accept_format, split_suffix
from tests.web.test_http_cases import SHA256, RedirectorTestCase, Response, d, put_file, put_mirror

NS = "{urn:ietf:params:xml:ns:metalink}"
NS3 = "{http://www.metalinker.org/}"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "metalink4.rng"
SHA1 = "a" * 40
MD5 = "b" * 32


def validate_meta4(body: bytes, tmp: str) -> None:
    """RFC 5854's RELAX NG schema, checked by xmllint."""
    doc = os.path.join(tmp, "doc.meta4")
    with open(doc, "wb") as f:
        f.write(body)
    p = subprocess.run(["xmllint", "--noout", "--relaxng", str(SCHEMA), doc],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


class Pure(unittest.SynchronousTestCase):
    def test_want_digest_q_values(self) -> None:
        info = FileInfo("/f", 1, 1, sha1=SHA1, sha256=SHA256, md5=MD5)
        b64 = {k: base64.b64encode(bytes.fromhex(v)).decode() for k, v in
               (("SHA-256", SHA256), ("SHA", SHA1), ("MD5", MD5))}
        got = digest.digest_header(info, digest.parse_want_digest([b"SHA-512;q=1, SHA-256;q=1, SHA;q=0.1"]))
        self.assertEqual(got, f"SHA-256={b64['SHA-256']},SHA={b64['SHA']}".encode())
        got = digest.digest_header(info, digest.parse_want_digest([b"md5;q=0.9, sha-256;q=0.3"]))
        self.assertEqual(got, f"MD5={b64['MD5']},SHA-256={b64['SHA-256']}".encode())
        self.assertIsNone(digest.digest_header(info, digest.parse_want_digest([b"SHA-256;q=0, UNIXsum"])))
        self.assertEqual(digest.digest_header(info, digest.parse_want_digest([b"*;q=0.5, SHA;q=0"])),
                         f"SHA-256={b64['SHA-256']},MD5={b64['MD5']}".encode())
        only256 = FileInfo("/f", 1, 1, sha256=SHA256)
        self.assertIsNone(digest.digest_header(only256, {"sha": 1.0, "md5": 1.0}))
        self.assertEqual(digest.repr_digest_header(info, digest.parse_want_repr_digest([b"sha-512=3, sha-256=1"])),
                         f"sha-256=:{b64['SHA-256']}:".encode())
        self.assertIsNone(digest.repr_digest_header(info, digest.parse_want_repr_digest([b"sha-256=0"])))

    def test_bencode_torrent_and_magnet(self) -> None:
        self.assertEqual(torrent.bencode({b"b": [1, "x"], b"a": b"yz"}), b"d1:a2:yz1:bli1e1:xee")
        info = torrent.info_dict("f.iso", 5, 16384, "ab" * 20)
        self.assertEqual(info, b"d6:lengthi5e4:name5:f.iso12:piece lengthi16384e6:pieces20:" + b"\xab" * 20 + b"e")
        meta = torrent.metainfo(info, web_seeds=["http://m/f.iso"], trackers=[["http://t/a"], ["udp://u:1"]],
                                nodes=["127.0.0.1:6881"], creation_date=7, created_by="M")
        self.assertEqual(meta, b"d8:announce10:http://t/a13:announce-listll10:http://t/ael9:udp://u:1ee"
                               b"10:created by1:M13:creation datei7e4:info" + info +
                               b"5:nodesll9:127.0.0.1i6881eee8:url-listl14:http://m/f.isoee")
        btih = torrent.info_hash(info)
        self.assertEqual(btih, hashlib.sha1(info).hexdigest())
        self.assertEqual(torrent.magnet(btih, name="a b", size=5, web_seeds=["http://m/a b"], trackers=[["http://t/a"]]),
                         f"magnet:?xt=urn:btih:{btih}&dn=a%20b&xl=5&tr=http%3A%2F%2Ft%2Fa&ws=http%3A%2F%2Fm%2Fa%20b")

    def test_accept_negotiation(self) -> None:
        self.assertEqual(accept_format(b"application/metalink4+xml"), ("meta4", True))
        self.assertEqual(accept_format(b"application/metalink+xml"), ("metalink", True))
        # aria2's default: metalink and */* weigh the same, so the redirect (with its Link) wins.
        self.assertEqual(accept_format(b"*/*,application/metalink4+xml,application/metalink+xml"),
                         (None, True))
        self.assertEqual(accept_format(b"*/*;q=0.5, application/metalink4+xml"), ("meta4", True))
        self.assertEqual(accept_format(b"application/metalink4+xml;q=0"), (None, False))
        self.assertEqual(accept_format(b"text/html"), (None, False))
        self.assertEqual(split_suffix("/a/file.iso.meta4"), ("/a/file.iso", "meta4"))
        self.assertEqual(split_suffix("/a/file.iso.metalink"), ("/a/file.iso", "metalink"))
        self.assertIsNone(split_suffix("/a/.meta4"))
        self.assertIsNone(split_suffix("/a/file.iso"))
        self.assertIsNone(split_suffix("/a/file.iso.torrent"))  # torrents off
        self.assertEqual(split_suffix("/a/file.iso.btih", torrents=True), ("/a/file.iso", "btih"))


def setup_world(r: object) -> None:
    r.hset(schema.file_key("/testy.tgz"), mapping={  # type: ignore[attr-defined]
        "size": "48", "modTime": "2025-06-01 06:00:00.123456789 +0000 UTC", "sha1": SHA1,
        "sha256": SHA256, "md5": MD5})
    put_mirror(r, 1, "http://a.mirror/", countries="FR DE")
    put_mirror(r, 2, "http://b.mirror/pub/")
    put_mirror(r, 3, "http://c.mirror/", countries="US")


class Documents(RedirectorTestCase):
    def meta4(self, resp: Response) -> ET.Element:
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.header("Content-Type"), "application/metalink4+xml")
        self.assertEqual(resp.header("Cache-Control"), "private, no-cache")
        validate_meta4(resp.body, self.tmp)
        return ET.fromstring(resp.body)

    def test_meta4_by_suffix_query_and_accept(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            h = await self.harness()
            for path, headers in (("/testy.tgz.meta4", {}), ("/testy.tgz?meta4", {}),
                                  ("/testy.tgz", {"Accept": "application/metalink4+xml"})):
                root = self.meta4(await h.request(path, headers=headers))
                self.assertEqual(root.find(f"{NS}origin").text, "http://127.0.0.1/testy.tgz.meta4")
                self.assertEqual(root.find(f"{NS}origin").get("dynamic"), "true")
                self.assertEqual(root.find(f"{NS}published").text, "2025-06-01T06:00:00Z")
                self.assertEqual(root.find(f"{NS}updated").text, "2025-06-01T06:00:00Z")
                f = root.find(f"{NS}file")
                self.assertEqual(f.get("name"), "testy.tgz")
                self.assertEqual(f.find(f"{NS}size").text, "48")
                self.assertEqual({e.get("type"): e.text for e in f.findall(f"{NS}hash")},
                                 {"sha-256": SHA256, "sha-1": SHA1, "md5": MD5})
                urls = f.findall(f"{NS}url")
                self.assertEqual([u.get("priority") for u in urls], ["1", "2", "3"])
                locs = {u.text: u.get("location") for u in urls}
                self.assertEqual(locs, {"http://a.mirror/testy.tgz": "fr",
                                        "http://b.mirror/pub/testy.tgz": None,
                                        "http://c.mirror/testy.tgz": "us"})
            resp = await h.request("/testy.tgz.meta4", headers={"X-Metalink-Limit": "2"})
            self.assertEqual(len(self.meta4(resp).findall(f"{NS}file/{NS}url")), 2)
            h.set_config(MetalinkMaxURLs=1)
            resp = await h.request("/testy.tgz.meta4", headers={"X-Metalink-Limit": "5"})
            self.assertEqual(len(self.meta4(resp).findall(f"{NS}file/{NS}url")), 1)
        return d(run())

    def test_metalink3(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            h = await self.harness()
            for path, headers in (("/testy.tgz.metalink", {}), ("/testy.tgz?metalink", {}),
                                  ("/testy.tgz", {"Accept": "application/metalink+xml"})):
                resp = await h.request(path, headers=headers)
                self.assertEqual((resp.status, resp.header("Content-Type")),
                                 (200, "application/metalink+xml"))
                root = ET.fromstring(resp.body)
                self.assertEqual(root.get("version"), "3.0")
                f = root.find(f"{NS3}files/{NS3}file")
                self.assertEqual(f.find(f"{NS3}size").text, "48")
                self.assertEqual({e.get("type"): e.text for e in f.findall(f"{NS3}verification/{NS3}hash")},
                                 {"sha256": SHA256, "sha1": SHA1, "md5": MD5})
                prefs = [u.get("preference") for u in f.findall(f"{NS3}resources/{NS3}url")]
                self.assertEqual(prefs, ["100", "99", "98"])
        return d(run())

    def test_status_rules(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            os.mkdir(os.path.join(self.repo, "dir"))
            open(os.path.join(self.repo, "unknown.iso"), "wb").close()
            h = await self.harness()
            for path in ("/missing.iso.meta4", "/missing.iso?meta4", "/dir.meta4", "/dir?meta4",
                         "/unknown.iso.meta4", "/unknown.iso?metalink"):
                resp = await h.request(path)
                self.assertEqual((resp.status, resp.body), (404, b"Not Found\n"), path)
            # No usable mirror: the fallbacks are the document's URLs.
            put_file(self.r, "/lonely.iso")
            open(os.path.join(self.repo, "lonely.iso"), "wb").close()
            root = self.meta4(await h.request("/lonely.iso.meta4"))
            self.assertEqual([u.text for u in root.findall(f"{NS}file/{NS}url")],
                             ["http://fallback.mirror/lonely.iso"])
            h.set_config(Fallbacks=())
            self.assertEqual((await h.request("/lonely.iso.meta4")).status, 503)
        return d(run())

    def test_torrent_urls_with_torrents_off(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            h = await self.harness(MaxLinkHeaders=0)
            for path in ("/testy.tgz.torrent", "/testy.tgz.magnet", "/testy.tgz.btih"):
                resp = await h.request(path)
                self.assertEqual((resp.status, resp.body), (404, b"Not Found\n"), path)
            plain = await h.request("/testy.tgz")
            for path in ("/testy.tgz?torrent", "/testy.tgz?magnet", "/testy.tgz?btih"):
                resp = await h.request(path)  # a Go node ignores these queries: so do we
                self.assertEqual((resp.status, sorted(resp.names())), (302, sorted(plain.names())))
        return d(run())

    def test_mirrorlist_links_the_formats(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            h = await self.harness()
            page = (await h.request("/testy.tgz?mirrorlist")).body
            self.assertIn(b'<a href="testy.tgz.meta4">Metalink</a>', page)
            self.assertNotIn(b"testy.tgz.torrent", page)
            h.set_config(Torrent=TorrentConfig(Enabled=True))
            # Not hashed yet: no torrent to link (its URL is 404).
            page = (await h.request("/testy.tgz?mirrorlist")).body
            self.assertIn(b'<a href="testy.tgz.meta4">Metalink</a>', page)
            self.assertNotIn(b"testy.tgz.torrent", page)
            self.assertNotIn(b"testy.tgz.magnet", page)
            self.assertEqual((await h.request("/testy.tgz.torrent")).status, 404)
            # Hashed: the page, even the first one after a restart, links the torrent and magnet.
            put_pieces(self.r)
            h2 = await self.harness(Torrent=TorrentConfig(Enabled=True))
            page = (await h2.request("/testy.tgz?mirrorlist")).body
            self.assertIn(b'<a href="testy.tgz.torrent">Torrent</a>', page)
            self.assertIn(b'<a href="testy.tgz.magnet">Magnet</a>', page)
            self.assertEqual((await h2.request("/testy.tgz.torrent")).status, 200)
        return d(run())

    def test_real_file_named_meta4_is_redirected(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            open(os.path.join(self.repo, "x.meta4"), "wb").close()
            put_file(self.r, "/x.meta4")
            put_mirror(self.r, 1, "http://a.mirror/", path="/x.meta4")
            h = await self.harness()
            resp = await h.request("/x.meta4")
            self.assertEqual((resp.status, resp.header("Location")), (302, "http://a.mirror/x.meta4"))
            open(os.path.join(self.repo, "testy.tgz.meta4"), "wb").close()
            resp = await h.request("/testy.tgz.meta4")  # now a file of the repository, unindexed
            self.assertEqual((resp.status, resp.header("Location")),
                             (302, "http://fallback.mirror/testy.tgz.meta4"))
        return d(run())


class Headers(RedirectorTestCase):
    def test_plain_request_unchanged_and_digest_when_asked(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            h = await self.harness(MaxLinkHeaders=0)
            plain = await h.request("/testy.tgz", headers={"Accept": "*/*"})
            self.assertEqual(sorted(plain.names()),
                             ["cache-control", "connection", "content-length", "content-type", "date",
                              "location", "server"])
            self.assertEqual(plain.body, b"")
            b64 = base64.b64encode(bytes.fromhex(SHA256)).decode()
            resp = await h.request("/testy.tgz", headers={"Want-Digest": "SHA-512;q=1, SHA-256;q=1, SHA;q=0.1"})
            self.assertEqual(resp.status, 302)
            sha1_b64 = base64.b64encode(bytes.fromhex(SHA1)).decode()
            self.assertEqual(resp.header("Digest"), f"SHA-256={b64},SHA={sha1_b64}")
            self.assertEqual(resp.all("Link"), ['<http://127.0.0.1/testy.tgz.meta4>; rel=describedby; '
                                                'type="application/metalink4+xml"'])
            self.assertEqual(sorted(resp.names() - {"digest", "link"}), sorted(plain.names()))
            resp = await h.request("/testy.tgz", headers={"Want-Repr-Digest": "sha-256=5"})
            self.assertEqual(resp.header("Repr-Digest"), f"sha-256=:{b64}:")
            self.assertEqual(resp.all("Link"), [])
            # aria2's Accept: the redirect, with the describedby link next to the duplicates.
            h.set_config(MaxLinkHeaders=10)
            resp = await h.request("/testy.tgz", headers={
                "Accept": "*/*,application/metalink4+xml,application/metalink+xml"})
            self.assertEqual(resp.status, 302)
            links = resp.all("Link")
            self.assertEqual(len(links), 3)
            self.assertTrue(all("rel=duplicate" in link for link in links[:2]))
            self.assertEqual(links[2], '<http://127.0.0.1/testy.tgz.meta4>; rel=describedby; '
                                       'type="application/metalink4+xml"')
            self.assertIsNone(resp.header("Digest"))
            resp = await h.request("/testy.tgz", headers={"Want-Digest": "sha-256", "X-Forwarded-Proto": "https"})
            self.assertEqual(resp.all("Link")[-1], '<https://127.0.0.1/testy.tgz.meta4>; rel=describedby; '
                                                   'type="application/metalink4+xml"')
            # The JSON answer gets the same headers.
            h.set_config(OutputMode="json")
            resp = await h.request("/testy.tgz", headers={"Want-Digest": "sha-256"})
            self.assertEqual((resp.status, resp.header("Digest")), (200, f"SHA-256={b64}"))
        return d(run())


def bdecode(data: bytes) -> object:
    """The bencoded value ``data`` holds (all of it)."""
    def one(i: int) -> tuple[object, int]:
        c = data[i:i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1:end]), end + 1
        if c == b"l":
            items, i = [], i + 1
            while data[i:i + 1] != b"e":
                item, i = one(i)
                items.append(item)
            return items, i + 1
        if c == b"d":
            out, i = {}, i + 1
            while data[i:i + 1] != b"e":
                key, i = one(i)
                out[key], i = one(i)
            return out, i + 1
        colon = data.index(b":", i)
        n = int(data[i:colon])
        return data[colon + 1:colon + 1 + n], colon + 1 + n
    value, end = one(0)
    assert end == len(data)
    return value


PIECES_SHA1 = "c" * 40
PIECES_SHA256 = "d" * 64


def put_pieces(r: object) -> None:
    """``FILEPIECES_`` of /testy.tgz as the local scan stores it: one 16 KiB piece of 48 bytes."""
    r.hset(schema.file_pieces_key("/testy.tgz"), mapping={  # type: ignore[attr-defined]
        "size": "48", "modTime": "2025-06-01 06:00:00.123456789 +0000 UTC", "length": "16384",
        "sha1": PIECES_SHA1, "sha256": PIECES_SHA256})


class Limits(RedirectorTestCase):
    def test_twelve_mirrors_give_ten_urls_by_default(self) -> defer.Deferred[None]:
        """``MetalinkMaxURLs`` (10) bounds the document, not the redirect's draw of five."""
        async def run() -> None:
            setup_world(self.r)
            for mid in range(4, 13):
                put_mirror(self.r, mid, f"http://m{mid}.mirror/")
            h = await self.harness()
            root = ET.fromstring((await h.request("/testy.tgz.meta4")).body)
            urls = [u.text for u in root.iter(f"{NS}url")]
            self.assertEqual((len(urls), len(set(urls))), (10, 10))
            root = ET.fromstring((await h.request("/testy.tgz.meta4", headers={"X-Metalink-Limit": "3"})).body)
            self.assertEqual(len(root.findall(f"{NS}file/{NS}url")), 3)
            # No URL asked for: a document without any, not the fallbacks' answer nor a 503.
            h.set_config(Fallbacks=())
            resp = await h.request("/testy.tgz.meta4", headers={"X-Metalink-Limit": "0"})
            self.assertEqual(resp.status, 200)
            self.assertEqual(ET.fromstring(resp.body).findall(f"{NS}file/{NS}url"), [])
        return d(run())


class Torrents(RedirectorTestCase):
    def test_documents_from_stored_pieces(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            put_pieces(self.r)
            h = await self.harness(Torrent=TorrentConfig(
                Enabled=True, Trackers=(("http://t/a",), ("udp://u:1", "udp://v:2")),
                DHTNodes=("127.0.0.1:6881",), MaxWebSeeds=2))
            resp = await h.request("/testy.tgz.torrent")
            self.assertEqual((resp.status, resp.header("Content-Type")), (200, "application/x-bittorrent"))
            meta = bdecode(resp.body)
            assert isinstance(meta, dict)
            self.assertEqual(meta[b"info"], {b"name": b"testy.tgz", b"length": 48, b"piece length": 16384,
                                             b"pieces": bytes.fromhex(PIECES_SHA1)})
            seeds = meta[b"url-list"]
            assert isinstance(seeds, list)
            self.assertEqual(len(seeds), 2)  # MaxWebSeeds
            self.assertLessEqual(set(seeds), {b"http://a.mirror/testy.tgz", b"http://b.mirror/pub/testy.tgz",
                                              b"http://c.mirror/testy.tgz"})
            self.assertEqual(meta[b"announce"], b"http://t/a")
            self.assertEqual(meta[b"announce-list"], [[b"http://t/a"], [b"udp://u:1", b"udp://v:2"]])
            self.assertEqual(meta[b"nodes"], [[b"127.0.0.1", 6881]])
            self.assertEqual(meta[b"creation date"], 1748757600)  # the file's modTime, 2025-06-01 06:00 UTC
            btih = (await h.request("/testy.tgz.btih")).body
            self.assertEqual(btih, hashlib.sha1(torrent.bencode(meta[b"info"])).hexdigest().encode() + b"\n")
            # The .meta4 carries the SHA-256 pieces and the torrent, and still validates.
            resp = await h.request("/testy.tgz.meta4")
            self.assertEqual(resp.status, 200)
            validate_meta4(resp.body, self.tmp)
            f = ET.fromstring(resp.body).find(f"{NS}file")
            pieces = f.find(f"{NS}pieces")
            self.assertEqual((pieces.get("length"), pieces.get("type")), ("16384", "sha-256"))
            self.assertEqual([e.text for e in pieces.findall(f"{NS}hash")], [PIECES_SHA256])
            self.assertEqual([(m.get("mediatype"), m.text) for m in f.findall(f"{NS}metaurl")],
                             [("torrent", "http://127.0.0.1/testy.tgz.torrent")])
            # The describedby links name the torrent too (once it is known to exist).
            resp = await h.request("/testy.tgz", headers={"Want-Digest": "SHA-256"})
            self.assertEqual(resp.all("Link")[-2:], [
                '<http://127.0.0.1/testy.tgz.meta4>; rel=describedby; type="application/metalink4+xml"',
                '<http://127.0.0.1/testy.tgz.torrent>; rel=describedby; type="application/x-bittorrent"'])
        return d(run())

    def test_no_torrent_link_before_the_pieces_exist(self) -> defer.Deferred[None]:
        async def run() -> None:
            setup_world(self.r)
            h = await self.harness(Torrent=TorrentConfig(Enabled=True), MaxLinkHeaders=0)
            meta4_link = '<http://127.0.0.1/testy.tgz.meta4>; rel=describedby; type="application/metalink4+xml"'
            for _ in range(2):  # the first answer reads the pieces in the background: none
                resp = await h.request("/testy.tgz", headers={"Want-Digest": "SHA-256"})
                self.assertEqual(resp.all("Link"), [meta4_link])
            # With pieces (the answer after the read that found them links the torrent).
            h2 = await self.harness(Torrent=TorrentConfig(Enabled=True), MaxLinkHeaders=0)
            put_pieces(self.r)
            await h2.request("/testy.tgz", headers={"Want-Digest": "SHA-256"})
            await h2.wait_for(lambda: h2.resource.formats.cached_pieces(h2.view.lookup("/testy.tgz").info)[0])
            resp = await h2.request("/testy.tgz", headers={"Want-Digest": "SHA-256"})
            self.assertEqual(resp.all("Link"), [meta4_link, '<http://127.0.0.1/testy.tgz.torrent>; '
                                                'rel=describedby; type="application/x-bittorrent"'])
        return d(run())

    def test_plain_request_is_the_same_bytes_with_torrents_on(self) -> defer.Deferred[None]:
        """Torrents on (and the file's pieces known) add no byte to a request that asks for none
        of the formats."""
        async def run() -> None:
            setup_world(self.r)
            put_pieces(self.r)
            h = await self.harness(MaxLinkHeaders=0)
            await h.request("/testy.tgz.meta4")
            answers = []
            for enabled in (False, True, False):
                h.set_config(Torrent=TorrentConfig(Enabled=enabled))
                if enabled:  # the pieces read and cached first
                    self.assertEqual((await h.request("/testy.tgz.btih")).status, 200)
                resp = await h.request("/testy.tgz", headers={"Accept": "*/*", "User-Agent": "curl/8"})
                self.assertEqual(resp.status, 302)
                answers.append(([(k, v) for k, v in resp.headers if k.lower() not in ("date", "location")],
                                resp.body))
            self.assertEqual(answers[0], answers[1])
            self.assertEqual(answers[1], answers[2])
            self.assertEqual(sorted(k for k, _ in answers[0][0]),
                             ["Cache-Control", "Connection", "Content-Length", "Content-Type", "Server"])
        return d(run())
