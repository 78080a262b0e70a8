"""The redirector beyond the handler cases: Redis outages, malformed requests, the redirect selection
memo (hypothesis over random worlds), worker processes sharing the listening socket."""

from __future__ import annotations

import os
import random
import socket
import sys
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from mirrorbits.cache import PathEntry
from mirrorbits.config import Config
from mirrorbits.model import FileInfo, Mirror
from mirrorbits.redis import schema
from mirrorbits.selection import Candidate, ClientLocation, MirrorFile, Secure, select_mirrors
from mirrorbits.web.resource import RedirectorResource, _ConfigState, parse_http_date, parse_query
from mirrorbits.web.workers import spawn_workers
from tests.web.test_http_cases import MODTIME, RedirectorTestCase, d, put_file, put_mirror, raw_http


class Pure(unittest.SynchronousTestCase):
    def test_parse_query_like_go(self) -> None:
        self.assertEqual(parse_query("mirrorlist&https=1&https=0"), {"mirrorlist": [""], "https": ["1", "0"]})
        self.assertEqual(parse_query("a=%zz&b;c=1&d=x+y"), {"d": ["x y"]})  # bad pairs skipped
        self.assertEqual(parse_query(""), {})

    def test_http_dates(self) -> None:
        t = 1749088355
        self.assertEqual(parse_http_date(b"Thu, 05 Jun 2025 01:52:35 GMT"), t)
        self.assertEqual(parse_http_date("Thursday, 05-Jun-25 01:52:35 GMT"), t)
        self.assertEqual(parse_http_date("Thu Jun  5 01:52:35 2025"), t)
        self.assertIsNone(parse_http_date("yesterday"))
        self.assertIsNone(parse_http_date(b"Thu, 05 Jun 2025 01:52:35 CEST"))


class Outages(RedirectorTestCase):
    def test_redis_stopped_then_back(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/")
            put_file(self.r, "/other.tgz")
            open(os.path.join(self.repo, "other.tgz"), "wb").close()
            self.r.sadd(schema.FILES, "/testy.tgz", "/other.tgz")
            h = await self.harness(warm=True)
            await h.wait_for(lambda: h.view.lookup("/testy.tgz") is not None)
            self.r.srem(schema.FILES, "/other.tgz")
            h.view.clear()  # forget /other.tgz: it is known to Redis only
            await h.request("/testy.tgz")
            self.redis.kill()
            try:
                for _ in range(3):
                    t0 = reactor.seconds()
                    resp = await h.request("/testy.tgz")  # from the view
                    self.assertEqual(resp.header("Location"), "http://example.mirror/testy.tgz")
                    self.assertLess(reactor.seconds() - t0, 1.0)
                    resp = await h.request("/other.tgz")  # unknown to the view: fallback, at once
                    self.assertEqual((resp.status, resp.header("Location")),
                                     (302, "http://fallback.mirror/other.tgz"))
                    self.assertLess(reactor.seconds() - t0, 2.0)
                fallbacks = h.holder.current.Fallbacks
                h.set_config(Fallbacks=())
                resp = await h.request("/other.tgz")
                self.assertEqual(resp.status, 503)
                self.assertEqual(resp.body, b"Service Unavailable\n")
                h.set_config(Fallbacks=fallbacks)
            finally:
                self.redis.start()
            # Meanwhile a Go node moved the file to another mirror (its messages were lost).
            r = self.redis.client()
            put_file(r)
            put_file(r, "/other.tgz")
            put_mirror(r, 7, "http://seven.mirror/")
            put_mirror(r, 7, "http://seven.mirror/", path="/other.tgz")
            r.sadd(schema.FILES, "/testy.tgz", "/other.tgz")
            await h.wait_for(lambda: h.view.subscribed, timeout=10)
            await h.wait_for(lambda: h.view.stats["clears"] > 1, timeout=10)
            resp = await h.request("/testy.tgz")
            self.assertEqual(resp.header("Location"), "http://seven.mirror/testy.tgz")
            resp = await h.request("/other.tgz")
            self.assertEqual(resp.header("Location"), "http://seven.mirror/other.tgz")
        return d(run())

    def test_hung_redis_does_not_hang_requests(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/")
            h = await self.harness()
            h.view.load_timeout = 0.3
            self.redis.proc.send_signal(__import__("signal").SIGSTOP)
            try:
                t0 = reactor.seconds()
                resp = await h.request("/testy.tgz")
                self.assertEqual(resp.header("Location"), "http://fallback.mirror/testy.tgz")
                self.assertLess(reactor.seconds() - t0, 2.0)
            finally:
                self.redis.proc.send_signal(__import__("signal").SIGCONT)
        return d(run())


class Malformed(RedirectorTestCase):
    def test_malformed_requests_get_4xx(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/")
            h = await self.harness(OutputMode="auto")
            cases = [
                (b"GET /bad%zzescape HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
                (b"GET /testy.tgz%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
                (b"GET /a/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 301),
                (b"GET /%2e%2e%2f%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 301),
                (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
                (b"GET /" + b"a/" * 3000 + b"x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
                (b"GET /testy.tgz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: \xff\xfe, 1.2.3.4\r\n"
                 b"Connection: close\r\n\r\n", 400),
                (b"GET /testy.tgz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: " + b"1" * 300 +
                 b"\r\nConnection: close\r\n\r\n", 400),
            ]
            for raw, status in cases:
                resp = await h.request("", raw=raw)
                self.assertEqual(resp.status, status, raw[:60])
                self.assertNotIn(b"Traceback", resp.body)
            # "*" is answered by twisted.web itself (Go: 400): a 4xx all the same.
            resp = await h.request("", raw=b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(400 <= resp.status < 500, resp.status)
            # Go-compatible leniency: "unknown" / a port in X-Forwarded-For just do not geolocate,
            # and any Accept works (substring rule).
            for headers in ({"X-Forwarded-For": "unknown"}, {"X-Forwarded-For": "1.2.3.4:80"},
                            {"Accept": "\u00e9;;;q=x, */*"}, {"Accept": ""}):
                resp = await h.request("/testy.tgz", headers=headers)
                self.assertEqual(resp.status, 302, headers)
            resp = await h.request("/testy.tgz", headers={"Accept": "garbage application/json"})
            self.assertEqual(resp.status, 200)
        return d(run())

    def test_non_ascii_location_is_escaped(self) -> defer.Deferred[None]:
        async def run() -> None:
            name = "/caf\u00e9 x.iso"
            open(os.path.join(self.repo, name[1:]), "wb").close()
            put_file(self.r, name)
            put_mirror(self.r, 1, "http://a.mirror/", path=name)
            h = await self.harness()
            resp = await h.request("/caf%C3%A9%20x.iso")
            self.assertEqual(resp.status, 302)
            self.assertEqual(resp.header("Location"), "http://a.mirror/caf%c3%a9 x.iso")
        return d(run())


# -------------------------------------------------------------------------------------------------
# The redirect selection memo: same invariants as select_mirrors, over random worlds.

_ABS = st.sampled_from(["http://", "https://", ""])
_LOCAL_NS = 1_748_757_600_000_000_000


@st.composite
def worlds(draw: Any) -> tuple[list[tuple[Candidate, MirrorFile | None]], ClientLocation, Secure]:
    n = draw(st.integers(0, 12))
    pairs = []
    for i in range(n):
        cand = Candidate(Mirror(
            id=i + 1, name=f"m{i}", http_url=draw(_ABS) + f"m{i}.example/",
            enabled=draw(st.booleans()), http_up=draw(st.booleans()), https_up=draw(st.booleans()),
            latitude=draw(st.floats(-80, 80)), longitude=draw(st.floats(-179, 179)),
            country_codes=draw(st.sampled_from(["FR", "DE FR", "US", ""])),
            asnum=draw(st.sampled_from([0, 1, 2])), score=draw(st.integers(-50, 50))))
        kind = draw(st.sampled_from(["same", "same", "missing", "size", "old"]))
        mf = {"same": MirrorFile(100, _LOCAL_NS), "missing": None, "size": MirrorFile(99, _LOCAL_NS),
              "old": MirrorFile(100, _LOCAL_NS - 10**10)}[kind]
        pairs.append((cand, mf))
    client = ClientLocation(draw(st.sampled_from(["FR", "US", "JP"])), "EU", draw(st.integers(0, 2)),
                            draw(st.floats(-80, 80)), draw(st.floats(-179, 179)))
    return pairs, client, draw(st.sampled_from(list(Secure)))


def _fake_view(cands: list[Candidate], gen: int = 0) -> SimpleNamespace:
    """What the fast path asks of the view: its mirror generation and current mirrors."""
    return SimpleNamespace(gen=gen, mirrors=lambda: {c.id: c for c in cands})


def _app_with_view(config: Config, view: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(config=config, get_cache=lambda: view)


class FastPathProperties(unittest.SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(worlds(), st.integers(0, 2**32))
    def test_redirect_selection_equals_select_mirrors(self, world: Any, seed: int) -> None:
        """Same mirrors, same order, same weights as select_mirrors with the same rng, over
        several requests (fast path, or memo miss then hits when there is no weighted draw)."""
        pairs, client, secure = world
        config = Config(Repository="/")
        # The view also knows a mirror that does not carry the file: it must never be chosen.
        outsider = Candidate(Mirror(id=99, name="x", http_url="https://x.example/", enabled=True, http_up=True,
                             https_up=True, latitude=client.latitude, longitude=client.longitude,
                             country_codes=client.country))
        view = _fake_view([c for c, _ in pairs] + [outsider])
        res = RedirectorResource(_app_with_view(config, view), rng=random.Random(seed))
        state = _ConfigState(config)
        entry = PathEntry("/f", FileInfo("/f", 100, _LOCAL_NS))
        entry.pairs = tuple(pairs)
        ok = {c.id for c, mf in pairs if mf is not None and mf.size == 100 and mf.mod_time_ns == _LOCAL_NS}
        ref_rng = random.Random(seed)
        for _ in range(3):
            out = res._redirect_selection("/f", entry.info, entry, client, secure, config, state)
            ref = select_mirrors("/f", 100, _LOCAL_NS, entry.pairs, client, secure=secure, rng=ref_rng)
            self.assertIsNotNone(out)
            assert out is not None
            sel, plan = out
            got = [(ch.candidate.id, ch.absolute_url, ch.computed_score, ch.weight) for ch in sel.selected]
            want = [(ch.candidate.id, ch.absolute_url, ch.computed_score, ch.weight) for ch in ref.selected]
            self.assertEqual(got, want[:len(got)])
            # A weighted draw (at most 5) needs two mirrors with a weight; with one, the sorted list.
            self.assertEqual(len(got), min(len(want), 5 if sum(1 for w in want if w[3]) > 1
                                           else config.MaxLinkHeaders + 1))
            self.assertTrue({g[0] for g in got} <= ok)  # never a mirror with the file missing or outdated
            self.assertIsNotNone(plan)

    def test_plans_follow_the_view(self) -> None:
        config = Config(Repository="/")
        client = ClientLocation("FR", "EU", 7, 48.85, 2.35)  # no ASN bonus (mirrors have ASN 0)
        a = Candidate(Mirror(id=1, name="a", http_url="http://a/", enabled=True, http_up=True, https_up=True,
                      latitude=48.8, longitude=2.3, country_codes="FR"))
        b = Candidate(Mirror(id=2, name="b", http_url="http://b/", enabled=True, http_up=True, https_up=True,
                      latitude=40.7, longitude=-74.0, country_codes="US"))
        c = Candidate(Mirror(id=3, name="c", http_url="http://c/", enabled=True, http_up=True, https_up=True,
                      latitude=48.9, longitude=2.4, country_codes="FR"))
        view = _fake_view([a, b, c])
        res = RedirectorResource(_app_with_view(config, view), rng=random.Random(1))
        state = _ConfigState(config)
        entry = PathEntry("/f", FileInfo("/f", 100, _LOCAL_NS))
        entry.pairs = ((a, MirrorFile(100, _LOCAL_NS)), (b, MirrorFile(100, _LOCAL_NS)))

        def ids() -> list[int]:
            out = res._redirect_selection("/f", entry.info, entry, client, Secure.UNDEFINED, config, state)
            assert out is not None
            return [ch.candidate.id for ch in out[0].selected]

        self.assertEqual(ids()[0], 1)
        entry.pairs = ((b, MirrorFile(100, _LOCAL_NS)),)  # the view recomposed: a new tuple
        self.assertEqual(ids(), [2])
        # a and c both near: a weighted draw between them (the fast path, no memo)
        entry.pairs = ((a, MirrorFile(100, _LOCAL_NS)), (b, MirrorFile(100, _LOCAL_NS)),
                       (c, MirrorFile(100, _LOCAL_NS)))
        misses = res.memo_stats["misses"]
        seen = set()
        for _ in range(40):
            first = ids()
            self.assertEqual(sorted(first), [1, 3])
            seen.add(first[0])
        self.assertEqual(seen, {1, 3})
        self.assertEqual(res.memo_stats["misses"], misses)
        # A mirror record changes (new Candidate, new generation): c's replacement is far away.
        c2 = Candidate(Mirror(id=3, name="c", http_url="http://c/", enabled=True, http_up=True, https_up=True,
                       latitude=-33.9, longitude=151.2, country_codes="AU"))
        view.gen = 1
        view.mirrors = lambda: {m.id: m for m in (a, b, c2)}
        entry.pairs = ((a, MirrorFile(100, _LOCAL_NS)), (b, MirrorFile(100, _LOCAL_NS)),
                       (c2, MirrorFile(100, _LOCAL_NS)))
        self.assertEqual(ids()[0], 1)
        self.assertEqual(res.memo_stats["misses"], misses + 1)


# -------------------------------------------------------------------------------------------------
# Worker processes


class Workers(RedirectorTestCase):
    timeout = 60

    def test_worker_process_shares_the_socket(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/")
            self.r.set(schema.DB_VERSION_KEY, str(schema.DB_VERSION))
            conf = os.path.join(self.tmp, "mirrorbits.conf")
            with open(conf, "w") as f:
                f.write(f"Repository: {self.repo}\nRedisAddress: {self.redis.address}\n"
                        f"OutputMode: redirect\nGeoipDatabasePath: {self.tmp}/nogeo\n"
                        f"DataDir: {self.tmp}/data\nWorkers: 2\n")
            h = await self.harness()
            env_path = os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])
            os.environ["PYTHONPATH"] = env_path
            self.addCleanup(os.environ.__setitem__, "PYTHONPATH", env_path)
            workers = spawn_workers(reactor, h.port.fileno(), 1, config_path=conf)
            self.assertEqual(len(workers), 1)

            def stop() -> defer.Deferred[None]:
                for w in workers:
                    if not w.ended.called:
                        w.transport.signalProcess("TERM")
                return defer.DeferredList([w.ended for w in workers])

            self.addCleanup(stop)
            port = h.port.getHost().port
            by_worker = 0
            for _attempt in range(200):  # the worker needs a moment to start and open its gate
                before = h.view.stats["hits"] + h.view.stats["misses"]
                await task.deferLater(reactor, 0.05, lambda: None)
                resp = await threads.deferToThread(
                    raw_http, port, b"GET /testy.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                self.assertEqual(resp.status, 302)
                here = h.view.stats["hits"] + h.view.stats["misses"] > before
                if not here and resp.header("Location") == "http://example.mirror/testy.tgz":
                    by_worker += 1
                    if by_worker >= 2:
                        break
            self.assertGreaterEqual(by_worker, 2, "the worker never served a mirror redirect")
            await stop()
            self.assertTrue(all(w.ended.called for w in workers))
        return d(run())


def _unused() -> None:  # keep imports used by type checkers quiet on some platforms
    _ = (socket, sys, MODTIME)
