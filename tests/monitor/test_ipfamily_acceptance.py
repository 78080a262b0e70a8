"""``SelectByIPFamily`` end to end: real HTTP servers on 127.0.0.1 and ::1, mirrors named through a
static resolver given to the hub, the monitor probing each family, and the redirector (real
listening server, GeoIP test data) choosing by the client's family.

Mirrors: ``v4only`` (``http://127.0.0.1:P/``), ``v6only`` (``http://[::1]:Q/``), ``deadaaaa`` (a name
with an A record that answers and an AAAA record where nothing listens), ``aonly`` (a name with only
an A record) and ``dual`` (a name answering over both, whose IPv6 server is stopped later on).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.web.http import HTTPChannel

from mirrorbits.admin import cli
from mirrorbits.admin.commands import admin_for_app
from mirrorbits.admin.interface import AdminAPI
from mirrorbits.httpclient import HttpClient
from mirrorbits.model import MIRROR_FIELD_BY_REDIS
from mirrorbits.monitor.cluster import Cluster
from mirrorbits.monitor.health import HealthChecker
from mirrorbits.monitor.resolve import StaticResolver
from mirrorbits.monitor.scheduler import Monitor
from mirrorbits.redis import schema
from mirrorbits.scan.mirror import MirrorScanner
from mirrorbits.web import leanhttp
from mirrorbits.web.site import LeanChannel
from tests.admin.cli_batch import CaptureIO
from tests.fixtures.trial import eventually
from tests.monitor.httpd import Answer, WebServer, dual_stack_servers, ipv4_only_server
from tests.web.test_http_cases import Harness, RedirectorTestCase, put_file, put_mirror

GEOIP = Path(__file__).resolve().parent.parent / "data" / "geoip"
#: Client addresses of the GeoIP test data.
IPV4_CLIENT = "89.160.20.115"  # SE
IPV6_CLIENT = "2001:218::5"  # JP
FILE = "/testy.tgz"
SIZE = 48


class _Direct(cli.Session):
    """A CLI session on an in-process AdminCommands."""

    def __init__(self, io: CaptureIO, admin: AdminAPI) -> None:
        super().__init__(io, "", 0, "", reactor)  # type: ignore[arg-type]
        self._direct = admin

    async def admin(self, command: str) -> AdminAPI:
        return self._direct

    async def close(self) -> None:
        pass


class IPFamilyAcceptance(RedirectorTestCase):
    timeout = 60

    def setUp(self) -> None:
        super().setUp()
        self.geodir = Path(tempfile.mkdtemp(prefix="mb-family-geo-"))
        self.addCleanup(shutil.rmtree, self.geodir, True)
        shutil.copyfile(GEOIP / "GeoLite2-City-Test.mmdb", self.geodir / "GeoLite2-City.mmdb")
        shutil.copyfile(GEOIP / "GeoLite2-ASN-Test.mmdb", self.geodir / "GeoLite2-ASN.mmdb")
        self.servers: dict[str, WebServer] = {}
        v6only = self._serve("v6only", WebServer(interface="::1"))
        dual4, dual6 = dual_stack_servers()
        self._serve("dual", dual4)
        self._serve("dual6", dual6)
        v4only = self._serve("v4only", ipv4_only_server())
        deadaaaa = self._serve("deadaaaa", ipv4_only_server())  # nothing listens on [::1] at its port
        aonly = self._serve("aonly", ipv4_only_server())
        self.urls = {
            "v4only": f"http://127.0.0.1:{v4only.number}/",
            "v6only": f"http://[::1]:{v6only.number}/",
            "deadaaaa": f"http://deadaaaa.test:{deadaaaa.number}/",
            "aonly": f"http://aonly.test:{aonly.number}/",
            "dual": f"http://dual.test:{dual4.number}/",
        }
        self.ids = {name: i for i, name in enumerate(self.urls, start=1)}
        self.resolver = StaticResolver({"deadaaaa.test": ["127.0.0.1", "::1"],
                                        "aonly.test": ["127.0.0.1"],
                                        "dual.test": ["127.0.0.1", "::1"]})
        put_file(self.r, FILE, size=SIZE)
        self.r.sadd(schema.FILES, FILE)
        for name, url in self.urls.items():
            mid = self.ids[name]
            put_mirror(self.r, mid, url, size=SIZE, name=name)
            self.r.sadd(schema.handled_files_key(mid), FILE)

    def _serve(self, name: str, web: WebServer) -> WebServer:
        web.answer(FILE, Answer(200, {"Content-Length": str(SIZE)}))
        self.servers[name] = web
        self.addCleanup(web.stop)
        return web

    async def _start(self, **config: Any) -> tuple[Harness, Monitor, list[int], list[float]]:
        h = await self.harness(OutputMode="auto", GeoipDatabasePath=str(self.geodir), ConcurrentSync=0,
                               SelectByIPFamily=True, **config)
        now = [1_000_000.0]
        mon, checked = await self._monitor(h, lambda: now[0])
        await eventually(lambda: set(checked) >= set(self.ids.values()), timeout=20)
        return h, mon, checked, now

    async def _monitor(self, h: Harness, clock: Callable[[], float]) -> tuple[Monitor, list[int]]:
        """The monitor of the harness's Redis with the static resolver; the ids it checked."""
        checked: list[int] = []
        http = HttpClient(reactor, connect_timeout=3, timeout=5)
        redis = h.app.get_redis()
        mon = Monitor(redis, lambda: h.holder.current, Cluster(redis, 0, node_id="solo-00001"),
                      HealthChecker(http, self.resolver), MirrorScanner(redis, lambda: h.holder.current, http),
                      tick=0.05, cluster_settle=0, clock=clock)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(mon.stop()))
        mon.check_listeners.append(lambda mid, outcomes: checked.append(mid))
        await mon.start()
        return mon, checked

    def state(self, name: str, proto: str = "http") -> tuple[str | None, str | None]:
        h = self.r.hgetall(schema.mirror_key(self.ids[name]))
        return (h.get(f"{proto}UpIPv4"), h.get(f"{proto}UpIPv6"))

    async def json_answer(self, h: Harness, ip: str, query: str = "") -> dict[str, Any]:
        resp = await h.request(FILE + query, headers={"X-Forwarded-For": ip, "Accept": "application/json"})
        self.assertEqual(resp.status, 200)
        doc: dict[str, Any] = json.loads(resp.body)
        return doc

    async def chosen(self, h: Harness, ip: str, query: str = "") -> tuple[set[str], dict[str, str]]:
        doc = await self.json_answer(h, ip, query)
        return ({m["Name"] for m in doc["MirrorList"]},
                {m["Name"]: m.get("ExcludeReason", "") for m in doc.get("ExcludedList", [])})

    async def redirects(self, h: Harness, ip: str, query: str = "", n: int = 20) -> set[str]:
        """Every mirror named by ``n`` redirects (Location and Link alternatives)."""
        seen: set[str] = set()
        by_base = {url: name for name, url in self.urls.items()}
        for _ in range(n):
            resp = await h.request(FILE + query, headers={"X-Forwarded-For": ip})
            self.assertEqual(resp.status, 302)
            targets = [resp.header("Location") or ""] + [
                link.split(">")[0].lstrip("<") for link in resp.all("Link") if 'rel=duplicate' in link]
            for target in targets:
                seen.add(next(name for base, name in by_base.items() if target.startswith(base)))
        return seen

    async def cli(self, h: Harness, *argv: str) -> tuple[int, str]:
        """A ``mirrorbits`` command line run on the harness's own admin commands."""
        io = CaptureIO("", {})
        code = await cli.run(list(argv), io, reactor, session=_Direct(io, admin_for_app(h.app)))
        return code, "".join(io.stdout)

    async def test_clients_get_mirrors_of_their_family(self) -> None:
        h, mon, checked, now = await self._start()
        self.assertEqual(self.state("v4only"), ("1", "none"))
        self.assertEqual(self.state("v6only"), ("none", "1"))
        self.assertEqual(self.state("deadaaaa"), ("1", "0"))
        self.assertEqual(self.state("aonly"), ("1", "none"))
        self.assertEqual(self.state("dual"), ("1", "1"))
        dead = self.r.hgetall(schema.mirror_key(self.ids["deadaaaa"]))
        self.assertEqual((dead["httpUp"], dead["httpDownReasonIPv6"]), ("1", "Unreachable"))
        self.assertEqual(self.r.hget(schema.mirror_key(self.ids["v6only"]), "httpUp"), "1")
        # The IPv6-only server saw a request, over IPv6.
        self.assertTrue(self.servers["v6only"].recorder.requests)
        # The view reloads the states with the MIRROR_UPDATE of the check.
        await eventually(lambda: all(c.families for c in h.view.mirrors().values()), timeout=5)

        six, six_excluded = await self.chosen(h, IPV6_CLIENT)
        self.assertEqual(six, {"v6only", "dual"})
        self.assertEqual(six_excluded, {"v4only": "Not reachable over IPv6",
                                        "deadaaaa": "Not reachable over IPv6",
                                        "aonly": "Not reachable over IPv6"})
        four, four_excluded = await self.chosen(h, IPV4_CLIENT)
        self.assertEqual(four, {"v4only", "deadaaaa", "aonly", "dual"})
        self.assertEqual(four_excluded, {"v6only": "Not reachable over IPv4"})
        # ?ipv6 (any case) on an IPv4 client, ?IPv4 on an IPv6 client; an IPv4-mapped address is IPv4.
        self.assertEqual((await self.chosen(h, IPV4_CLIENT, "?IPV6"))[0], {"v6only", "dual"})
        self.assertEqual((await self.chosen(h, IPV6_CLIENT, "?ipv4"))[0], four)
        self.assertEqual((await self.chosen(h, "::ffff:" + IPV4_CLIENT))[0], four)

        # Redirects (the fast path) never leave the client's family either.
        self.assertLessEqual(await self.redirects(h, IPV6_CLIENT), {"v6only", "dual"})
        self.assertLessEqual(await self.redirects(h, IPV4_CLIENT), four)
        self.assertLessEqual(await self.redirects(h, IPV4_CLIENT, "?ipv6"), {"v6only", "dual"})

        # So does the Metalink document.
        resp = await h.request(FILE + "?meta4", headers={"X-Forwarded-For": IPV6_CLIENT})
        self.assertEqual(resp.status, 200)
        listed = {name for name, url in self.urls.items() if url.encode() in resp.body}
        self.assertEqual(listed, {"v6only", "dual"})

        # The mirror list shows the reasons.
        resp = await h.request(FILE + "?mirrorlist", headers={"X-Forwarded-For": IPV6_CLIENT})
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body.count(b"Not reachable over IPv6"), 3)
        self.assertEqual(resp.body.count(b"<th>IPv4</th><th>IPv6</th>"), 2)  # mirrors and excluded
        self.assertIn(b'<span class="state-none">none</span></td><td><span class="state-up">up</span>',
                      resp.body)

        # The admin surface: list -families, show, logs, and the JSON list of mirrors.
        code, out = await self.cli(h, "list", "-families")
        self.assertEqual(code, 0)
        rows = {line.split()[0]: line.split()[-2:] for line in out.splitlines()[1:]}
        self.assertEqual(out.splitlines()[0].split()[-2:], ["IPV4", "IPV6"])
        self.assertEqual(rows, {"v4only": ["up", "none"], "v6only": ["none", "up"],
                                "deadaaaa": ["up", "down"], "aonly": ["up", "none"],
                                "dual": ["up", "up"]})
        code, plain = await self.cli(h, "list")
        self.assertNotIn("IPV4", plain)
        code, out = await self.cli(h, "show", "deadaaaa")
        self.assertIn("\nIP families:\n  HTTP over IPv4: up (checked ", out)
        self.assertIn("  HTTP over IPv6: down: Unreachable (checked ", out)
        code, out = await self.cli(h, "logs", "deadaaaa")
        self.assertIn("HTTP mirror over IPv6 is down: Unreachable", out)
        code, out = await self.cli(h, "logs", "aonly")
        self.assertIn("HTTP mirror has no IPv6 address", out)
        resp = await h.request("/?mirrors")
        entries = {e["Name"]: e for e in json.loads(resp.body)}
        self.assertEqual([(f["Protocol"], f["Family"], f["State"], f["Reason"])
                          for f in entries["deadaaaa"]["IPFamilies"]],
                         [("HTTP", "IPv4", "up", ""), ("HTTP", "IPv6", "down", "Unreachable")])

        resp = await h.request("/?mirrorstats")
        self.assertEqual(resp.status, 200)
        self.assertIn(b"<th>IPv4</th><th>IPv6</th>", resp.body)
        self.assertIn(b'<td><span class="state-up">up</span></td><td><span class="state-down">down</span></td>',
                      resp.body)

        # The mirror log says what changed per family (first states that are not "up").
        logs = [json.loads(x) for x in self.r.lrange(schema.mirror_logs_key(self.ids["deadaaaa"]), 0, -1)]
        self.assertIn({"Proto": 1, "Up": False, "Reason": "Unreachable", "Family": "IPv6"},
                      [{k: e[k] for k in ("Proto", "Up", "Reason", "Family") if k in e} for e in logs])

    async def test_the_whole_head_parser_gives_the_same_family_aware_answers(self) -> None:
        """Requests parsed at once (web/leanhttp) go through the same selection as those twisted's
        line parser reads: an IPv6 client gets the same family-aware choice either way."""
        h, mon, checked, now = await self._start()
        await eventually(lambda: all(c.families for c in h.view.mirrors().values()), timeout=5)
        parsed: list[bytes] = []
        parse_head = leanhttp.parse_head

        def counting(head: bytes) -> leanhttp.ParsedHead | None:
            parsed.append(head)
            return parse_head(head)

        leanhttp.parse_head = counting  # type: ignore[assignment]
        try:
            lean = (await self.chosen(h, IPV6_CLIENT), await self.chosen(h, IPV4_CLIENT, "?ipv6"),
                    await self.redirects(h, IPV6_CLIENT))
        finally:
            leanhttp.parse_head = parse_head
        self.assertTrue(parsed)  # the fast path did parse them
        self.assertEqual(lean[0], ({"v6only", "dual"}, {"v4only": "Not reachable over IPv6",
                                                        "deadaaaa": "Not reachable over IPv6",
                                                        "aonly": "Not reachable over IPv6"}))
        self.assertEqual(lean[1][0], {"v6only", "dual"})
        self.assertLessEqual(lean[2], {"v6only", "dual"})
        LeanChannel.dataReceived = HTTPChannel.dataReceived  # type: ignore[method-assign]
        try:
            lines = (await self.chosen(h, IPV6_CLIENT), await self.chosen(h, IPV4_CLIENT, "?ipv6"),
                     await self.redirects(h, IPV6_CLIENT))
        finally:
            del LeanChannel.dataReceived
        self.assertEqual(lines[:2], lean[:2])
        self.assertLessEqual(lines[2], {"v6only", "dual"})

    async def test_aaaa_host_stops_answering_within_one_check_interval(self) -> None:
        h, mon, checked, now = await self._start(CheckInterval=1)
        self.assertEqual(self.state("dual"), ("1", "1"))
        await eventually(lambda: all(c.families for c in h.view.mirrors().values()), timeout=5)
        self.assertIn("dual", (await self.chosen(h, IPV6_CLIENT))[0])

        await self.servers["dual6"].stop()
        before = len(checked)
        now[0] += 61  # one CheckInterval (1 minute) later
        await eventually(lambda: checked[before:].count(self.ids["dual"]) >= 1, timeout=20)
        self.assertEqual(self.state("dual"), ("1", "0"))
        mirror = self.r.hgetall(schema.mirror_key(self.ids["dual"]))
        self.assertEqual((mirror["httpUp"], mirror["httpDownReasonIPv6"]), ("1", "Unreachable"))
        await eventually(lambda: self.ids["dual"] not in
                         {c.id for c in h.view.mirrors().values()
                          if c.verdicts[2 * 3][1] is None}, timeout=5)
        six, excluded = await self.chosen(h, IPV6_CLIENT)
        self.assertEqual(six, {"v6only"})
        self.assertEqual(excluded["dual"], "Not reachable over IPv6")
        self.assertIn("dual", (await self.chosen(h, IPV4_CLIENT))[0])
        logs = [json.loads(x) for x in self.r.lrange(schema.mirror_logs_key(self.ids["dual"]), 0, -1)]
        self.assertEqual([(e["Up"], e.get("Family")) for e in logs if e["Type"] == 6], [(False, "IPv6")])

    def snapshot(self) -> dict[str, object]:
        """Every key with its type and, for hashes and lists, its field names / length."""
        out: dict[str, object] = {}
        for key in self.r.scan_iter():
            kind = self.r.type(key)
            if kind == "hash":
                out[key] = sorted(self.r.hkeys(key))
            elif kind == "list":
                out[key] = self.r.llen(key)
            else:
                out[key] = kind
        return out

    async def test_off_by_default_writes_nothing_new(self) -> None:
        asked: list[str] = []
        resolve = self.resolver.resolve
        self.resolver.resolve = lambda host: (asked.append(host), resolve(host))[1]  # type: ignore[method-assign]
        for name in ("deadaaaa", "aonly", "dual"):  # not checked: no DNS query leaves the host
            self.r.hset(schema.mirror_key(self.ids[name]), "enabled", "0")
        before = self.snapshot()
        h = await self.harness(OutputMode="auto", GeoipDatabasePath=str(self.geodir), ConcurrentSync=0)
        self.assertFalse(h.holder.current.SelectByIPFamily)
        mon, checked = await self._monitor(h, time.time)
        await eventually(lambda: set(checked) >= {self.ids["v4only"], self.ids["v6only"]}, timeout=20)
        await mon.stop()
        after = self.snapshot()
        # What changed is what the Go check writes: the state fields of the mirrors' hashes.
        changed = {k for k, v in after.items() if before.get(k) != v}
        self.assertEqual({k.rsplit("_", 1)[0] for k in changed}, {"MIRROR"})
        for mid in self.ids.values():
            fields = set(self.r.hkeys(schema.mirror_key(mid)))
            self.assertLessEqual(fields, set(MIRROR_FIELD_BY_REDIS), mid)
            for entry in self.r.lrange(schema.mirror_logs_key(mid), 0, -1):
                self.assertEqual(set(json.loads(entry)),
                                 {"Type", "MirrorID", "Timestamp", "Proto", "Up", "Reason"})
        self.assertEqual(asked, [])
        # The Go choice, whatever the client's family.
        go_choice = {"v4only", "v6only"}
        self.assertEqual((await self.chosen(h, IPV6_CLIENT))[0], go_choice)
        self.assertEqual((await self.chosen(h, IPV4_CLIENT))[0], go_choice)
        self.assertEqual((await self.chosen(h, IPV4_CLIENT, "?ipv6"))[0], go_choice)
        resp = await h.request("/?mirrorstats")
        self.assertEqual(resp.status, 200)
        self.assertNotIn(b"IPv4", resp.body)
        resp = await h.request(FILE + "?mirrorlist", headers={"X-Forwarded-For": IPV6_CLIENT})
        self.assertEqual(resp.status, 200)
        self.assertNotIn(b"IPv4", resp.body)
