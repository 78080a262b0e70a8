"""Checksums and ``?stats`` over real HTTP and Redis."""

from __future__ import annotations

import json
import os
import time

from twisted.internet import defer

from mirrorbits.redis import schema
from tests.web.test_http_cases import SHA256, RedirectorTestCase, d, put_file


class Checksums(RedirectorTestCase):
    def test_sha256(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            h = await self.harness()
            resp = await h.request("/testy.tgz?sha256")
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("Content-Type"), "text/plain; charset=UTF-8")
            self.assertEqual(resp.body, f"{SHA256}  testy.tgz".encode())
            self.assertIsNone(resp.header("Cache-Control"))
        return d(run())

    def test_first_parameter_decides(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            h = await self.harness()
            resp = await h.request("/testy.tgz?md5&sha256")
            self.assertEqual((resp.status, resp.body), (404, b"Hash type not supported\n"))
            resp = await h.request("/testy.tgz?sha1")
            self.assertEqual(resp.status, 404)
        return d(run())

    def test_not_on_disk_and_db_down(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            h = await self.harness()
            resp = await h.request("/nope?sha256")
            self.assertEqual((resp.status, resp.body), (404, b"Not Found\n"))
            self.redis.stop()
            resp = await h.request("/testy.tgz?sha256")
            self.assertEqual((resp.status, resp.body), (503, b"Service Unavailable\n"))
            self.redis.start()
            # (Stopping the view's subscriber while it sleeps between retries trips over a
            # deferLater it already fired: connection.Subscription.stop; let it reconnect first.)
            await h.wait_for(lambda: h.view.subscribed, timeout=10)
        return d(run())

    def test_symlink_gives_target_basename(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            os.symlink("testy.tgz", os.path.join(self.repo, "latest.tgz"))
            h = await self.harness()
            resp = await h.request("/latest.tgz?sha256")
            self.assertEqual(resp.body, f"{SHA256}  testy.tgz".encode())
        return d(run())


class FileStats(RedirectorTestCase):
    def test_periods(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            resp = await h.request("/testy.tgz?stats=2024-x")
            self.assertEqual((resp.status, resp.body), (400, b"Invalid period\n"))
            self.r.hset("STATS_FILE_2024_06_01", "/testy.tgz", "7")
            resp = await h.request("/testy.tgz?stats=2024-06-01")
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, b'{\n    "Period": "2024-06-01",\n    "Downloads": 7\n}')
            self.assertEqual(resp.header("Content-Type"), "text/plain; charset=utf-8")
            self.assertIsNone(resp.header("Cache-Control"))
            self.r.hset("STATS_FILE_2024_5", "/testy.tgz", "3")
            resp = await h.request("/testy.tgz?stats=2024-5")
            self.assertEqual(json.loads(resp.body), {"Period": "2024-5", "Downloads": 3})
            resp = await h.request("/testy.tgz?stats=2024--01")
            self.assertEqual(json.loads(resp.body)["Downloads"], 0)
        return d(run())

    def test_summary_uses_utc_date_and_sanitised_path(self) -> defer.Deferred[None]:
        async def run() -> None:
            os.symlink("testy.tgz", os.path.join(self.repo, "latest.tgz"))
            t = time.gmtime()
            y, m, dd = t.tm_year, t.tm_mon, t.tm_mday
            for key, v in ((schema.stats_file_key(y, m, dd), 1), (schema.stats_file_key(y, m), 2),
                           (schema.stats_file_key(y), 3), (schema.stats_file_key(), 4)):
                self.r.hset(key, "/testy.tgz", str(v))
            h = await self.harness()
            for path in ("/testy.tgz?stats", "/latest.tgz?stats="):
                resp = await h.request(path)
                self.assertEqual(resp.body,
                                 b'{\n    "Today": 1,\n    "Month": 2,\n    "Year": 3,\n    "Total": 4\n}')
            # A file gone from disk is still read under its raw path (as Go does).
            self.r.hset(schema.stats_file_key(), "/gone.iso", "9")
            resp = await h.request("/gone.iso?stats")
            self.assertEqual(json.loads(resp.body)["Total"], 9)
        return d(run())
