"""Per-family health checks (``SelectByIPFamily``) against real HTTP/HTTPS servers on 127.0.0.1 and
::1, names given by a static resolver: TLS still checks the certificate against the name while the
connection goes to one address, a scheme-less URL resolves its host once, and a redirect stays on
the family of the check."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial import unittest

from mirrorbits.httpclient import HttpClient
from mirrorbits.ipfamily import Family
from mirrorbits.model import PROTO_HTTP, PROTO_HTTPS, Mirror
from mirrorbits.monitor.health import CheckOutcome, FamilyOutcome, HealthChecker
from mirrorbits.monitor.resolve import HostAddresses, StaticResolver
from tests.monitor.httpd import Answer, CertAuthority, WebServer, ipv4_only_server

FILE = "/pub/x.iso"
SIZE = 1234


class CountingResolver(StaticResolver):
    def __init__(self, hosts: dict[str, list[str]]) -> None:
        super().__init__(hosts)
        self.asked: list[str] = []

    def resolve(self, host: str) -> defer.Deferred[HostAddresses]:
        self.asked.append(host)
        return super().resolve(host)


class FamilyChecks(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mb-health-families-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ca = CertAuthority(self.tmp)
        self.http = HttpClient(reactor, ca_file=str(self.ca.ca_file), connect_timeout=2, timeout=3)
        self.resolver = CountingResolver({"tls.test": ["127.0.0.1", "::1"], "wrong.test": ["127.0.0.1"]})
        self.checker = HealthChecker(self.http, self.resolver)

    def serve(self, web: WebServer) -> WebServer:
        web.answer(FILE, Answer(200, {"Content-Length": str(SIZE)}))
        self.addCleanup(web.stop)
        return web

    async def check(self, url: str, **mirror: object) -> list[CheckOutcome]:
        return await self.checker.check(Mirror(id=1, name="m1", http_url=url, enabled=True, **mirror),
                                        FILE, SIZE, by_family=True)

    async def test_tls_by_name_to_one_address(self) -> None:
        web = self.serve(ipv4_only_server(self.ca.leaf(["tls.test"])))
        [out] = await self.check(f"https://tls.test:{web.number}/")
        self.assertEqual((out.proto, out.up, out.reason), (PROTO_HTTPS, True, ""))
        self.assertEqual(out.families, (FamilyOutcome(Family.IPV4, "1", ""),
                                        FamilyOutcome(Family.IPV6, "0", "Unreachable")))
        # A certificate for another name fails over the family that answers.
        [out] = await self.check(f"https://wrong.test:{web.number}/")
        self.assertEqual((out.up, out.reason), (False, "Unreachable"))
        self.assertEqual(out.families, (FamilyOutcome(Family.IPV4, "0", "Unreachable"),
                                        FamilyOutcome(Family.IPV6, "none", "No IPv6 address")))

    async def test_scheme_less_url_resolves_once(self) -> None:
        web = self.serve(ipv4_only_server(self.ca.leaf(["tls.test"])))
        outs = await self.check(f"tls.test:{web.number}/")
        self.assertEqual([(o.proto, o.up) for o in outs], [(PROTO_HTTP, True), (PROTO_HTTPS, True)])
        self.assertEqual(self.resolver.asked, ["tls.test"])

    async def test_redirects_stay_on_the_family(self) -> None:
        target = self.serve(ipv4_only_server())
        six = self.serve(WebServer(interface="::1"))
        web = self.serve(ipv4_only_server())
        web.answer("/to4" + FILE, Answer(302, {"Location": f"http://127.0.0.1:{target.number}{FILE}"}))
        web.answer("/to6" + FILE, Answer(302, {"Location": f"http://[::1]:{six.number}{FILE}"}))
        [out] = await self.check(f"http://127.0.0.1:{web.number}/to4", allow_redirects=1)
        self.assertTrue(out.up)
        [out] = await self.check(f"http://127.0.0.1:{web.number}/to6", allow_redirects=1)
        self.assertEqual((out.up, out.families[0]), (False, FamilyOutcome(Family.IPV4, "0", "Unreachable")))
        self.assertEqual(six.recorder.requests, [])
