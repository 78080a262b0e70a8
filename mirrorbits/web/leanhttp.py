"""A whole-head fast path in front of twisted.web's line-by-line HTTP/1.1 parser.

Why: twisted's ``HTTPChannel`` splits a request into lines (``LineReceiver``), then handles each
header line on its own (split, canonical name, value checks, length headers, ``Headers.addRawHeader``)
and looks headers up again for cookies, ``Expect`` and persistence.  For the redirector's typical
request (a GET of a few short lines that arrives in one read) that bookkeeping costs more than the
redirect itself.  Here a complete head found in one read is checked in a few C-level calls and
split at once, and the twisted ``Request`` is built from the parts exactly as
``HTTPChannel.allContentReceived`` builds it — then everything after (the resource tree, the
lean request's one write, ``finish``, persistence, pipelining, timeouts, metrics, the download
counts and log) is twisted.web's and ours as before, so every answer stays byte for byte.

What the fast path accepts is a strict subset of what twisted accepts: printable ASCII only (and
HT in values), CRLF line ends only, no obs-fold, token header names, an origin-form target, HTTP/1.0
or 1.1, no ``Content-Length``, ``Transfer-Encoding`` or ``Expect`` (so never a body, never a
``100 Continue``), a head well inside twisted's size limits.  Anything else — a request split over
several reads, a body, a malformed or hostile head — goes to twisted's own parser from its first
byte, which answers it or refuses it as it always did; the fast path never refuses anything
itself, so it cannot introduce a parsing difference between the two (request smuggling lives in
such differences).

Each request is parsed once: either here or by twisted, never both.

A subclass may answer a parsed request itself, with no twisted ``Request`` at all
(:meth:`WholeHeadChannel.answer_at_once`: the redirector's lean lane); what it declines is started
as above, in order with the others.
"""

from __future__ import annotations

from twisted.web import http
from twisted.web.iweb import INonQueuedRequestFactory

from mirrorbits.twistedcompat import (
    begin_request,
    between_requests,
    canonical_header_name,
    header_table,
    suspend_idle_timeout,
)

__all__ = ["MAX_FAST_HEAD", "MAX_FAST_HEADERS", "ParsedHead", "WholeHeadChannel", "parse_head"]

#: Longest head (request line and header lines, without the final CRLF CRLF) the fast path takes;
#: longer ones go to twisted, whose limits (16 KiB a line, 16 KiB in all) then decide.
MAX_FAST_HEAD = 8192
#: Most header lines the fast path takes (twisted's limit is 500).
MAX_FAST_HEADERS = 64

_PRINTABLE = bytes(range(0x20, 0x7F))
#: Bytes a fast-path head may contain: printable ASCII, HT, and CR LF between lines.
_HEAD_BYTES = _PRINTABLE + b"\t\r\n"
#: RFC 9110 ``tchar``.
_TOKEN_BYTES = (b"!#$%&'*+-.^_`|~0123456789"
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
#: Bytes of an origin-form target (twisted also takes some bytes >= 0x80; those go to it).
_TARGET_BYTES = bytes(range(0x21, 0x7F))
_VERSIONS = frozenset((b"HTTP/1.1", b"HTTP/1.0"))
#: Headers that mean a body or an interim answer: twisted's parser handles those requests.
_TWISTED_ONLY = frozenset((b"Content-Length", b"Transfer-Encoding", b"Expect"))

#: Header names seen, as sent -> canonical: only token names get in, so a known name needs
#: neither the check nor twisted's encoder again.
_NAMES: dict[bytes, bytes] = {}
#: Entries of :data:`_NAMES` before it is emptied (clients send few distinct names).
MAX_NAMES = 1024

#: (method, target, version, canonical name -> values in arrival order).
ParsedHead = tuple[bytes, bytes, bytes, dict[bytes, list[bytes]]]


def parse_head(head: bytes) -> ParsedHead | None:
    """The parts of a request head (without its final CRLF CRLF), or None when the head is not in
    the fast path's subset (see the module docstring): twisted's parser must then take it."""
    if len(head) > MAX_FAST_HEAD or head.translate(None, _HEAD_BYTES):
        return None
    lines = head.split(b"\r\n")
    if len(lines) > MAX_FAST_HEADERS + 1:
        return None
    # A CR or LF left inside a line was not part of a CRLF: a bare one.
    if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if (version not in _VERSIONS or not method or method.translate(None, _TOKEN_BYTES)
            or target[:1] != b"/" or target.translate(None, _TARGET_BYTES)):
        return None
    headers: dict[bytes, list[bytes]] = {}
    names = _NAMES
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        canonical = names.get(name)
        if canonical is None:
            if not name or name.translate(None, _TOKEN_BYTES):
                return None  # obs-fold (a line starting with SP or HT), a bad name
            canonical = canonical_header_name(name)
            if len(names) >= MAX_NAMES:
                names.clear()
            names[name] = canonical
        if canonical in _TWISTED_ONLY:
            return None
        value = value.strip(b" \t")
        values = headers.get(canonical)
        if values is None:
            headers[canonical] = [value]
        else:
            values.append(value)
    return method, target, version, headers


class WholeHeadChannel(http.HTTPChannel):
    """An ``HTTPChannel`` that takes each complete head of a read through :func:`parse_head`.

    Between requests (twisted's parser holds nothing of a request and no request is being
    answered), each complete head in the data read is parsed at once and its request started as
    twisted starts it; the first head that is incomplete or not in the fast path's subset, and
    everything after it in that read, go to twisted's parser.  While a request is being answered
    asynchronously, what arrives is buffered by twisted as usual and fed back here once it is
    done, so pipelined requests are answered in order.
    """

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - twisted's name
        if not between_requests(self):
            http.HTTPChannel.dataReceived(self, data)
            return
        self.resetTimeout()
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                break
            parsed = parse_head(data[:end])
            if parsed is None:
                break
            data = data[end + 4:]
            if self.answer_at_once(parsed):
                if not self.persistent:
                    self.loseConnection()  # what ``requestDone`` does; the rest is never read
                    return
                if not data:
                    return
                continue
            self._start_request(parsed)
            if not data:
                return
            if not between_requests(self):
                break  # answered later (twisted buffers what follows), or the connection ends
        # twisted's parser from here: resetTimeout again is harmless (the same deadline).
        http.HTTPChannel.dataReceived(self, data)

    def answer_at_once(self, parsed: ParsedHead) -> bool:
        """Answer the request of ``parsed`` completely, without a twisted ``Request``, and say so;
        False leaves it to :meth:`_start_request` (nothing of it may have been done then).  Sets
        ``persistent`` as ``checkPersistence`` would.  None of them here: a subclass decides."""
        return False

    def _start_request(self, parsed: ParsedHead) -> None:
        """What ``lineReceived``, ``allHeadersReceived`` and ``allContentReceived`` do for a
        request without a body, from the parsed parts."""
        method, target, version, headers = parsed
        factory = self.requestFactory
        if INonQueuedRequestFactory.providedBy(factory):
            request = factory(self)
        else:
            request = factory(self, len(self.requests))
        self.requests.append(request)
        header_table(request.requestHeaders).update(headers)
        if b"Cookie" in headers:
            request.parseCookies()
        self.persistent = self.checkPersistence(request, version)
        request.gotLength(0)
        begin_request(self)
        request.requestReceived(method, target, version)
        if not request.finished:
            suspend_idle_timeout(self)
