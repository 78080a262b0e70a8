"""The HTTP front: a ``twisted.web`` Site whose root resource dispatches every request.

Why a lean request and channel: a redirect is a few microseconds of our own work, and twisted.web's
generic per-request machinery (resource traversal, the default ``Server``/``Date`` headers, a
``getsockname`` call for ``request.host``, a separate write for the headers and the body) cost more
than the redirect itself (measured: a bare twisted.web 302 spends ~140 us of CPU per request on the
2-core VM, a plain Twisted protocol ~45 us).

Only public twisted.web API is used, so a new Twisted release cannot break serving silently:

* :class:`LeanChannel` overrides the documented ``HTTPChannel`` hooks ``getHost`` and ``getPeer``
  (asked once per connection instead of once per request) and ``checkPersistence`` (twisted's rule,
  written once in :meth:`LeanChannel.persistence` for both ways of answering, and a stopping
  daemon answers every later request with ``Connection: close``: :func:`wind_down`), and ``LineReceiver``'s
  ``lineLengthExceeded`` (an oversize request line or header line is answered 414 or 431 instead
  of a silent close; an oversize header block goes through :mod:`mirrorbits.twistedcompat`);
* :class:`LeanRequest` overrides ``process``, the method twisted.web documents for subclasses: for
  a leaf root resource that returns its whole body at once (the redirector) it writes status line,
  headers and body in one transport write (sent at once when nothing is queued:
  :func:`mirrorbits.twistedcompat.write_through`) and ends with the public ``finish``.  Anything
  else (a
  non-leaf root, ``NOT_DONE_YET``, an unusual response: cookies, ETag, ``lastModified``) takes
  twisted's own ``render``/``write``/``finish`` path unchanged.

The lean lane goes one step further: a root resource that is a :class:`FastLane` (the redirector)
is offered each head the channel split at once, and answers the requests it can with the whole
response's bytes, without any twisted ``Request`` (:meth:`LeanChannel.answer_at_once`); the same
:func:`response_bytes` and :meth:`LeanChannel.persistence` as the requests it declines.
"""

from __future__ import annotations

import gzip
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine, Iterator, Sequence
from itertools import accumulate
from time import perf_counter
from typing import TYPE_CHECKING, Protocol, cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IConsumer
from twisted.logger import Logger
from twisted.python import failure
from twisted.web import http, pages, resource, server

from mirrorbits import VERSION
from mirrorbits.twistedcompat import RefusalHookChannel, header_table, write_through
from mirrorbits.web.leanhttp import ParsedHead, WholeHeadChannel
from mirrorbits.web.render import plain_error

if TYPE_CHECKING:
    from mirrorbits.app import Mirrorbits

__all__ = ["DATES", "FastAnswer", "FastLane", "LeanChannel", "LeanRequest", "LeanSite", "NotFoundRoot", "RequestMetrics", "deliver",
           "gzip_answer", "make_site", "outcome_of", "response_bytes", "wind_down"]

log = Logger(namespace="mirrorbits.web")

_NO_BODY = (http.NOT_MODIFIED, http.NO_CONTENT)
_CONNECTION_CLOSE = [b"close"]


def _go_error(status: bytes) -> bytes:
    """The answer Go's net/http writes itself for a request it refuses before any handler."""
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\n\r\n" + status)


#: A request line longer than ``LeanChannel.MAX_LENGTH`` (Go's status text for 414).
URI_TOO_LONG = _go_error(b"414 URI Too Long")
#: A header line longer than ``MAX_LENGTH``, or request line plus header lines longer than
#: ``totalHeadersSize``: Go's own answer when a request's head exceeds ``MaxHeaderBytes``.
HEADERS_TOO_LARGE = _go_error(b"431 Request Header Fields Too Large")
#: How long a refused connection keeps reading (and dropping) what the client still sends after
#: the answer, so that closing with unread bytes does not reset the connection before the client
#: has read the answer (Go waits 500 ms for the same reason).
REFUSED_DRAIN_SECONDS = 2.0
#: Twisted's own answer to any other request its parser refuses (kept byte for byte).
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"

#: Upper bounds of the request duration histogram's buckets (seconds).
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0)
_BUCKET_LABELS = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]

#: Outcome label of a status code (a redirect to a fallback is told apart by the redirector).
_OUTCOMES = {200: "ok", 301: "moved", 302: "redirect", 304: "not_modified", 400: "bad_request",
             404: "not_found", 405: "method_not_allowed", 500: "error", 503: "unavailable"}


def outcome_of(code: int, fallback: bool) -> str:
    """The ``outcome`` label of an answer: bounded, whatever the status code."""
    if fallback and code in (200, 302):
        return "fallback"
    named = _OUTCOMES.get(code)
    if named is not None:
        return named
    return "client_error" if 400 <= code < 500 else "error" if code >= 500 else "other"


class RequestMetrics(Collector):
    """``mirrorbits_http_requests_total`` and ``mirrorbits_http_request_duration_seconds``.

    Why plain integers, turned into the library's counter and histogram families at scrape time:
    the library's ``Counter.inc`` and ``Histogram.observe`` take a lock and run checks on every
    call, and on every request they cost ~5% of a redirect's CPU time (``bench/request_path.py
    --metrics-ab``); a dict update and a ``bisect`` cost a tenth of that.  The scrape runs in a
    thread: it copies each dict (one C-level call) before walking it.
    """

    def __init__(self) -> None:
        #: (kind, status code, fallback) -> requests answered.
        self.counts: dict[tuple[str, int, bool], int] = {}
        #: kind -> [requests per bucket (not cumulative; the last one is +Inf), sum of seconds].
        self.durations: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, kind: str, code: int, fallback: bool, seconds: float) -> None:
        key = (kind, code, fallback)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        duration = self.durations.get(kind)
        if duration is None:
            duration = self.durations[kind] = ([0] * (len(DURATION_BUCKETS) + 1), [0.0])
        duration[0][bisect_left(DURATION_BUCKETS, seconds)] += 1
        duration[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        totals: dict[tuple[str, str], int] = {}
        for (kind, code, fallback), n in dict(self.counts).items():
            label = (kind, outcome_of(code, fallback))
            totals[label] = totals.get(label, 0) + n
        family = CounterMetricFamily("mirrorbits_http_requests", "HTTP requests answered, by kind "
                                     "and outcome", labels=["kind", "outcome"])
        for labels, n in sorted(totals.items()):
            family.add_metric(list(labels), n)
        yield family
        histogram = HistogramMetricFamily(
            "mirrorbits_http_request_duration_seconds",
            "Time from a request's dispatch to its last byte handed to the kernel, by kind",
            labels=["kind"])
        for kind, (per_bucket, total) in sorted(dict(self.durations).items()):
            cumulative = list(accumulate(list(per_bucket)))
            histogram.add_metric([kind], list(zip(_BUCKET_LABELS, cumulative, strict=True)), total[0])
        yield histogram


def gzip_answer(request: server.Request, body: bytes, enabled: bool) -> bytes:
    """Gzip ``body`` when ``enabled`` (config ``Gzip``) and ``Accept-Encoding`` contains ``gzip``
    (no q-values, as Go): level 1, and the Content-Length set later is the compressed length
    (Go's is the uncompressed one).  Never for a 304."""
    if not enabled or request.code == 304:
        return body
    accept = request.requestHeaders.getRawHeaders(b"accept-encoding")
    if not accept or not any(b"gzip" in a for a in accept):
        return body
    request.setHeader(b"Content-Encoding", b"gzip")
    return gzip.compress(body, compresslevel=1, mtime=0)


def deliver(request: server.Request, gzip_enabled: bool,
            work: Coroutine[defer.Deferred[object], object, bytes]) -> int:
    """Run ``work`` (sets status and headers, returns the body) and finish ``request`` with it;
    returns ``NOT_DONE_YET`` for the resource.  A bug answers a plain 500.  A client gone
    meanwhile (``notifyFinish`` fails) gets nothing."""
    gone = False

    def lost(reason: failure.Failure) -> None:
        nonlocal gone
        gone = True

    request.notifyFinish().addErrback(lost)

    def done(body: bytes) -> None:
        if request.finished or gone:
            return
        body = gzip_answer(request, body, gzip_enabled)
        if request.code not in (204, 304):
            request.setHeader(b"Content-Length", b"%d" % len(body))
        if body and request.method != b"HEAD":
            request.write(body)
        request.finish()

    def failed(reason: failure.Failure) -> None:
        log.failure("Request {uri!r} failed", reason, uri=request.uri)
        if not request.finished and not gone:
            done(plain_error(request, 500, "Internal Server Error"))

    d = defer.Deferred.fromCoroutine(work)
    d.addCallbacks(done, failed)
    not_done: int = server.NOT_DONE_YET
    return not_done


class NotFoundRoot(resource.Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"Server", f"Mirrorbits/{VERSION}".encode())
        return plain_error(request, 404, "Not Found")


class DateCache:
    """The ``Date`` header value, formatted once per second (twisted formats it per request), and
    its whole header line for the lean lane."""

    __slots__ = ("second", "value", "line")

    def __init__(self) -> None:
        self.second = -1
        self.value = [b""]
        self.line = b""

    def now(self) -> list[bytes]:
        t = int(time.time())
        if t != self.second:
            self.value = [http.datetimeToString(t)]
            self.line = b"Date: " + self.value[0] + b"\r\n"
            self.second = t
        return self.value

    def now_line(self) -> bytes:
        """``Date: <now>`` and CRLF."""
        if int(time.time()) != self.second:
            self.now()
        return self.line


#: One ``DateCache`` per process; only ever touched from the reactor thread.
DATES = DateCache()


class FastLane(Protocol):
    """A root resource that answers some requests completely from the parts of their head (the
    redirector's lean lane; :meth:`LeanChannel.answer_at_once` asks it)."""

    def fast_answer(self, method: bytes, target: bytes, version: bytes, headers: dict[bytes, list[bytes]],
                    channel: http.HTTPChannel, close: bool) -> FastAnswer | None:
        """The whole response (status line, headers, body) and its metrics (kind, status code,
        fallback), with ``Connection: close`` after the status line when ``close``; or None to
        leave the request to twisted.web (nothing of it may have been done then)."""


#: (response bytes, metrics kind, status code, fallback).
FastAnswer = tuple[bytes, str, int, bool]
#: :meth:`FastLane.fast_answer`, bound to its resource.
FastAnswerer = Callable[[bytes, bytes, bytes, dict[bytes, list[bytes]], http.HTTPChannel, bool], FastAnswer | None]


def response_bytes(version: bytes, code: int, message: bytes, headers: dict[bytes, list[bytes]],
                   body: bytes, head: bool, default_content_type: bytes | None) -> tuple[bytes, int]:
    """Status line, headers and body of a whole answer, as twisted's ``render``/``write``/
    ``finish`` chain writes them, and the body's length as sent; adds to ``headers``.

    ``Content-Length`` for a non-HEAD answer (HEAD: only when a body was produced; so never
    chunked), the default ``Content-Type`` when none is set and the length is not 0, no body for
    HEAD, 204 and 304.
    """
    length = None
    if not head or body:
        length = b"%d" % len(body)
        headers[b"Content-Length"] = [length]
    if (code not in _NO_BODY and default_content_type is not None and length != b"0"
            and b"Content-Type" not in headers):
        headers[b"Content-Type"] = [default_content_type]
    parts = [version, b" %d " % code, message, b"\r\n"]
    for name, values in headers.items():
        for value in values:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    sent = 0
    if body and not head and code not in http.NO_BODY_CODES:
        parts.append(body)
        sent = len(body)
    return b"".join(parts), sent


_FOLD_STARTS = (b" ", b"\t")
#: Bytes allowed in a header line: HT, printable ASCII, obs-text (0x80-0xFF).
_FIELD_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))


def _drop(data: bytes) -> None:
    """What a refused connection does with the bytes it still receives."""


class LeanChannel(WholeHeadChannel, RefusalHookChannel):
    """One HTTP/1.x connection: a complete head parsed at once (:mod:`mirrorbits.web.leanhttp`),
    its local and peer addresses asked once, and a "last request" mode for stops.

    Why not twisted's default protocol factory (``_GenericHTTPChannelProtocol``): it only adds
    HTTP/2 negotiation over TLS, which needs the optional ``h2`` package the daemon does not
    install, and a proxy layer on every call of the hot path.

    Size limits of a request's head: twisted's, 16 KiB for the request line or any header line
    (``MAX_LENGTH``) and 16 KiB for the request line and header lines together
    (``totalHeadersSize``).  The Go original allows 1 MiB (+4 KiB) for the whole head and answers
    431 beyond.  Why the smaller bound: each connection may buffer that much before it is
    refused, a download path is far shorter (Linux' ``PATH_MAX`` is 4 KiB), and common proxies
    refuse longer heads themselves (nginx: 8 KiB per line).  An oversize request line gets 414
    (Go has no such answer: its only limit is on the whole head), an oversize header line or
    header block 431, both in the shape of Go's own 431.
    """

    #: Set by :func:`wind_down`: every request from now on is this connection's last.
    last_request = False
    #: The connection's local address (``getsockname``), asked on first use.
    local_address: IAddress | None = None
    #: The connection's peer address, asked on first use.
    peer_address: IAddress | None = None
    #: Set by ``Site.buildProtocol``.
    site: server.Site

    def getHost(self) -> IAddress:  # noqa: N802 - twisted's name
        host = self.local_address
        if host is None:
            assert self.transport is not None
            host = self.local_address = self.transport.getHost()
        return host

    def getPeer(self) -> IAddress:  # noqa: N802 - twisted's name
        # The transport makes a new address object on every call; a connection's peer is fixed.
        peer = self.peer_address
        if peer is None:
            assert self.transport is not None
            peer = self.peer_address = self.transport.getPeer()
        return peer

    #: Whether requests the root can answer from their head alone (:class:`FastLane`) are
    #: answered without a twisted ``Request`` (a switch for tests and benchmarks).
    fast_lane = True

    def persistence(self, version: bytes, connection: Sequence[bytes] | None) -> tuple[bool, bool]:
        """(keep the connection after this request, answer ``Connection: close``) for a request of
        ``version`` with these ``Connection`` header lines: twisted's rule (HTTP/1.1 without a
        ``close`` token among the first line's space-separated words; HTTP/1.0 never), and
        :func:`wind_down`'s last request."""
        if self.last_request:
            return False, True
        if version != b"HTTP/1.1":
            return False, False
        if connection and b"close" in [t.lower() for t in connection[0].split(b" ")]:
            return False, True
        return True, False

    def checkPersistence(self, request: http.Request, version: bytes) -> bool:  # noqa: N802
        persistent, close = self.persistence(version, request.requestHeaders.getRawHeaders(b"Connection"))
        if close:
            request.responseHeaders.setRawHeaders(b"Connection", _CONNECTION_CLOSE)
        return persistent

    def answer_at_once(self, parsed: ParsedHead) -> bool:
        site = self.site
        if not self.fast_lane or not isinstance(site, LeanSite):
            return False
        lane = site.fast_answer
        if lane is None:
            return False
        started = perf_counter()
        method, target, version, headers = parsed
        persistent, close = self.persistence(version, headers.get(b"Connection"))
        answer = lane(method, target, version, headers, self, close)
        if answer is None:
            return False
        self.persistent = persistent
        data, kind, code, fallback = answer
        transport = self.transport
        assert transport is not None
        write_through(transport, data)
        site.request_metrics.observe(kind, code, fallback, perf_counter() - started)
        return True

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - twisted's name
        # A line starting with SP or HT: obs-fold in a header block (twisted would join it to the
        # header before it), or a request line that cannot parse anyway.  Refused, as RFC 9112
        # allows: a proxy in front may have read the folded line as a header of its own.
        if line[:1] in _FOLD_STARTS and self.persistent:
            self.refuse(BAD_REQUEST)
            return
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:  # noqa: N802 - twisted's name
        # Control bytes other than HT (twisted refuses only NUL, CR and LF): Go refuses them too.
        if line.translate(None, _FIELD_BYTES):
            self.refuse(BAD_REQUEST)
            return False
        accepted: bool = super().headerReceived(line)
        return accepted

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 - twisted's name
        # A request object exists from its request line on (and is gone once answered).
        self.refuse(HEADERS_TOO_LARGE if self.requests else URI_TOO_LONG)

    def refuse_malformed(self, headers_too_large: bool) -> None:
        self.refuse(HEADERS_TOO_LARGE if headers_too_large else BAD_REQUEST)

    def refuse(self, answer: bytes) -> None:
        """Write ``answer``, close our side, and drop what the client still sends for at most
        :data:`REFUSED_DRAIN_SECONDS` before closing for good."""
        transport = self.transport
        assert transport is not None
        # Nothing more is parsed on this connection, whatever is left in the current read.
        self.dataReceived = self.rawDataReceived = _drop  # type: ignore[method-assign]
        self.setRawMode()
        self.persistent = False
        transport.write(answer)
        cast(IConsumer, transport).unregisterProducer()  # as ``HTTPChannel.loseConnection``
        self.setTimeout(None)
        close_write = getattr(transport, "loseWriteConnection", None)
        if close_write is None:
            transport.loseConnection()
            return
        close_write()
        self.callLater(REFUSED_DRAIN_SECONDS, transport.loseConnection)


def wind_down(channel: http.HTTPChannel) -> None:
    """No keep-alive from now on: the channel's current request (if any) is its last.

    A request being answered gets ``Connection: close`` unless its headers are already out (then
    the connection closes after it all the same); on a :class:`LeanChannel` every later request
    is answered the same way.
    """
    if isinstance(channel, LeanChannel):
        channel.last_request = True
    for request in channel.requests:
        if not request.startedWriting and channel.persistent:
            request.responseHeaders.setRawHeaders(b"Connection", _CONNECTION_CLOSE)
            channel.persistent = False


class LeanRequest(server.Request):
    """A ``server.Request`` with a short path for a leaf root resource (see the module docstring).

    Differences a caller could notice: ``postpath`` is empty on the short path (a leaf resource
    reads ``path``); twisted's default ``Server: TwistedWeb/…`` header is not added (every response
    of the redirector sets its own ``Server`` or, like Go's 400/301, none).
    """

    dates = DATES
    #: What the request was, for the metrics (the redirector sets it once it has dispatched).
    metrics_kind = "other"
    #: Set by the redirector when the answer is made of the configured fallbacks.
    metrics_fallback = False
    metrics_started = 0.0

    def process(self) -> None:
        self.metrics_started = perf_counter()
        site = self.site = cast(LeanChannel, self.channel).site
        root = site.resource
        if not root.isLeaf or self.path == b"*":
            server.Request.process(self)
            return
        header_table(self.responseHeaders)[b"Date"] = self.dates.now()
        self.prepath = []
        self.postpath = []
        self.sitepath: list[bytes] = []
        try:
            body = root.render(self)
            if body is server.NOT_DONE_YET:
                return
            if (not isinstance(body, bytes) or self.cookies or self.etag is not None
                    or self.lastModified is not None):
                self._finish_like_twisted(body)
            else:
                self._write_whole(body)
        except BaseException:
            self.processingFailed(failure.Failure())

    def _finish_like_twisted(self, body: object) -> None:
        """What ``server.Request.render`` does with a returned body."""
        if not isinstance(body, bytes):  # twisted's answer to that bug: a 500 page
            pages.errorPage(http.INTERNAL_SERVER_ERROR, "Request did not return bytes",
                            "").render(self)  # writes and finishes the request itself
            return
        if self.method == b"HEAD":
            if body:
                self.setHeader(b"Content-Length", b"%d" % (len(body),))
            self.write(b"")
        else:
            self.setHeader(b"Content-Length", b"%d" % (len(body),))
            self.write(body)
        self.finish()

    def _write_whole(self, body: bytes) -> None:
        """Status line, headers and body in one transport write (:func:`response_bytes`), then
        twisted's ``finish``."""
        data, self.sentLength = response_bytes(
            self.clientproto, self.code, self.code_message, header_table(self.responseHeaders), body,
            self.method == b"HEAD", self.defaultContentType)
        self.startedWriting = 1  # ``finish`` then writes nothing more (never chunked: see above)
        transport = self.channel.transport
        assert transport is not None
        write_through(transport, data)
        self.finish()


class LeanSite(server.Site):
    """No per-request access log: the Go original writes none (its download log is separate), and
    formatting one line per request costs ~15% of a redirect's CPU time.  The hook twisted calls
    when a request finishes (``log``) counts it and its duration instead."""

    requestFactory = LeanRequest
    # twisted types the attribute as its HTTP/2-negotiating factory; any HTTPChannel serves.
    protocol = LeanChannel  # type: ignore[assignment]
    request_metrics = RequestMetrics()
    #: Set when the root resource answers some requests from their head alone (:class:`FastLane`).
    fast_lane = False
    #: The root's :meth:`FastLane.fast_answer` then (bound once: it is called on every request).
    fast_answer: FastAnswerer | None = None

    def __init__(self, resource: resource.IResource, *args: object, **kwargs: object) -> None:
        super().__init__(resource, *args, **kwargs)
        self.fast_lane = callable(getattr(resource, "fast_answer", None))
        if self.fast_lane:
            self.fast_answer = cast(FastLane, resource).fast_answer

    def log(self, request: object) -> None:
        if isinstance(request, LeanRequest):
            self.request_metrics.observe(request.metrics_kind, request.code, request.metrics_fallback,
                                         perf_counter() - request.metrics_started)


def make_site(app: Mirrorbits) -> server.Site:
    site = LeanSite(app.get_web_root())
    site.displayTracebacks = False
    return site
