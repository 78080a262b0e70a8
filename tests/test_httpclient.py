"""The HTTP client of the health checks and trace fetches, against a real HTTP server on loopback:
Go's URL escaping, redirects under the caller's policy, and cancelling what is in flight."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.client import readBody

from mirrorbits.httpclient import (
    BadURL,
    HttpClient,
    RedirectRefused,
    TooManyRedirects,
    discard_body,
    escape_url,
)
from tests.monitor.httpd import Answer, WebServer


def test_escape_url_like_go() -> None:
    assert escape_url("http://h:1/a b/é?#%41") == "http://h:1/a%20b/%C3%A9%3F%23%41"
    assert escape_url("https://h/~x_(1)+[2]!$&',;=:@*") == "https://h/~x_(1)+[2]!$&',;=:@*"
    for bad in ("http://h/%zz", "http://h/50%", "http://h/a\nb", "http://h/\x7f"):
        try:
            escape_url(bad)
        except BadURL:
            continue
        raise AssertionError(f"{bad!r} accepted")


class HttpClientTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.web = WebServer()
        self.addCleanup(self.web.stop)
        self.client = HttpClient(reactor)  # type: ignore[arg-type]

    async def test_follows_allowed_redirects_and_reads_the_final_body(self) -> None:
        self.web.answer("/a", Answer(302, {"Location": "/b"}))
        self.web.answer("/b", Answer(200, body=b"final"))
        seen: list[tuple[str, str]] = []

        def allow(origin: str, target: str) -> bool:
            seen.append((origin, target))
            return True

        response, body = await self.client.request("GET", self.web.base() + "/a", "ua",
                                                   allow_redirect=allow, read_body=readBody)
        self.assertEqual((response.code, body), (200, b"final"))
        self.assertEqual(seen, [(self.web.base() + "/a", self.web.base() + "/b")])
        self.assertEqual([r["headers"]["user-agent"] for r in self.web.recorder.requests], [["ua"], ["ua"]])

    async def test_refused_redirect_and_hop_limit(self) -> None:
        self.web.answer("/loop", Answer(302, {"Location": "/loop"}))
        with self.assertRaises(RedirectRefused):
            await self.client.request("HEAD", self.web.base() + "/loop", "ua",
                                      allow_redirect=lambda a, b: False, read_body=discard_body)
        with self.assertRaises(TooManyRedirects):
            await self.client.request("HEAD", self.web.base() + "/loop", "ua",
                                      allow_redirect=lambda a, b: True, read_body=discard_body,
                                      max_redirects=2)
        self.assertEqual(len(self.web.recorder.requests), 1 + 3)

    async def test_cancel_all_cancels_what_is_in_flight_only(self) -> None:
        self.web.answer("/slow", Answer(mode="slow"))
        self.web.answer("/ok", Answer(200))
        hung = defer.ensureDeferred(self.client.request(
            "GET", self.web.base() + "/slow", "ua", allow_redirect=lambda a, b: True,
            read_body=discard_body))
        done, _ = await self.client.request("GET", self.web.base() + "/ok", "ua",
                                            allow_redirect=lambda a, b: True, read_body=discard_body)
        self.assertEqual(done.code, 200)
        self.assertNoResult(hung)
        self.client.cancel_all()
        with self.assertRaises(defer.CancelledError):
            await hung
        # Nothing is left to cancel: a later request is not touched by an earlier cancel_all.
        later = defer.ensureDeferred(self.client.request(
            "GET", self.web.base() + "/ok", "ua", allow_redirect=lambda a, b: True,
            read_body=discard_body))
        response, _ = await later
        self.assertEqual(response.code, 200)
