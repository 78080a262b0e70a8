"""Canary: what the daemon relies on in Twisted, checked against the installed release.

If one of these fails after a Twisted upgrade, serving would break (or answer different bytes):
fix :mod:`mirrorbits.twistedcompat` or the lean request first, then widen the Twisted bound in
setup.cfg.  The first tests cover the internals (``Headers._rawHeaders``, the ``ListenFDs`` that
``twisted.internet.endpoints`` keeps for ``systemd:`` descriptions, the channel's refusal method and
header byte count); the others cover the public behaviours the lean request, the channel and the
listener build on.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from twisted.internet import protocol, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols import policies
from twisted.web import http, resource, server
from twisted.web.http_headers import Headers

from mirrorbits.lifecycle.listener import ConnectionTracker, adopt_listening_socket
from mirrorbits.twistedcompat import (
    RefusalHookChannel,
    begin_request,
    between_requests,
    canonical_header_name,
    header_table,
    suspend_idle_timeout,
    write_through,
)
from mirrorbits.web.site import (
    BAD_REQUEST,
    HEADERS_TOO_LARGE,
    REFUSED_DRAIN_SECONDS,
    URI_TOO_LONG,
    LeanChannel,
    LeanSite,
    wind_down,
)
from tests.fixtures.processes import spawn, stop


def test_header_table_is_the_live_canonical_table() -> None:
    headers = Headers()
    headers.setRawHeaders(b"content-type", [b"text/plain"])
    table = header_table(headers)
    assert table == {b"Content-Type": [b"text/plain"]}  # keys are the canonical names
    table[b"Location"] = [b"http://example.org/"]
    table[b"Link"] = [b"<a>; pri=1", b"<b>; pri=2"]
    assert headers.getRawHeaders(b"location") == [b"http://example.org/"]
    assert headers.hasHeader(b"Link")
    assert list(headers.getAllRawHeaders()) == [
        (b"Content-Type", [b"text/plain"]), (b"Location", [b"http://example.org/"]),
        (b"Link", [b"<a>; pri=1", b"<b>; pri=2"])]
    headers.removeHeader(b"LOCATION")
    assert b"Location" not in table



_SYSTEMD_CHILD = """
import os
from twisted.internet import endpoints  # consumes LISTEN_* as a daemon's imports would
from mirrorbits.twistedcompat import systemd_inherited_fds
print(systemd_inherited_fds(), "LISTEN_FDS" in os.environ)
"""


def test_systemd_fds_are_read_back_from_twisted_after_it_consumed_the_environment() -> None:
    # LISTEN_PID must be the child's own pid, hence the shell that execs Python.  The fds need not
    # be open: Twisted only computes their numbers (mirrorbits.lifecycle.systemd checks them).
    proc = spawn(["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=http:admin exec "$0" -c "$1"',
                  sys.executable, _SYSTEMD_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert out.strip() == "[(3, 'http'), (4, 'admin')] False"


class RecordingChannel(RefusalHookChannel):
    refusals: list[bool]

    def refuse_malformed(self, headers_too_large: bool) -> None:
        self.refusals.append(headers_too_large)
        super().refuse_malformed(headers_too_large)


@pytest.mark.parametrize("raw,too_large", [
    (b"GET /f HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(17)), True),
    (b"GET /f\r\n\r\n", False),  # not "method target version"
    (b"GET /f HTTP/1.1\r\nno colon\r\n\r\n", False),
])
def test_refusals_go_through_the_hook_with_the_header_byte_count(raw: bytes, too_large: bool) -> None:
    """Twisted refuses a malformed request through ``_respondToBadRequestAndDisconnect``, and an
    oversize header block is told apart by ``_receivedHeaderSize``; its default answer is the
    400 the lean channel keeps byte for byte."""
    channel = RecordingChannel()
    channel.refusals = []
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    assert channel.refusals == [too_large]
    assert transport.value() == BAD_REQUEST and transport.disconnecting


class HalfClosingTransport(StringTransport):
    write_closed = False

    def loseWriteConnection(self) -> None:  # noqa: N802 - twisted's name
        self.write_closed = True


@pytest.mark.parametrize("raw,answer", [
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", URI_TOO_LONG),
    (b"GET /f HTTP/1.1\r\nCookie: " + b"c" * 17_000 + b"\r\n\r\n", HEADERS_TOO_LARGE),
    (b"GET /f HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(17))
     + b"\r\nGET /f HTTP/1.1\r\n\r\n", HEADERS_TOO_LARGE),
    (b"GET /f\r\n\r\nGET /f HTTP/1.1\r\n\r\n", BAD_REQUEST),
])
def test_lean_channel_answers_a_refusal_then_drains_for_a_bounded_time(raw: bytes,
                                                                        answer: bytes) -> None:
    """One answer (nothing of what follows in the same read is parsed), our side closed at once,
    the connection closed after the drain."""
    clock = Clock()
    site = LeanSite(Leaf(302, {b"Location": b"http://m.example/f"}, b"", False), reactor=clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert isinstance(channel, LeanChannel)
    transport = HalfClosingTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    channel.dataReceived(b"more bytes the client was still sending\r\n\r\n")
    assert transport.value() == answer
    assert transport.write_closed and not transport.disconnecting
    clock.advance(REFUSED_DRAIN_SECONDS)
    assert transport.disconnecting


def test_plain_twisted_channel_still_answers_400_this_way() -> None:
    """What the lean channel keeps for other refusals is twisted's own answer, byte for byte."""
    channel = http.HTTPChannel()
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /f\r\n\r\n")
    assert transport.value() == BAD_REQUEST


class Leaf(resource.Resource):
    """Answers as ``spec`` says: (code, headers, body, cookie)."""

    isLeaf = True

    def __init__(self, code: int, headers: dict[bytes, bytes], body: bytes, cookie: bool) -> None:
        super().__init__()
        self.spec = (code, headers, body, cookie)

    def render(self, request: server.Request) -> bytes:
        code, headers, body, cookie = self.spec
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        if cookie:
            request.addCookie(b"k", b"v")
        return body


def answer(site: server.Site, raw: bytes) -> tuple[bytes, bool]:
    """The bytes a site writes for ``raw`` minus ``Date``/``Server``, and whether it closed."""
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert channel is not None
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    lines = transport.value().split(b"\r\n")
    kept = [line for line in lines if not line.startswith((b"Date: ", b"Server: "))]
    return b"\r\n".join(kept), transport.disconnecting


@pytest.mark.parametrize("method,version", [(b"GET", b"HTTP/1.1"), (b"HEAD", b"HTTP/1.1"),
                                            (b"GET", b"HTTP/1.0")])
@pytest.mark.parametrize("code,headers,body,cookie", [
    (302, {b"Location": b"http://m.example/f", b"Cache-Control": b"private, no-cache"}, b"", False),
    (200, {b"Content-Type": b"application/json"}, b'{"a": 1}\n', False),
    (200, {}, b"<p>default content type</p>", False),
    (404, {b"Content-Type": b"text/plain; charset=utf-8"}, b"Not Found\n", False),
    (204, {}, b"", False),
    (304, {}, b"", False),
    (200, {}, b"with a cookie: twisted's own path", True),
])
def test_lean_answer_is_twisteds_answer(method: bytes, version: bytes, code: int,
                                        headers: dict[bytes, bytes], body: bytes,
                                        cookie: bool) -> None:
    """The one-write answer of the lean request (status line and headers built by us, then
    ``Request.finish``) is byte for byte what twisted.web's own render/write/finish writes."""
    raw = method + b" /some/file.iso HTTP/1.1\r\nHost: x\r\n\r\n".replace(b"HTTP/1.1", version, 1)
    root = Leaf(code, headers, body, cookie)
    twisted_site = server.Site(root, reactor=Clock())
    twisted_site.log = lambda request: None  # type: ignore[method-assign]
    assert answer(LeanSite(root, reactor=Clock()), raw) == answer(twisted_site, raw)


def test_a_body_that_is_not_bytes_is_a_500_page() -> None:
    """``twisted.web.pages.errorPage`` writes and finishes the request itself."""
    root = Leaf(200, {}, b"", False)
    root.render = lambda request: "text, not bytes"  # type: ignore[method-assign,assignment,return-value]
    data, _ = answer(LeanSite(root, reactor=Clock()), b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Request did not return bytes" in data


def test_keep_alive_then_wind_down_closes_after_the_next_answer() -> None:
    """``checkPersistence`` is asked for each request (the channel's hook for a stopping daemon)."""
    site = LeanSite(Leaf(302, {b"Location": b"http://m.example/f"}, b"", False), reactor=Clock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert isinstance(channel, LeanChannel)
    transport = StringTransport()
    channel.makeConnection(transport)
    request = b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n"
    channel.dataReceived(request)
    assert b"Connection: close" not in transport.value() and not transport.disconnecting
    transport.clear()
    wind_down(channel)
    channel.dataReceived(request)
    assert transport.value().startswith(b"HTTP/1.1 302 ")
    assert b"\r\nConnection: close\r\n" in transport.value()
    assert transport.disconnecting


def test_tracker_sees_connections_come_and_go() -> None:
    """``WrappingFactory`` calls ``registerProtocol``/``unregisterProtocol`` per connection."""
    tracker = ConnectionTracker(LeanSite(resource.Resource(), reactor=Clock()), Clock())
    wrapper = tracker.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert wrapper is not None
    wrapper.makeConnection(StringTransport())
    assert len(tracker) == 1 and tracker.accepted == 1
    emptied = tracker._wait_empty()
    assert not emptied.called
    wrapper.connectionLost(None)  # type: ignore[arg-type]
    assert len(tracker) == 0 and emptied.called


def test_accepting_port_takes_one_connection_per_wake_up_and_never_shuts_down() -> None:
    """One accept per readable event; stopping closes only the port's own fd (the socket goes on
    listening for whoever else holds it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    address = sock.getsockname()
    clients = [socket.create_connection(address, timeout=2) for _ in range(3)]
    reactor = MemoryReactor()
    try:
        port = adopt_listening_socket(reactor, sock.fileno(), sock.family,  # type: ignore[arg-type]
                                      LeanSite(resource.Resource(), reactor=Clock()))
        assert port in reactor.readers
        assert port.getHost() == IPv4Address("TCP", *address)
        port.doRead()
        assert len(reactor.adoptedStreamConnections) == 1
        assert port.accept_waiting() == 2
        assert len(reactor.adoptedStreamConnections) == 3
        port.stopListening()
        assert port not in reactor.readers
        late = socket.create_connection(address, timeout=2)  # still listening: not shut down
        sock.settimeout(2)
        conn, _ = sock.accept()
        conn.close()
        late.close()
    finally:
        for c in clients:
            c.close()
        sock.close()


def test_accepting_port_alone_on_its_socket_takes_a_burst_until_shared() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    clients = [socket.create_connection(sock.getsockname(), timeout=2) for _ in range(5)]
    reactor = MemoryReactor()
    try:
        port = adopt_listening_socket(reactor, sock.fileno(), sock.family,  # type: ignore[arg-type]
                                      LeanSite(resource.Resource(), reactor=Clock()), fair=False)
        port.doRead()
        assert len(reactor.adoptedStreamConnections) == 5  # all waiting ones, in one wake-up
        clients += [socket.create_connection(sock.getsockname(), timeout=2) for _ in range(2)]
        port.share()  # HTTP workers accept on it from now on
        port.doRead()
        assert len(reactor.adoptedStreamConnections) == 6
        port.stopListening()
    finally:
        for c in clients:
            c.close()
        sock.close()


def test_header_names_are_canonicalised_as_headers_does() -> None:
    for raw in (b"x-forwarded-for", b"CONTENT-TYPE", b"www-authenticate", b"x-xss-protection",
                b"te", b"dnt", b"content-md5"):
        headers = Headers()
        headers.addRawHeader(raw, b"v")
        assert list(header_table(headers)) == [canonical_header_name(raw)]


class Later(resource.Resource):
    isLeaf = True
    waiting: list[server.Request] = []

    def render(self, request: server.Request) -> int:
        self.waiting.append(request)
        return server.NOT_DONE_YET


def plain_channel(root: resource.Resource, clock: Clock) -> http.HTTPChannel:
    site = server.Site(root, reactor=clock)
    site.protocol = http.HTTPChannel  # type: ignore[assignment]
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(channel, http.HTTPChannel)
    return channel


def test_between_requests_follows_twisteds_parser_state() -> None:
    """``_handlingRequest``, ``line_mode``, ``_buffer``, ``_busyReceiving``, ``__first_line`` and
    ``persistent`` say when the next byte starts a request line, and ``requestDone`` feeds back
    what was buffered meanwhile through ``dataReceived``."""
    root = Later()
    root.waiting = []
    channel = plain_channel(root, Clock())
    transport = StringTransport()
    channel.makeConnection(transport)
    assert between_requests(channel)
    http.HTTPChannel.dataReceived(channel, b"GET /f HTTP/1.1\r\nHo")
    assert not between_requests(channel)  # a line half read
    http.HTTPChannel.dataReceived(channel, b"st: x\r\n")
    assert not between_requests(channel)  # headers being read
    http.HTTPChannel.dataReceived(channel, b"\r\nGET /g HTTP/1.1\r\n\r\n")
    assert not between_requests(channel) and len(root.waiting) == 1  # answered later, /g buffered
    fed: list[bytes] = []
    channel.dataReceived = fed.append  # type: ignore[method-assign]
    root.waiting.pop().finish()
    assert fed == [b"GET /g HTTP/1.1\r\n\r\n"] and between_requests(channel)
    channel.persistent = False
    assert not between_requests(channel)


def test_begin_request_then_suspend_stops_the_idle_timeout_until_request_done() -> None:
    clock = Clock()
    root = Later()
    root.waiting = []
    channel = plain_channel(root, clock)
    channel.callLater = clock.callLater  # type: ignore[method-assign]
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.setTimeout(10)
    request = channel.requestFactory(channel)  # type: ignore[call-arg]
    channel.requests.append(request)
    request.gotLength(0)
    begin_request(channel)
    request.requestReceived(b"GET", b"/f", b"HTTP/1.1")
    suspend_idle_timeout(channel)
    assert channel._handlingRequest and not channel.line_mode
    clock.advance(100)
    assert not transport.disconnecting
    root.waiting.pop().finish()
    assert not channel._handlingRequest and channel.line_mode
    clock.advance(10)
    assert transport.disconnecting


def test_write_through_sends_at_once_only_when_nothing_is_queued() -> None:
    """``tcp.Connection``: nothing queued (``dataBuffer``, ``_tempDataLen``) -> one ``writeSomeData``
    (``send``), no writer registered; anything queued, or a closing connection -> ``write``, in
    order; a ``ProtocolWrapper`` leads to its connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer = socket.create_connection(listener.getsockname(), timeout=5)
    sock, address = listener.accept()
    sock.setblocking(False)
    reactor = MemoryReactor()
    try:
        server = tcp.Server(sock, protocol.Protocol(), address, None, 1, reactor)  # type: ignore[arg-type]
        write_through(server, b"at once")
        assert peer.recv(100) == b"at once"
        assert not reactor.writers and not server._tempDataLen
        wrapper = policies.ProtocolWrapper(policies.WrappingFactory(protocol.Factory()), protocol.Protocol())
        wrapper.makeConnection(server)
        write_through(wrapper, b"wrapped")
        assert peer.recv(100) == b"wrapped"
        server.write(b"queued ")
        write_through(server, b"after it")
        assert server in reactor.writers and server._tempDataLen == len(b"queued after it")
        server.doWrite()
        assert peer.recv(100) == b"queued after it"
        server.loseConnection()
        write_through(server, b"closing")  # queued by write(), as twisted would
        assert server._tempDataLen == len(b"closing")
    finally:
        peer.close()
        sock.close()
        listener.close()
