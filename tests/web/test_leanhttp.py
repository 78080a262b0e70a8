"""The whole-head fast path: what it takes, that it answers as twisted's parser does, pipelining
behind a request answered later, the idle timeout, and the request metrics."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import http, resource, server

from mirrorbits.web import leanhttp
from mirrorbits.web.leanhttp import MAX_FAST_HEAD, WholeHeadChannel, parse_head
from mirrorbits.web.site import LeanChannel, LeanRequest, LeanSite


def test_a_plain_head_is_split_with_canonical_names_and_repeated_headers_kept() -> None:
    head = (b"GET /pub/f.iso?x=1 HTTP/1.1\r\nhost: h\r\nX-FORWARDED-FOR:  1.2.3.4 \t\r\n"
            b"Accept: a\r\naccept: b\r\nEmpty:")
    assert parse_head(head) == (b"GET", b"/pub/f.iso?x=1", b"HTTP/1.1", {
        b"Host": [b"h"], b"X-Forwarded-For": [b"1.2.3.4"], b"Accept": [b"a", b"b"], b"Empty": [b""]})
    assert parse_head(b"HEAD / HTTP/1.0") == (b"HEAD", b"/", b"HTTP/1.0", {})
    assert parse_head(b"PURGE / HTTP/1.1\r\nUser-Agent: a\tb") == (
        b"PURGE", b"/", b"HTTP/1.1", {b"User-Agent": [b"a\tb"]})


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nContent-Length: 3",
    b"POST / HTTP/1.1\r\ntransfer-encoding: chunked",
    b"GET / HTTP/1.1\r\nExpect: 100-continue",
    b"GET / HTTP/1.1\r\nX: a\r\n b",  # obs-fold
    b"GET / HTTP/1.1\r\n\tX: a",
    b"GET / HTTP/1.1\nHost: x",  # bare LF
    b"GET / HTTP/1.1\r\nHost: x\ny",
    b"GET / HTTP/1.1\r\nHost: x\ry",  # bare CR
    b"GET /\x00 HTTP/1.1",
    b"GET / HTTP/1.1\r\nHost: \x01",
    b"GET / HTTP/1.1\r\nHost: \x7f",
    b"GET /\xc3\xa9 HTTP/1.1",  # not ASCII: twisted decides
    b"GET / HTTP/1.1\r\nUser-Agent: \xc3\xa9",
    b"GET http://x/f HTTP/1.1",  # absolute form
    b"GET * HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
    b"GET / HTTP/2.0",
    b"GET / http/1.1",
    b"GET /  HTTP/1.1",
    b"GET / HTTP/1.1 ",
    b"GET /",
    b"G(T / HTTP/1.1",
    b" GET / HTTP/1.1",
    b"",
    b"\r\nGET / HTTP/1.1",  # the empty line IE sends after a POST: twisted eats it
    b"GET / HTTP/1.1\r\nHost : x",
    b"GET / HTTP/1.1\r\nno colon",
    b"GET / HTTP/1.1\r\n: empty name",
    b"GET /" + b"a" * MAX_FAST_HEAD + b" HTTP/1.1",
    b"GET / HTTP/1.1" + b"\r\nX: y" * (leanhttp.MAX_FAST_HEADERS + 1),
])
def test_anything_outside_the_subset_is_left_to_twisted(head: bytes) -> None:
    assert parse_head(head) is None


class Echo(resource.Resource):
    """Shows what the request object holds; ``/later`` is answered when ``release`` is called."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[server.Request] = []

    def render(self, request: server.Request) -> bytes | int:
        body = repr((request.method, request.uri, request.path, request.args, request.clientproto,
                     sorted(request.requestHeaders.getAllRawHeaders()), request.received_cookies,
                     request.content.read() if request.content is not None else None,
                     request.getClientAddress(), request.getHost())).encode()
        if request.path == b"/later":
            self.waiting.append(request)
            return server.NOT_DONE_YET
        request.setHeader(b"Content-Type", b"text/plain")
        return body

    def release(self) -> None:
        for request in self.waiting:
            request.setHeader(b"Content-Length", b"5")
            request.write(b"later")
            request.finish()
        self.waiting = []


def connect(site: server.Site) -> tuple[LeanChannel, StringTransport]:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert isinstance(channel, LeanChannel)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    channel.makeConnection(transport)
    return channel, transport


def conversation(reads: list[bytes], release_after: int | None = None) -> tuple[bytes, bool, int]:
    """What the lean site writes for ``reads`` (Date lines removed), whether it closed, and how
    many requests the request metrics counted."""
    root = Echo()
    site = LeanSite(root, reactor=Clock())
    site.request_metrics = type(site.request_metrics)()
    channel, transport = connect(site)
    for i, data in enumerate(reads):
        channel.dataReceived(data)
        if release_after == i:
            root.release()
    root.release()
    counted = sum(site.request_metrics.counts.values())
    return re.sub(rb"Date: [^\r]*\r\n", b"", transport.value()), transport.disconnecting, counted


def both_parsers(reads: list[bytes], release_after: int | None
                 ) -> tuple[tuple[bytes, bool, int], tuple[bytes, bool, int]]:
    """:func:`conversation` with the whole-head parser, then with twisted's line parser."""
    lean = conversation(reads, release_after)
    LeanChannel.dataReceived = http.HTTPChannel.dataReceived  # type: ignore[method-assign]
    try:
        return lean, conversation(reads, release_after)
    finally:
        del LeanChannel.dataReceived


GET = b"GET /a/b.iso?x=1&y HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: k=v; l=w\r\n\r\n"
CONVERSATIONS = [
    [GET],
    [GET + GET + GET],  # pipelined in one read
    [b"HEAD /f HTTP/1.1\r\nHost: h\r\n\r\n"],
    [b"GET /f HTTP/1.0\r\n\r\n" + GET],  # HTTP/1.0: one request, then closed
    [b"GET /f HTTP/1.1\r\nConnection: close\r\n\r\n" + GET],
    [b"GET /f HTTP/1.1\r\nConnection: keep-alive\r\n\r\n" + GET],
    [GET[:20], GET[20:] + GET],  # a head split over two reads
    [GET + GET[:30], GET[30:]],
    [b"POST /f HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody" + GET],  # a body: twisted's parser
    [b"POST /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n" + GET],
    [b"POST /f HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n", b"body" + GET],
    [b"GET /f HTTP/1.1\r\nX: a\r\n b\r\n\r\n" + GET],  # refused
    [b"GET /f HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n" + GET],  # not ASCII: twisted's parser, answered
    [b"\r\n" + GET],
    [GET + b"GET /later HTTP/1.1\r\n\r\n" + GET + GET],  # answered later: the rest waits
    [b"GET /later HTTP/1.1\r\n\r\n", GET, GET],
    [b"GET /later HTTP/1.1\r\n\r\n" + GET, b"GET /later HTTP/1.1\r\n\r\n" + GET],
]


@pytest.mark.parametrize("reads", CONVERSATIONS)
@pytest.mark.parametrize("release_after", [None, 0])
def test_answers_are_twisted_parsers_answers(reads: list[bytes], release_after: int | None) -> None:
    """Same bytes, same close, same requests counted, in the same order, as when twisted's own
    parser reads everything (pipelined requests behind one answered later included)."""
    lean, reference = both_parsers(reads, release_after)
    assert lean == reference
    assert lean[0].startswith(b"HTTP/1.")


def test_the_fast_path_is_the_one_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []

    def counting(head: bytes) -> leanhttp.ParsedHead | None:
        parsed.append(head)
        return parse_head(head)

    monkeypatch.setattr(leanhttp, "parse_head", counting)
    assert conversation([GET + GET])[2] == 2
    assert parsed == [GET[:-4], GET[:-4]]


def test_a_request_answered_later_holds_the_next_ones_in_order() -> None:
    root = Echo()
    site = LeanSite(root, reactor=Clock())
    channel, transport = connect(site)
    channel.dataReceived(b"GET /later HTTP/1.1\r\n\r\n" + GET)
    assert transport.value() == b""  # the second waits for the first
    channel.dataReceived(GET)
    assert transport.value() == b""
    root.release()
    answers = transport.value().split(b"HTTP/1.1 200 OK\r\n")
    assert answers[0] == b"" and answers[1].endswith(b"\r\n\r\nlater") and len(answers) == 4


def test_the_idle_timeout_runs_between_requests_and_stops_while_one_is_answered() -> None:
    clock = Clock()
    root = Echo()
    site = LeanSite(root, reactor=clock, timeout=10)
    channel, transport = connect(site)
    channel.callLater = clock.callLater  # type: ignore[method-assign]
    channel.setTimeout(10)  # as connectionMade did, on the test's clock
    clock.advance(9)
    channel.dataReceived(GET)  # answered at once: the idle timer starts again
    clock.advance(9)
    assert not transport.disconnecting
    channel.dataReceived(b"GET /later HTTP/1.1\r\n\r\n")
    clock.advance(100)  # no timeout while a request is being answered
    assert not transport.disconnecting
    root.release()
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting  # idle for 10 s after the last answer


def test_lean_path_answers_are_counted_by_the_request_metrics() -> None:
    site = LeanSite(Echo(), reactor=Clock())
    site.request_metrics = type(site.request_metrics)()
    channel, _ = connect(site)
    channel.dataReceived(GET + GET + b"HEAD /x HTTP/1.1\r\n\r\n")
    assert site.request_metrics.counts == {("other", 200, False): 3}
    assert sum(site.request_metrics.durations["other"][0]) == 3


def test_the_lean_request_is_the_sites_request_factory() -> None:
    site = LeanSite(Echo(), reactor=Clock())
    assert site.requestFactory is LeanRequest
    assert issubclass(LeanChannel, WholeHeadChannel)


# Differential fuzzing: random heads, pipelined, split into random reads; both parsers must write
# the same bytes, close alike and count the same requests.
_PIECES = st.sampled_from([
    b"GET", b"HEAD", b"POST", b"get", b"G T", b" ", b"  ", b"\t", b"/", b"/a/b.iso", b"?x=1&y", b"*",
    b"http://h/f", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"\r\n", b"\n", b"\r", b"\x00", b"\x01", b"\x7f",
    b"\xc3\xa9", b":", b": ", b"Host", b"host: h", b"Content-Length: 0", b"Content-Length: 3",
    b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Connection: close", b"Cookie: a=b",
    b"X-Forwarded-For: 1.2.3.4", b"0\r\n\r\n", b"abc", b"/later"])
_HEADS = st.lists(_PIECES, max_size=14).map(b"".join)
_REQUESTS = st.one_of(
    _HEADS.map(lambda h: h + b"\r\n\r\n"),
    st.lists(st.sampled_from([b"Host: h", b"Accept: */*", b"Connection: close", b"X: \x01",
                              b" folded", b"Cookie: k=v", b"Content-Length: 2"]), max_size=4).map(
        lambda hs: b"GET /f HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in hs) + b"\r\n"),
    st.just(GET), st.just(b"GET /later HTTP/1.1\r\n\r\n"))


@given(st.lists(_REQUESTS, min_size=1, max_size=4), st.lists(st.integers(1, 200), max_size=3),
       st.sampled_from([None, 0, 1]))
@settings(max_examples=int(os.environ.get("LEANHTTP_FUZZ", "300")), deadline=None, database=None)
def test_differential_fuzz_against_twisteds_parser(requests: list[bytes], cuts: list[int],
                                                   release_after: int | None) -> None:
    data = b"".join(requests)
    reads = []
    for cut in cuts:
        if cut < len(data):
            reads.append(data[:cut])
            data = data[cut:]
    reads.append(data)
    lean, reference = both_parsers(reads, release_after)
    assert lean == reference
