"""Health checks against real HTTP/HTTPS servers on loopback, recorded in a real Redis."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from mirrorbits import VERSION
from mirrorbits.config import Config
from mirrorbits.httpclient import HttpClient
from mirrorbits.model import LOG_DISABLED, LOG_STATE_CHANGED, PROTO_HTTP, PROTO_HTTPS, Mirror
from mirrorbits.monitor.cluster import Cluster
from mirrorbits.monitor.health import HealthChecker
from mirrorbits.monitor.scheduler import Monitor
from mirrorbits.monitor.state import set_mirror_state
from mirrorbits.redis import schema
from mirrorbits.scan.mirror import MirrorScanner
from tests.monitor.httpd import Answer, CertAuthority, WebServer
from tests.monitor.support import RedisTestCase, eventually

FILE = "/pub/x.iso"


class HealthTests(RedisTestCase):
    timeout = 60

    def setUp(self) -> None:
        super().setUp()
        self.tmp = Path(tempfile.mkdtemp(prefix="mb-health-"))
        self.ca = CertAuthority(self.tmp)
        self.good = WebServer(self.ca.leaf(["localhost", "127.0.0.1"]))
        self.addCleanup(self.good.stop)
        self.config = Config(Repository=str(self.tmp), CheckInterval=1)
        self.http = HttpClient(__import__("twisted.internet.reactor").internet.reactor,
                               ca_file=str(self.ca.ca_file), connect_timeout=2, timeout=1.5)
        self.r.sadd(schema.FILES, FILE)
        self.r.hset(schema.file_key(FILE), "size", "1234")

    def add_mirror(self, mirror_id: int, http: str, **fields: str) -> None:
        self.r.hset(schema.MIRRORS, str(mirror_id), f"m{mirror_id}")
        self.r.hset(schema.mirror_key(mirror_id), mapping={
            "ID": str(mirror_id), "name": f"m{mirror_id}", "http": http, "enabled": "1", **fields})
        self.r.sadd(schema.handled_files_key(mirror_id), FILE)

    def monitor(self) -> Monitor:
        cluster = Cluster(self.client, 0, node_id="solo-00001")
        scanner = MirrorScanner(self.client, lambda: self.config, self.http)
        mon = Monitor(self.client, lambda: self.config, cluster, HealthChecker(self.http), scanner,
                      tick=0.1, cluster_settle=0)
        mon._concurrent_sync = 0
        self.addCleanup(lambda: __import__("twisted.internet.defer").internet.defer
                        .Deferred.fromCoroutine(mon.stop()))
        return mon

    async def run_checks(self, ids: list[int]) -> dict[int, list[Any]]:
        """Start a monitor (no scans) and wait for one check of each mirror."""
        self.config = self.config.replace(ConcurrentSync=0)
        mon = self.monitor()
        seen: dict[int, list[Any]] = {}
        mon.check_listeners.append(lambda mid, outs: seen.setdefault(mid, outs))
        await mon.start()
        await eventually(lambda: all(i in seen for i in ids), timeout=10)
        await mon.stop()
        return seen

    def state(self, mirror_id: int) -> dict[str, str]:
        return dict(self.r.hgetall(schema.mirror_key(mirror_id)))

    async def test_statuses_reasons_and_events(self) -> None:
        s = self.good
        s.answer("/ok" + FILE, Answer(200, {"Content-Length": "1234"}))
        s.answer("/nf" + FILE, Answer(404))
        s.answer("/fb" + FILE, Answer(403))
        s.answer("/err" + FILE, Answer(500))
        s.answer("/len" + FILE, Answer(200, {"Content-Length": "99"}))
        s.answer("/redir" + FILE, Answer(302, {"Location": "/ok" + FILE}))
        s.answer("/noredir" + FILE, Answer(301, {"Location": "/ok" + FILE}))
        s.answer("/slow" + FILE, Answer(mode="slow"))
        s.answer("/drop" + FILE, Answer(mode="drop"))
        base = s.base("https", "localhost")
        paths = ["ok", "nf", "fb", "err", "len", "redir", "noredir", "slow", "drop"]
        for i, p in enumerate(paths, start=1):
            extra = {"allowredirects": "2"} if p == "noredir" else {}
            if p == "fb":  # already down for this very reason: nothing will change
                extra = {"httpsDownReason": "Got status code 403"}
            self.add_mirror(i, f"{base}/{p}/", httpUp="0", httpsUp="0", **extra)
        self.add_mirror(20, f"{s.base('http')}/ok/", httpsUp="0", httpUp="1")
        self.config = self.config.replace(DisableOnMissingFile=True)
        await self.listen((schema.CHANNEL_MIRROR_UPDATE,))
        start = int(time.time())
        failures = {"nf": "not_found", "fb": "status", "err": "status", "noredir": "unauthorized_redirect",
                    "slow": "unreachable", "drop": "unreachable"}

        def failed_checks() -> dict[str, float]:
            return {p: REGISTRY.get_sample_value("mirrorbits_health_check_failures_total", {
                "mirror": f"m{i}", "protocol": "https", "reason": failures.get(p, "status")}) or 0.0
                for i, p in enumerate(paths, start=1)}

        def checks() -> float:
            return REGISTRY.get_sample_value("mirrorbits_health_check_duration_seconds_count",
                                             {"protocol": "https"}) or 0.0

        failed_before, checks_before = failed_checks(), checks()
        await self.run_checks(list(range(1, len(paths) + 1)) + [20])
        # The metrics: a failed check counted once under its bounded reason, every check timed.
        failed_after = failed_checks()
        self.assertEqual({p: failed_after[p] - failed_before[p] for p in paths},
                         {p: 1.0 if p in failures else 0.0 for p in paths})
        self.assertGreaterEqual(checks() - checks_before, len(paths))
        expected = {
            "ok": ("1", ""), "nf": ("0", f"File not found {FILE} (error 404)"),
            "fb": ("0", "Got status code 403"), "err": ("0", "Got status code 500"),
            "len": ("1", ""), "redir": ("1", ""), "noredir": ("0", "Unauthorized redirect"),
            "slow": ("0", "Unreachable"), "drop": ("0", "Unreachable"),
        }
        for i, p in enumerate(paths, start=1):
            h = self.state(i)
            self.assertEqual((h["httpsUp"], h["httpsDownReason"]), expected[p], p)
            self.assertEqual(h["httpUp"], "0", p)  # https-only mirror: HTTP side untouched
            changed = expected[p][0] == "1"
            self.assertEqual("stateSince" in h, changed, p)
            if changed:
                self.assertGreaterEqual(int(h["stateSince"]), start)
        # 404 + DisableOnMissingFile: disabled with event 5; refused redirect: still enabled.
        self.assertEqual(self.state(2)["enabled"], "0")
        self.assertEqual(self.state(7)["enabled"], "1")
        self.assertEqual([e["Type"] for e in self.mirror_log(2)], [LOG_DISABLED])
        ok_events = self.mirror_log(1)
        self.assertEqual(len(ok_events), 1)
        self.assertEqual({k: ok_events[0][k] for k in ("Type", "MirrorID", "Proto", "Up", "Reason")},
                         {"Type": LOG_STATE_CHANGED, "MirrorID": 1, "Proto": PROTO_HTTPS, "Up": True,
                          "Reason": ""})
        self.assertEqual(list(ok_events[0]), ["Type", "MirrorID", "Timestamp", "Proto", "Up", "Reason"])
        # Down and staying down for the same reason: no event, no publish.
        self.assertEqual(self.mirror_log(3), [])
        # http-only mirror, already up: nothing changed, nothing published
        self.assertEqual(self.state(20)["httpUp"], "1")
        self.assertNotIn("stateSince", self.state(20))
        await eventually(lambda: ("_mirrorbits_mirror_update", "1") in self.messages)
        self.assertNotIn(("_mirrorbits_mirror_update", "20"), self.messages)
        self.assertNotIn(("_mirrorbits_mirror_update", "3"), self.messages)
        self.assertTrue(self.logged(f"File size mismatch! [{FILE}]"))
        self.assertTrue(self.logged(f"Unauthorized redirection for m7: {base}/noredir{FILE} => "
                                    f"{base}/ok{FILE}"))
        # the requests themselves
        reqs = [r for r in s.recorder.requests if r["path"] == "/ok" + FILE]
        self.assertTrue(reqs)
        for r in reqs:
            self.assertEqual(r["method"], "HEAD")
            self.assertEqual(r["headers"]["user-agent"], [f"Mirrorbits/{VERSION} PING CHECK"])
            self.assertEqual(r["headers"]["connection"], ["close"])

    async def test_certificate_problems_mark_only_https_down(self) -> None:
        expired = WebServer(self.ca.leaf(["localhost", "127.0.0.1"], expired=True))
        wrong = WebServer(self.ca.leaf(["other.example"]))
        for srv in (expired, wrong):
            self.addCleanup(srv.stop)
            srv.answer(FILE, Answer(200, {"Content-Length": "1234"}))
        self.good.answer(FILE, Answer(200, {"Content-Length": "1234"}))
        # Scheme-less mirrors: both protocols checked on the same host:port.
        self.add_mirror(1, f"localhost:{expired.number}/", httpUp="0", httpsUp="0")
        self.add_mirror(2, f"localhost:{wrong.number}/", httpUp="0", httpsUp="0")
        self.add_mirror(3, f"localhost:{self.good.number}/", httpUp="0", httpsUp="0")
        seen = await self.run_checks([1, 2, 3])
        for i in (1, 2):
            h = self.state(i)
            self.assertEqual((h["httpUp"], h["httpsUp"], h["httpsDownReason"]), ("1", "0", "Unreachable"))
            self.assertFalse(Mirror.from_redis(h).is_up())
            self.assertEqual([o.proto for o in seen[i]], [PROTO_HTTP, PROTO_HTTPS])
        h = self.state(3)
        self.assertEqual((h["httpUp"], h["httpsUp"]), ("1", "1"))
        self.assertTrue(Mirror.from_redis(h).is_up())

    async def test_stopping_during_a_check_records_nothing(self) -> None:
        """A check cut short by the daemon's stop is not a mirror that failed to answer."""
        self.http.timeout = 30.0
        self.good.answer("/hang" + FILE, Answer(mode="slow"))
        self.add_mirror(1, f"{self.good.base('http')}/hang/", httpUp="1", httpDownReason="")
        mon = self.monitor()
        await mon.start()
        await eventually(lambda: any(r["path"] == "/hang" + FILE for r in self.good.recorder.requests),
                         timeout=10)
        await mon.stop()
        h = self.state(1)
        self.assertEqual((h["httpUp"], h["httpDownReason"]), ("1", ""))
        self.assertEqual(self.mirror_log(1), [])

    async def test_redirect_policies(self) -> None:
        s = self.good
        s.answer("/a" + FILE, Answer(302, {"Location": "/ok" + FILE}))
        s.answer("/ok" + FILE, Answer(200))
        base = s.base("http")
        self.add_mirror(1, f"{base}/a/")                            # global setting
        self.add_mirror(2, f"{base}/a/", allowredirects="1")        # allowed
        self.add_mirror(3, f"{base}/a/", allowredirects="2")        # forbidden
        self.config = self.config.replace(DisallowRedirects=True)
        await self.run_checks([1, 2, 3])
        self.assertEqual(self.state(1)["httpDownReason"], "Unauthorized redirect")
        self.assertEqual(self.state(2)["httpUp"], "1")
        self.assertEqual(self.state(3)["httpDownReason"], "Unauthorized redirect")

    async def test_endless_redirects_stop_at_the_hop_limit(self) -> None:
        self.good.answer("/loop" + FILE, Answer(302, {"Location": "/loop" + FILE}))
        self.add_mirror(1, f"{self.good.base('http')}/loop/")
        await self.run_checks([1])
        self.assertEqual(self.state(1)["httpDownReason"], "Unreachable")
        self.assertLessEqual(len(self.good.recorder.requests), 11)

    async def test_not_yet_scanned_is_retried(self) -> None:
        self.add_mirror(9, f"{self.good.base('http')}/")
        self.r.delete(schema.handled_files_key(9))
        self.config = self.config.replace(ConcurrentSync=0)
        mon = self.monitor()
        await mon.start()
        await eventually(lambda: 9 in mon.mirrors and mon.mirrors[9].last_check > 0)
        self.assertFalse(mon.mirrors[9].checking)  # Go leaves it set forever
        self.assertEqual(self.good.recorder.requests, [])
        self.assertNotIn("httpUp", self.state(9))

    async def test_bad_escape_marks_unreachable(self) -> None:
        self.r.sadd(schema.handled_files_key(1), "/bad%zz")
        self.r.hset(schema.file_key("/bad%zz"), "size", "1")
        self.add_mirror(1, f"{self.good.base('http')}/")
        self.r.srem(schema.handled_files_key(1), FILE)
        await self.run_checks([1])
        self.assertEqual(self.state(1)["httpDownReason"], "Unreachable")
        self.assertEqual(self.good.recorder.requests, [])

    async def test_case_41_42_state_recording(self) -> None:
        self.add_mirror(1, "http://m.example/", httpUp="0")
        await self.listen((schema.CHANNEL_MIRROR_UPDATE,))
        first = await set_mirror_state(self.client, 1, PROTO_HTTP, True, "")
        self.assertTrue(first.changed and first.published)
        since = self.state(1)["stateSince"]
        self.r.hset(schema.mirror_key(1), "stateSince", "5")
        second = await set_mirror_state(self.client, 1, PROTO_HTTP, True, "")
        self.assertFalse(second.changed or second.published)
        self.assertEqual(self.state(1)["stateSince"], "5")
        self.assertGreater(int(since), 0)
        self.assertEqual(len(self.mirror_log(1)), 1)
        down = await set_mirror_state(self.client, 1, PROTO_HTTP, False, "Got status code 500")
        reason = await set_mirror_state(self.client, 1, PROTO_HTTP, False, "Unreachable")
        self.assertTrue(down.changed and not reason.changed and reason.published)
        self.assertEqual(self.state(1)["httpDownReason"], "Unreachable")
        await eventually(lambda: len(self.messages) == 3)
        # A removed mirror is not recreated by a late result.
        self.r.delete(schema.mirror_key(1))
        gone = await set_mirror_state(self.client, 1, PROTO_HTTP, True, "")
        self.assertFalse(gone.exists)
        self.assertFalse(self.r.exists(schema.mirror_key(1)))
