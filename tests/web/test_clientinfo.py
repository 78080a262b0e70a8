"""Client IP, secure option and ``fromip``: pure cases, then the client IP of real requests to a
twisted.web server on IPv4, IPv6 and Unix-socket loopback."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from mirrorbits.selection import Secure
from mirrorbits.web.clientinfo import (
    client_ip,
    fromip_override,
    ip_from_forwarded_for,
    ip_from_peer,
    is_ip,
    request_client_ip,
    secure_option,
)


class PureTests(unittest.SynchronousTestCase):
    def test_forwarded_for(self) -> None:
        self.assertEqual(ip_from_forwarded_for("192.168.0.1, 192.168.0.2, 192.168.0.3"), "192.168.0.1")
        self.assertEqual(ip_from_forwarded_for("192.168.0.1,192.168.0.2,192.168.0.3"), "192.168.0.1")
        self.assertEqual(ip_from_forwarded_for(b"  2001:db8::1 ,10.0.0.1"), "2001:db8::1")
        self.assertEqual(ip_from_forwarded_for("unknown, 1.2.3.4"), "unknown")  # not validated, as Go
        self.assertEqual(ip_from_forwarded_for(" , 1.2.3.4"), "")
        self.assertEqual(ip_from_forwarded_for(None), "")
        self.assertEqual(ip_from_forwarded_for(b""), "")
        self.assertEqual(ip_from_forwarded_for(b"\xff1.2.3.4"), "\ufffd1.2.3.4")

    def test_client_ip_falls_back_to_peer(self) -> None:
        self.assertEqual(client_ip("203.0.113.9, 10.0.0.1", "127.0.0.1"), "203.0.113.9")
        self.assertEqual(client_ip(None, "127.0.0.1"), "127.0.0.1")
        self.assertEqual(client_ip(", 203.0.113.9", "127.0.0.1"), "127.0.0.1")
        self.assertEqual(client_ip(None, "2001:db8::1"), "2001:db8::1")  # no brackets: geolocatable
        self.assertEqual(client_ip(None, None), "")

    def test_peer_normalisation(self) -> None:
        self.assertEqual(ip_from_peer("::1"), "::1")
        self.assertEqual(ip_from_peer("[::1]"), "::1")
        self.assertEqual(ip_from_peer("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(ip_from_peer("fe80::1%eth0"), "fe80::1")
        self.assertEqual(ip_from_peer("192.0.2.7"), "192.0.2.7")
        self.assertEqual(ip_from_peer(""), "")
        self.assertEqual(ip_from_peer(None), "")

    def test_is_ip_like_go_parseip(self) -> None:
        for good in ("1.2.3.4", "::1", "2001:db8::1", "::ffff:1.2.3.4", "0.0.0.0"):
            self.assertTrue(is_ip(good), good)
        for bad in ("", "[::1]", "1.2.3.4:80", "unknown", "01.2.3.4", "1.2.3", "fe80::1%eth0", " 1.2.3.4"):
            self.assertFalse(is_ip(bad), bad)

    def test_fromip_override(self) -> None:
        self.assertEqual(fromip_override("127.0.0.1", "89.160.20.112"), "89.160.20.112")
        self.assertEqual(fromip_override("127.0.0.1", "2001:DB8::1"), "2001:DB8::1")  # verbatim
        for bad in ("[2001:db8::1]", "1.2.3.4:80", "garbage", "", None):
            self.assertEqual(fromip_override("127.0.0.1", bad), "127.0.0.1")

    def test_secure_option_matrix(self) -> None:
        u, w, wo = Secure.UNDEFINED, Secure.WITH_TLS, Secure.WITHOUT_TLS
        cases = [
            # (X-Forwarded-Proto, https values, AllowHTTPToHTTPSRedirects, expected)
            (None, None, True, u),
            ("https", None, True, w),
            ("HTTPS", None, True, w),
            (b"HtTpS", None, False, w),
            ("http", None, True, u),  # default: a plain-HTTP client may still go to HTTPS
            ("http", None, False, wo),
            ("HTTP", None, False, wo),
            ("ftp", None, False, u),
            ("https", ["0"], True, wo),  # the query overrides the header
            ("http", ["1"], False, w),
            (None, ["1"], True, w),
            (None, ["0"], True, wo),
            (None, ["2"], True, u),
            (None, [""], True, u),
            ("https", ["", "0"], True, w),  # only the first value counts
            (None, [b"1", b"0"], True, w),
        ]
        for proto, https, allow, expected in cases:
            self.assertEqual(secure_option(proto, https, allow), expected, (proto, https, allow))


class _Echo(resource.Resource):
    """Answers with the client IP it was given."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        return request_client_ip(request).encode()


class _Collect(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(self.data)


class RequestWrapperTests(unittest.TestCase):
    """Real listening sockets on loopback; raw HTTP so header lines are exactly as written."""

    def setUp(self) -> None:
        self.site = server.Site(_Echo())

    async def _listen(self, description: str) -> Any:
        port = await endpoints.serverFromString(reactor, description).listen(self.site)
        self.addCleanup(port.stopListening)
        return port

    async def _get(self, endpoint: Any, target: str, headers: Sequence[tuple[str, str]] = ()) -> list[str]:
        proto = _Collect()
        factory = protocol.Factory.forProtocol(lambda: proto)
        await endpoint.connect(factory)
        head = f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        transport: Any = proto.transport
        transport.write((head + "\r\n").encode())
        raw = await proto.done
        status, _, body = raw.partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", status.split(b"\r\n")[0])
        return body.decode().split("\n")

    async def test_ipv4_peer_and_headers(self) -> None:
        port = await self._listen("tcp:0:interface=127.0.0.1")
        where = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        lines = await self._get(where, "/f")
        self.assertEqual(lines, ["127.0.0.1"])
        # Two X-Forwarded-For lines: the FIRST one counts (Twisted's getHeader gives the last).
        lines = await self._get(
            where, "/f", [("X-Forwarded-For", "203.0.113.5, 10.0.0.1"), ("X-Forwarded-For", "198.51.100.1")]
        )
        self.assertEqual(lines, ["203.0.113.5"])

    async def test_ipv6_peer_has_no_brackets(self) -> None:
        if not socket.has_ipv6:
            raise unittest.SkipTest("no IPv6 support in this Python build")
        try:
            port = await self._listen("tcp6:0:interface=\\:\\:1")
        except Exception as exc:  # noqa: BLE001
            print(f"skipping IPv6 peer test: cannot listen on ::1 ({exc})")
            raise unittest.SkipTest(f"cannot listen on ::1: {exc}") from None
        where = endpoints.TCP6ClientEndpoint(reactor, "::1", port.getHost().port)
        lines = await self._get(where, "/f")
        self.assertEqual(lines, ["::1"])

    async def test_unix_socket_peer(self) -> None:
        tmpdir = tempfile.mkdtemp(prefix="mb-ci-")
        self.addCleanup(shutil.rmtree, tmpdir, True)
        path = os.path.join(tmpdir, "http.sock")
        await self._listen(f"unix:{path}")
        lines = await self._get(endpoints.UNIXClientEndpoint(reactor, path), "/f")
        self.assertEqual(lines[0], "")  # Go would panic here; we give "no location"
        lines = await self._get(
            endpoints.UNIXClientEndpoint(reactor, path), "/f", [("X-Forwarded-For", "2001:db8::7")]
        )
        self.assertEqual(lines[0], "2001:db8::7")
