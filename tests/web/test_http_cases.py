"""The HTTP handler's answers (statuses, redirects, JSON, fallbacks, gzip, conditional requests)
against a real redis-server and a real listening twisted.web server (raw HTTP over loopback, so
every header can be checked byte for byte).

Checksums and ``?stats`` are tested in test_checksum.py and test_stats.py; mirror choice in the
selection tests; the in-memory view in tests/test_cache.py; client addresses and GeoIP in the
client-info and GeoIP tests.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, reactor, task, threads

from mirrorbits.app import Mirrorbits
from mirrorbits.config import Config, ConfigHolder, Fallback
from mirrorbits.redis import schema
from mirrorbits.web.site import make_site
from tests.fixtures.redis import RedisServer
from tests.fixtures.trial import RedisClassTestCase

MODTIME = "2025-06-01 06:00:00.123456789 +0000 UTC"
SHA256 = "1235a5b376903794b373d84ed615bb36013e70ed6aebf30b2f4823321d5182ec"
FALLBACK = (Fallback(URL="http://fallback.mirror/"),)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


def raw_http(port: int, request: bytes, timeout: float = 10.0) -> Response:
    """Send one raw request (Connection: close) and parse the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return Response(status, headers, body)


class Harness:
    """A daemon-like app (config, Redis client, view, resource) listening on 127.0.0.1:<free>."""

    def __init__(self, redis: RedisServer, repo: str, **overrides: Any) -> None:
        cfg: dict[str, Any] = dict(
            Repository=repo, RedisAddress=redis.address, OutputMode="redirect", MaxLinkHeaders=5,
            Fallbacks=FALLBACK, GeoipDatabasePath=os.path.join(repo, "..", "no-geoip"),
        )
        cfg.update(overrides)
        self.redis_server = redis
        self.holder = ConfigHolder(Config(**cfg))
        self.app = Mirrorbits(self.holder, reactor, monitor=False)
        self.port: Any = None

    @property
    def view(self) -> Any:
        return self.app.get_cache()

    @property
    def resource(self) -> Any:
        return self.app.get_web_root()

    async def start(self, ready: bool = True, warm: bool = False) -> Harness:
        client = self.app.get_redis()
        client.start()
        if ready:
            client.set_ready()
        self.view.start(warm=warm)
        self.port = reactor.listenTCP(0, make_site(self.app), interface="127.0.0.1")
        if ready:
            await self.wait_for(lambda: self.view.subscribed)
        return self

    async def stop(self) -> None:
        self.view.stop()
        await self.app.get_redis().stop()
        if self.port is not None:
            await self.port.stopListening()

    def set_config(self, **changes: Any) -> None:
        self.holder.swap(self.holder.current.replace(**changes))

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if predicate():
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("condition not reached in time")

    async def request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
                      raw: bytes | None = None) -> Response:
        if raw is None:
            lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
            for k, v in (headers or {}).items():
                lines.append(f"{k}: {v}")
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        return await threads.deferToThread(raw_http, self.port.getHost().port, raw)


def cmdstat(redis: RedisServer, name: str) -> int:
    """How many times redis-server ran a command (INFO commandstats)."""
    info = redis.client().info("commandstats")
    return int(info.get(f"cmdstat_{name}", {}).get("calls", 0))


def put_file(r: Any, path: str = "/testy.tgz", size: int = 48, modtime: str = MODTIME,
             sha256: str = SHA256) -> None:
    r.hset(schema.file_key(path), mapping={"size": str(size), "modTime": modtime, "sha1": "",
                                            "sha256": sha256, "md5": ""})


def put_mirror(r: Any, mid: int, http: str, *, countries: str = "", path: str = "/testy.tgz",
               size: int = 48, modtime: str = MODTIME, **fields: str) -> None:
    h = {"ID": str(mid), "name": f"m{mid}", "http": http, "enabled": "1", "httpUp": "1",
         "httpsUp": "1", "countryCodes": countries}
    h.update(fields)
    r.hset(schema.mirror_key(mid), mapping=h)
    r.hset(schema.MIRRORS, str(mid), h["name"])
    r.sadd(schema.file_mirrors_key(path), str(mid))
    r.hset(schema.file_info_key(mid, path), mapping={"size": str(size), "modTime": modtime})


class RedirectorTestCase(RedisClassTestCase):
    """One redis-server per class; a fresh repository, DB and harness per test."""

    timeout = 30

    def setUp(self) -> None:
        super().setUp()  # the class's redis-server, restarted if a test stopped it, flushed
        self.redis = self.server
        self.tmp = tempfile.mkdtemp(prefix="mirrorbits-redirector-")
        self.repo = os.path.join(self.tmp, "repo")
        os.makedirs(self.repo)
        open(os.path.join(self.repo, "testy.tgz"), "wb").close()
        self.r = self.redis.client()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.harnesses: list[Harness] = []

    async def harness(self, ready: bool = True, warm: bool = False, **overrides: Any) -> Harness:
        h = Harness(self.redis, self.repo, **overrides)
        self.harnesses.append(h)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(h.stop()))
        return await h.start(ready=ready, warm=warm)


def d(coro: Any) -> defer.Deferred[Any]:
    return defer.Deferred.fromCoroutine(coro)


GO_ERROR_HEADERS = {"content-type", "x-content-type-options", "server", "content-length", "date",
                    "connection"}


class HandlerCases(RedirectorTestCase):
    def assert_plain(self, resp: Response, status: int, text: str) -> None:
        self.assertEqual(resp.status, status)
        self.assertEqual(resp.body, (text + "\n").encode())
        self.assertEqual(resp.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(resp.header("X-Content-Type-Options"), "nosniff")
        self.assertEqual(resp.header("Server"), "Mirrorbits/" + _version())
        self.assertLessEqual(resp.names(), GO_ERROR_HEADERS)

    def assert_fallback_redirect(self, resp: Response, target: str = "http://fallback.mirror/testy.tgz") -> None:
        self.assertEqual(resp.status, 302)
        self.assertEqual(resp.header("Location"), target)
        self.assertEqual(resp.header("Cache-Control"), "private, no-cache")
        self.assertEqual(resp.header("Content-Type"), "text/html; charset=utf-8")
        self.assertEqual(resp.header("Server"), "Mirrorbits/" + _version())
        self.assertEqual(resp.body, b"")

    def test_absent_file_404_without_redis(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            before = cmdstat(self.redis, "hmget") + cmdstat(self.redis, "smembers")
            resp = await h.request("/foobar")
            self.assert_plain(resp, 404, "Not Found")
            self.assertEqual(cmdstat(self.redis, "hmget") + cmdstat(self.redis, "smembers"), before)
        return d(run())

    def test_dotdot_403(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            # "/../foobar" is cleaned by Go's mux (301) before the handler sees it, even when the
            # dots are percent-encoded (the mux cleans the decoded path); a symlink leading out
            # of the repository reaches the handler's 403.
            with open(os.path.join(self.tmp, "foobar"), "w"):
                pass
            os.symlink(os.path.join(self.tmp, "foobar"), os.path.join(self.repo, "link"))
            resp = await h.request("/link")
            self.assert_plain(resp, 403, "Forbidden")
            resp = await h.request("/%2e%2e/foobar")
            self.assertEqual(resp.status, 301)
            resp = await h.request("/../foobar")
            self.assertEqual(resp.status, 301)
            self.assertEqual(resp.header("Location"), "/foobar")
            self.assertIsNone(resp.header("Server"))
            self.assertEqual(resp.body, b'<a href="/foobar">Moved Permanently</a>.\n\n')
        return d(run())

    def test_repository_deleted_404(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            shutil.rmtree(self.repo)
            self.assert_plain(await h.request("/foobar"), 404, "Not Found")
        return d(run())

    def test_redis_down_fallback(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            h = await self.harness()
            self.redis.kill()
            try:
                resp = await h.request("/testy.tgz")
                self.assert_fallback_redirect(resp)
                # With If-Modified-Since from 1999: unchanged.
                resp = await h.request("/testy.tgz",
                                       headers={"If-Modified-Since": "Tue, 01 Jun 1999 00:00:00 GMT"})
                self.assert_fallback_redirect(resp)
            finally:
                self.redis.start()
            # Wait until the subscriber is back (it also keeps the test's clean stop simple:
            # see the report about Subscription.stop while sleeping).
            await h.wait_for(lambda: h.view.subscribed, timeout=10)
        return d(run())

    def test_not_ready_fallback(self) -> defer.Deferred[None]:
        # The real "database not ready / loading" path: the readiness gate is still closed.
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/")
            h = await self.harness(ready=False)
            self.assert_fallback_redirect(await h.request("/testy.tgz"))
        return d(run())

    def test_unknown_file_or_no_mirrors(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            self.assert_fallback_redirect(await h.request("/testy.tgz"))  # not scanned yet
            put_file(self.r)
            self.r.publish(schema.CHANNEL_FILE_UPDATE, "/testy.tgz")
            await h.wait_for(lambda: h.view.peek("/testy.tgz").known)
            self.assert_fallback_redirect(await h.request("/testy.tgz"))  # FILEMIRRORS empty
            resp = await h.request("/testy.tgz",
                                   headers={"If-Modified-Since": "Tue, 01 Jun 1999 00:00:00 GMT"})
            self.assert_fallback_redirect(resp)
        return d(run())

    def test_mirror_redirect(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            self.r.hset(schema.mirror_key(42), mapping={"ID": "42", "http": "http://example.mirror/",
                                                        "enabled": "true", "httpUp": "true"})
            self.r.sadd(schema.file_mirrors_key("/testy.tgz"), "42")
            self.r.hset(schema.file_info_key(42, "/testy.tgz"), mapping={"size": "48", "modTime": MODTIME})
            h = await self.harness()
            for headers in ({}, {"If-Modified-Since": "Tue, 01 Jun 1999 00:00:00 GMT"}):
                resp = await h.request("/testy.tgz", headers=headers)
                self.assert_fallback_redirect(resp, "http://example.mirror/testy.tgz")
                self.assertEqual(resp.all("Link"), [])
        return d(run())

    def test_not_modified(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/")
            h = await self.harness()
            before = cmdstat(self.redis, "smembers")
            resp = await h.request("/testy.tgz",
                                   headers={"If-Modified-Since": "Wed, 04 Jun 2025 02:12:35 GMT"})
            self.assertEqual(resp.status, 304)
            self.assertEqual(resp.header("Last-Modified"), "Sun, 01 Jun 2025 06:00:00 GMT")
            self.assertEqual(resp.header("Server"), "Mirrorbits/" + _version())
            self.assertLessEqual(resp.names(), {"last-modified", "server", "date", "connection"})
            self.assertEqual(resp.body, b"")
            # Equal to the truncated modtime is also "not modified"; a second earlier is not.
            resp = await h.request("/testy.tgz", headers={"If-Modified-Since": "Sun, 01 Jun 2025 06:00:00 GMT"})
            self.assertEqual(resp.status, 304)
            resp = await h.request("/testy.tgz", headers={"If-Modified-Since": "Sun, 01 Jun 2025 05:59:59 GMT"})
            self.assertEqual(resp.status, 302)
            self.assertGreaterEqual(cmdstat(self.redis, "smembers"), before)
        return d(run())

    def test_three_mirrors_and_protocols(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 1, "http://a.mirror/", countries="FR DE")
            put_mirror(self.r, 2, "b.mirror/pub/")
            put_mirror(self.r, 3, "https://c.mirror/", countries="US")
            h = await self.harness()
            urls = {"http://a.mirror/testy.tgz": "fr", "https://b.mirror/pub/testy.tgz": "",
                    "https://c.mirror/testy.tgz": "us"}
            seen = set()
            for _ in range(12):
                resp = await h.request("/testy.tgz")
                self.assertEqual(resp.status, 302)
                loc = resp.header("Location")
                self.assertIn(loc, urls)
                seen.add(loc)
                links = resp.all("Link")
                self.assertEqual(len(links), 2)
                got = set()
                for k, link in enumerate(links, 1):
                    target, rest = link.split(">; ", 1)
                    url = target[1:]
                    self.assertEqual(rest, f"rel=duplicate; pri={k}; geo={urls[url]}")
                    got.add(url)
                self.assertEqual(got | {loc}, set(urls))
            self.assertGreater(len(seen), 1)  # random order without GeoIP
            resp = await h.request("/testy.tgz", headers={"X-Forwarded-Proto": "https"})
            self.assertIn(resp.header("Location"), {"https://b.mirror/pub/testy.tgz", "https://c.mirror/testy.tgz"})
            self.assertEqual(len(resp.all("Link")), 1)
            resp = await h.request("/testy.tgz?https=0", headers={"X-Forwarded-Proto": "https"})
            self.assertIn(resp.header("Location"), {"http://b.mirror/pub/testy.tgz", "http://a.mirror/testy.tgz"})
            self.assertEqual(len(resp.all("Link")), 1)
            self.assertNotIn("c.mirror", resp.header("Location") + "".join(resp.all("Link")))
        return d(run())

    def test_json(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 1, "http://a.mirror/", countries="FR DE")
            h = await self.harness(OutputMode="auto")
            resp = await h.request("/testy.tgz", headers={"Accept": "text/html, application/json"})
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("Content-Type"), "application/json; charset=utf-8")
            self.assertEqual(resp.header("Cache-Control"), "private, no-cache")
            self.assertTrue(resp.body.endswith(b"}\n"))
            self.assertNotIn(b"\n", resp.body[:-1])
            doc = json.loads(resp.body)
            self.assertEqual(list(doc), ["FileInfo", "IP", "ClientInfo", "MirrorList", "LocalJSPath"])
            self.assertEqual(doc["FileInfo"], {"Path": "/testy.tgz", "Size": 48,
                                               "ModTime": "2025-06-01T06:00:00.123456789Z", "Sha256": SHA256})
            self.assertEqual(doc["IP"], "127.0.0.1")
            m = doc["MirrorList"][0]
            self.assertEqual(list(m)[:3], ["ID", "Name", "HttpURL"])
            self.assertEqual(m["AbsoluteURL"], "http://a.mirror/")
            self.assertEqual(m["CountryCodes"], "FR DE")
            self.assertIn(b'"StateSince":"0001-01-01T00:00:00Z","Distance":0,"ComputedScore":0,', resp.body)
            # Without the Accept header: a redirect.
            self.assertEqual((await h.request("/testy.tgz")).status, 302)
            # ?pretty
            resp = await h.request("/testy.tgz?pretty", headers={"Accept": "application/json;q=0"})
            self.assertEqual(resp.status, 200)
            self.assertTrue(resp.body.startswith(b'{\n    "FileInfo": {\n        "Path"'))
            self.assertFalse(resp.body.endswith(b"\n"))
            self.assertEqual(int(resp.header("Content-Length")), len(resp.body))
            self.assertEqual(json.loads(resp.body), doc)
        return d(run())

    def test_fallback_json(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness(OutputMode="json")
            resp = await h.request("/testy.tgz")
            self.assertEqual(resp.status, 200)
            doc = json.loads(resp.body)
            self.assertIs(doc["Fallback"], True)
            self.assertEqual(doc["FileInfo"], {"Path": "/testy.tgz", "ModTime": "0001-01-01T00:00:00Z"})
            m = doc["MirrorList"][0]
            self.assertEqual((m["ID"], m["Name"], m["Enabled"], m["HttpURL"], m["AbsoluteURL"]),
                             (0, "fallback0", False, "http://fallback.mirror/", "http://fallback.mirror/"))
            self.assertIn(b'"Fallback":true,"LocalJSPath":""}\n', resp.body)
        return d(run())

    def test_no_fallback_503(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness(Fallbacks=())
            self.assert_plain(await h.request("/testy.tgz"), 503, "Service Unavailable")
        return d(run())

    def test_root_fallback(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            resp = await h.request("/")
            self.assertEqual(resp.status, 302)
            self.assertEqual(resp.header("Location"), "http://fallback.mirror/")
        return d(run())

    def test_post_ignores_if_modified_since(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/")
            h = await self.harness()
            resp = await h.request("/testy.tgz", method="POST",
                                   headers={"If-Modified-Since": "Wed, 04 Jun 2025 02:12:35 GMT",
                                            "Content-Length": "0"})
            self.assert_fallback_redirect(resp, "http://example.mirror/testy.tgz")
        return d(run())

    def test_broken_second_mirror_is_skipped(self) -> defer.Deferred[None]:
        # Go answers 500 "redigo: nil returned" (quirk 2); we skip the vanished mirror instead.
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 1, "http://a.mirror/")
            self.r.sadd(schema.file_mirrors_key("/testy.tgz"), "2")
            self.r.hset(schema.file_info_key(2, "/testy.tgz"), mapping={"size": "48", "modTime": MODTIME})
            put_mirror(self.r, 3, "http://c.mirror/", path="/other")
            self.r.hset(schema.mirror_key(3), "score", "not-a-number")
            self.r.sadd(schema.file_mirrors_key("/testy.tgz"), "3")
            self.r.hset(schema.file_info_key(3, "/testy.tgz"), mapping={"size": "48", "modTime": MODTIME})
            h = await self.harness()
            for _ in range(3):
                resp = await h.request("/testy.tgz")
                self.assertEqual(resp.status, 302)
                self.assertEqual(resp.header("Location"), "http://a.mirror/testy.tgz")
                self.assertEqual(resp.all("Link"), [])
        return d(run())

    def test_gzip(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/")
            h = await self.harness(Gzip=True)
            resp = await h.request("/testy.tgz", headers={"Accept-Encoding": "gzip, deflate"})
            self.assertEqual(resp.status, 302)
            self.assertEqual(resp.header("Content-Encoding"), "gzip")
            self.assertLess(len(resp.body), 40)
            self.assertEqual(gzip.decompress(resp.body), b"")
            resp = await h.request("/nope", headers={"Accept-Encoding": "gzip"})
            self.assertEqual(resp.status, 404)
            self.assertEqual(gzip.decompress(resp.body), b"Not Found\n")
            resp = await h.request("/testy.tgz?pretty", headers={"Accept-Encoding": "gzip",
                                                                 "Accept": "application/json"})
            self.assertEqual(resp.status, 302)  # OutputMode redirect
            h.set_config(OutputMode="json")
            resp = await h.request("/testy.tgz?pretty", headers={"Accept-Encoding": "gzip"})
            self.assertEqual(int(resp.header("Content-Length")), len(resp.body))  # quirk 6 fixed
            self.assertEqual(json.loads(gzip.decompress(resp.body))["IP"], "127.0.0.1")
            # No Accept-Encoding: plain.
            resp = await h.request("/testy.tgz")
            self.assertIsNone(resp.header("Content-Encoding"))
        return d(run())


def _version() -> str:
    from mirrorbits import VERSION

    return VERSION
