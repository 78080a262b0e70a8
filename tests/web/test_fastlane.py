"""The lean lane (requests answered from their head, without a twisted ``Request``) answers exactly
as the twisted path: the same bytes and the same counts, over a real listening site on a real
Redis and the GeoIP test databases, for a mixed workload answered once with the lane and once
without (same rng seed), and the connection handling of a stopping daemon."""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from twisted.internet import defer, threads
from twisted.internet.error import ConnectionDone

from mirrorbits.geo import ASN_DB, CITY_DB
from mirrorbits.model import Mirror
from mirrorbits.redis import schema
from mirrorbits.web.downloadlog import FILENAME
from mirrorbits.web.site import LeanChannel, LeanSite, make_site, wind_down
from tests.test_geo import ASN_SRC, CITY_SRC
from tests.web.test_http_cases import MODTIME, RedirectorTestCase, d
from tests.web.test_leanhttp import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import world as bench_world  # noqa: E402

#: A file no mirror carries (answered with the fallbacks), and files known to Redis but not to
#: the warmed view (``FILES`` does not list them: their first request waits for a Redis read).
ORPHAN = "/orphan/nobody-has-it.iso"
LATE = ["/late/one.iso", "/late/two.iso"]
#: A file only mirrors without IPv6 carry (with SelectByIPFamily: an IPv6 client's family fallback).
V4ONLY = "/v4only/file.iso"
IPV6_CLIENT = "2001:218::5"  # JP in the test databases
_DATE = re.compile(rb"\r\nDate: [^\r]*")


def fill_world(r: Any, repo: str, n_files: int = 120) -> list[str]:
    """The benchmark's 60 mirrors, ``n_files`` of its paths (partial mirrors carry a share of
    them, a few copies are stale), in the Go layout; the repository tree on disk."""
    rng = random.Random(5)
    paths = bench_world.file_paths(n_files) + [V4ONLY, ORPHAN]
    mirrors: list[Mirror] = bench_world.build_mirrors()
    pipe = r.pipeline(transaction=False)
    for p in paths + LATE:
        pipe.hset(schema.file_key(p), mapping={"size": str(1000 + len(p)), "modTime": MODTIME,
                                                "sha1": "", "sha256": "ab" * 32, "md5": ""})
        full = repo + p
        os.makedirs(os.path.dirname(full), exist_ok=True)
        open(full, "wb").close()
    pipe.sadd(schema.FILES, *paths)
    for m in mirrors:
        pipe.hset(schema.mirror_key(m.id), mapping=dict(m.to_redis()))
        pipe.hset(schema.MIRRORS, str(m.id), m.name)
        share = 1.0 if m.id % 3 else rng.uniform(0.2, 0.8)
        for p in paths[:-2] + LATE + [V4ONLY]:
            if p == V4ONLY and m.id % 3 or rng.random() >= share:
                continue
            modtime = MODTIME if rng.random() < 0.97 else "2020-01-01 00:00:00 +0000 UTC"
            pipe.sadd(schema.file_mirrors_key(p), str(m.id))
            pipe.hset(schema.file_info_key(m.id, p), mapping={"size": str(1000 + len(p)),
                                                              "modTime": modtime})
    pipe.execute()
    return paths


def workload(paths: list[str], ips: list[str], seed: int = 11, n: int = 260) -> list[list[bytes] | str]:
    """Connections, each a batch of raw requests sent at once (pipelined; the last one closes the
    connection), plus ``"no-fallbacks"``/``"fallbacks"`` markers that swap the config between
    connections.  Zipf-ish paths; lean-lane requests mixed with ones only twisted answers."""
    rng = random.Random(seed)
    weights = [1 / k for k in range(1, len(paths) + 1)]
    out: list[list[bytes] | str] = []
    batch: list[bytes] = []
    for i in range(n):
        if i == n // 2:
            out.append("no-fallbacks")
        if i == n // 2 + 15:
            out.append("fallbacks")
        path = rng.choices(paths, weights)[0]
        if rng.random() < (0.5 if n // 2 <= i < n // 2 + 15 else 0.04):
            path = ORPHAN
        client = rng.choice(ips)
        if rng.random() < 0.05:
            path, client = V4ONLY, IPV6_CLIENT
        method, version, query = "GET", "HTTP/1.1", ""
        headers = ["Host: 127.0.0.1"]
        kind = rng.random()
        if 0.43 <= kind < 0.45:
            headers.append("X-Forwarded-For: " + "1" * 300)  # not a usable IP: 400
        elif rng.random() < 0.9:  # else the peer's address (no location: a uniform draw)
            headers.append("X-Forwarded-For: " + client)
        if kind < 0.10:
            method = "HEAD"
        elif kind < 0.15:
            headers.append("X-Forwarded-Proto: https")
        elif kind < 0.20:
            headers += ["Range: bytes=0-99", f"User-Agent: agent-{rng.randrange(3)}"]
        elif kind < 0.25:
            headers.append("Accept: application/json")
        elif kind < 0.28:
            headers.append("If-Modified-Since: Sun, 01 Jun 2025 07:00:00 GMT")  # 304: twisted
        elif kind < 0.31:
            headers.append("Accept: application/metalink4+xml")  # a format answer: twisted
        elif kind < 0.34:
            query = "?https=1"  # a query: twisted
        elif kind < 0.36:
            query = "?sha256"
        elif kind < 0.38:
            path = "/does/not/exist.iso"
        elif kind < 0.41:
            path = rng.choice(LATE)  # a Redis read the first time: answered later
        elif kind < 0.43:
            path = "/releases/../" + path.lstrip("/")  # 301
        elif kind < 0.45:
            pass  # the unusable IP above
        elif kind < 0.47:
            method = "POST"
        elif kind < 0.49:
            headers.append("Want-Digest: sha-256")
        elif kind < 0.51:
            headers.append("Cookie: a=b")
        last = rng.random() < 0.3 or i == n - 1
        if last:
            if rng.random() < 0.3:
                version = "HTTP/1.0"
            else:
                headers.append(rng.choice(["Connection: close", "connection: keep-alive close"]))
        raw = "\r\n".join([f"{method} {path}{query} {version}"] + headers) + "\r\n\r\n"
        batch.append(raw.encode("latin-1"))
        if last:
            out.append(batch)
            batch = []
    return out


def write_family_states(r: Any) -> None:
    """Per-family states as a monitor with ``SelectByIPFamily`` leaves them: every third mirror
    has no IPv6 address, every fifth a dead one, the others answer over both families."""
    for m in bench_world.build_mirrors():
        v6 = "none" if m.id % 3 == 0 else "0" if m.id % 5 == 0 else "1"
        r.hset(schema.mirror_key(m.id), mapping={
            "httpUpIPv4": "1", "httpUpIPv6": v6, "httpsUpIPv4": "1", "httpsUpIPv6": v6,
            "httpDownReasonIPv6": "Unreachable" if v6 == "0" else ""})


def exchange(port: int, batch: list[bytes]) -> bytes:
    """Send ``batch`` in one write and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(batch))
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def dump(r: Any, key: str) -> object:
    kind = r.type(key)
    if kind == "hash":
        return r.hgetall(key)
    if kind == "zset":
        return r.zrange(key, 0, -1, withscores=True)
    return r.get(key)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class LaneAgainstTwisted(RedirectorTestCase):
    timeout = 120

    def test_same_bytes_and_counts_with_the_lane_on_and_off(self) -> defer.Deferred[None]:
        return self.compare(by_family=False)

    def test_same_with_the_choice_by_address_family(self) -> defer.Deferred[None]:
        return self.compare(by_family=True)

    def compare(self, by_family: bool) -> defer.Deferred[None]:
        async def run() -> None:
            geo = os.path.join(self.tmp, "geoip")
            os.makedirs(geo)
            shutil.copyfile(CITY_SRC, os.path.join(geo, CITY_DB))
            shutil.copyfile(ASN_SRC, os.path.join(geo, ASN_DB))
            logdir = os.path.join(self.tmp, "logs")
            os.makedirs(logdir)
            paths = fill_world(self.r, self.repo)
            if by_family:
                write_family_states(self.r)
            h = await self.harness(OutputMode="auto", GeoipDatabasePath=geo, LogDir=logdir,
                                   MaxLinkHeaders=3, SelectByIPFamily=by_family)
            app = h.app
            stats = app.get_download_stats()
            stats.startService()
            self.addCleanup(stats.stopService)
            log = app.get_download_log()
            log.startService()
            self.addCleanup(log.stopService)
            resource = h.resource
            port = h.port.getHost().port
            conversations = workload(paths, bench_world.client_ips(200))
            fallbacks = h.holder.current.Fallbacks

            async def answers(lane: bool) -> tuple[list[bytes], dict[str, object]]:
                h.view.clear()
                await h.view.warm()
                await stats.flush()
                for key in self.r.keys("STATS_*") + self.r.keys("DOWNLOADED_*"):
                    self.r.delete(key)
                with open(os.path.join(logdir, FILENAME), "rb") as f:
                    log_start = len(f.read())
                metrics = dict(LeanSite.request_metrics.counts)
                countries = dict(resource.redirect_counts.countries)
                mirrors = {k: list(v) for k, v in resource.redirect_counts.mirrors.items()}
                view_stats = dict(h.view.stats)
                fallback_counts = [sample("mirrorbits_fallbacks_total", {"reason": r})
                                   for r in ("redis", "no_mirror")]
                family_counts = [sample("mirrorbits_family_fallbacks_total", {"family": f})
                                 for f in ("IPv4", "IPv6")]
                resource.rng = random.Random(42)
                self.patch(LeanChannel, "fast_lane", lane)
                got = []
                for conversation in conversations:
                    if isinstance(conversation, str):
                        h.set_config(Fallbacks=() if conversation == "no-fallbacks" else fallbacks)
                        continue
                    got.append(_DATE.sub(b"\r\nDate: -", await threads.deferToThread(
                        exchange, port, conversation)))
                await stats.flush()
                with open(os.path.join(logdir, FILENAME), "rb") as f:
                    lines = [line[27:] for line in f.read()[log_start:].splitlines()
                             if not line.startswith(b"#")]
                counts: dict[str, object] = {
                    "redis": {k: dump(self.r, k) for k in self.r.keys("STATS_*")},
                    "metrics": {k: v - metrics.get(k, 0) for k, v in LeanSite.request_metrics.counts.items()
                                if v != metrics.get(k, 0)},
                    "countries": {k: v - countries.get(k, 0) for k, v in resource.redirect_counts.countries.items()
                                  if v != countries.get(k, 0)},
                    "mirrors": {k: [v[0] - mirrors.get(k, [0, 0])[0], v[1] - mirrors.get(k, [0, 0])[1]]
                                for k, v in resource.redirect_counts.mirrors.items()
                                if v != mirrors.get(k, [0, 0])},
                    "view": {k: v - view_stats.get(k, 0) for k, v in h.view.stats.items()
                             if k in ("hits", "negative", "misses")},
                    "fallbacks": [sample("mirrorbits_fallbacks_total", {"reason": r}) - before
                                  for r, before in zip(("redis", "no_mirror"), fallback_counts, strict=True)],
                    "families": [sample("mirrorbits_family_fallbacks_total", {"family": f}) - before
                                 for f, before in zip(("IPv4", "IPv6"), family_counts, strict=True)],
                    "log": lines,
                }
                return got, counts

            off, off_counts = await answers(False)
            lanes_before = sum(LeanSite.request_metrics.counts.values())
            on, on_counts = await answers(True)
            self.assertGreater(sum(LeanSite.request_metrics.counts.values()), lanes_before)
            self.assertEqual(len(on), len(off))
            for k, (a, b) in enumerate(zip(off, on, strict=True)):
                self.assertEqual(a, b, f"connection {k}")
            for key in off_counts:
                self.assertEqual(off_counts[key], on_counts[key], key)
            # The workload did what it is meant to: redirects, JSON, HEAD, fallbacks, a 503 (no
            # fallbacks), 304s, format answers, late paths, closes, all in pipelined batches.
            text = b"".join(on)
            for status in (b"302 Found", b"200 OK", b"304 Not Modified", b"503 Service Unavailable",
                           b"404 Not Found", b"301 Moved Permanently", b"400 Bad Request"):
                self.assertIn(b"HTTP/1.1 " + status, text)
            self.assertIn(b"HTTP/1.0 302 Found", text)
            self.assertIn(b"Location: http://fallback.mirror/orphan/nobody-has-it.iso", text)
            self.assertIn(b"Link: <", text)
            self.assertGreater(len(off_counts["log"]), 100)  # type: ignore[arg-type]
            self.assertTrue(off_counts["redis"])
            self.assertGreater(off_counts["fallbacks"][1], 0)  # type: ignore[index]
            if by_family:
                self.assertGreater(sum(off_counts["families"]), 0)  # type: ignore[arg-type]
            # ... and the lane answered most of it (the twisted path's metrics are the same).
            self.assertGreater(self.lane_answers, 100)

        self.lane_answers = 0
        original = LeanChannel.answer_at_once

        def counting(channel: LeanChannel, parsed: Any) -> bool:
            answered = original(channel, parsed)
            self.lane_answers += answered
            return answered

        self.patch(LeanChannel, "answer_at_once", counting)
        return d(run())

    def test_a_stopping_daemon_answers_the_lane_with_connection_close(self) -> defer.Deferred[None]:
        async def run() -> None:
            paths = fill_world(self.r, self.repo, 5)
            h = await self.harness(warm=True)
            await h.wait_for(lambda: h.view.warmed)
            site = make_site(h.app)
            got = {}
            for lane in (False, True):
                self.patch(LeanChannel, "fast_lane", lane)
                h.resource.rng = random.Random(1)
                channel, transport = connect(site)
                request = f"GET {paths[0]} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                channel.dataReceived(request)
                self.assertFalse(transport.disconnecting)
                wind_down(channel)
                channel.dataReceived(request + request)  # the second is never answered
                got[lane] = _DATE.sub(b"", transport.value())
                self.assertTrue(transport.disconnecting)
                channel.connectionLost(ConnectionDone())
                self.assertEqual(got[lane].count(b"HTTP/1.1 302 Found"), 2)
                self.assertEqual(got[lane].count(b"\r\nConnection: close\r\n"), 1)
            self.assertEqual(got[False], got[True])
        return d(run())

    def test_a_bug_answers_500_as_the_twisted_path_and_keeps_the_connection(self) -> defer.Deferred[None]:
        # The logged failures' frames keep this test case, and so its Redis client, alive: close
        # the client's socket here rather than when it is collected.
        self.addCleanup(self.r.close)

        async def run() -> None:
            paths = fill_world(self.r, self.repo, 5)
            h = await self.harness(warm=True)
            await h.wait_for(lambda: h.view.warmed)
            site = make_site(h.app)

            def broken(*args: object) -> None:
                raise ZeroDivisionError("a bug")

            self.patch(h.resource, "_choose", broken)
            got = {}
            for lane in (False, True):
                self.patch(LeanChannel, "fast_lane", lane)
                channel, transport = connect(site)
                for method in ("GET", "HEAD"):
                    channel.dataReceived(f"{method} {paths[0]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                got[lane] = _DATE.sub(b"", transport.value())
                self.assertFalse(transport.disconnecting)
                channel.connectionLost(ConnectionDone())
                self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
            self.assertEqual(got[False], got[True])
            self.assertEqual(got[True].count(b"HTTP/1.1 500 Internal Server Error\r\n"), 2)
            self.assertIn(b"\r\n\r\nInternal Server Error\n", got[True])
        return d(run())
