"""The one place that relies on Twisted internals (checked by ``tests/test_twistedcompat.py``).

Everything else in the package uses Twisted's public API only.  The canary test fails loudly when a
Twisted release changes what this module relies on; the Twisted requirement in ``setup.cfg`` is
bounded to the releases that test passed on.  These internals are used:

``Headers._rawHeaders``: a ``dict`` from the canonical header name (``b"Content-Type"``, as
``Headers`` canonicalises it) to the list of values, in insertion order; ``getAllRawHeaders``
iterates it.  A redirect sets six to eight headers whose names are constants and whose values were
checked once when made (no CR/LF); ``Headers.setRawHeaders`` canonicalises the name and re-checks
every value on every request: 1.8 us for a redirect's six headers against 0.3 us through the table
(timeit on the 2-core VM), i.e. ~2% of the redirect's ~70-100 us of CPU.

``endpoints._SystemdParser._sddaemon``: importing ``twisted.internet.endpoints`` parses systemd's
``LISTEN_FDS``/``LISTEN_FDNAMES`` into this ``ListenFDs`` object (for ``systemd:`` endpoint
descriptions) and deletes the variables from the environment, so once any module has imported it,
that object is the only record left of the sockets systemd passed.

``HTTPChannel._respondToBadRequestAndDisconnect`` and ``HTTPChannel._receivedHeaderSize``: the
channel calls the first for every request it refuses while parsing (it writes a bare 400 and
closes), the second counts the bytes of the request line and header lines read so far.  A header
block over ``totalHeadersSize`` is refused through the same method, so telling it apart (to answer
431, as Go does, rather than 400) needs the count; there is no public hook for either.

The whole-head fast path (:mod:`mirrorbits.web.leanhttp`) starts a request the way
``HTTPChannel.allContentReceived`` does, which needs the channel's parser state:
``HTTPChannel._handlingRequest`` (a request is being answered; what arrives meanwhile is buffered
in ``_dataBuffer`` and fed back to ``dataReceived`` by ``requestDone``), ``_savedTimeOut`` (the
idle timeout, suspended while a request is answered), the name-mangled ``__first_line`` (1: the
next line is a request line), and ``LineReceiver._buffer``/``_busyReceiving`` (bytes of a line not
yet parsed; a ``dataReceived`` already running).  Header names are canonicalised by
``http_headers._nameEncoder``, the one ``Headers`` itself uses (a bounded cache).

:func:`write_through` sends a whole answer at once when the TCP transport has nothing queued:
``FileDescriptor.write`` only queues (``_tempDataBuffer``) and registers the socket for writing, so
every answer costs a registration, one more reactor iteration (``doWrite``) and a deregistration
— two ``epoll_ctl`` calls and a loop turn per request.  It reads ``tcp.Connection``'s
``dataBuffer``/``_tempDataLen`` (nothing queued), ``connected``, ``disconnecting`` and
``_writeDisconnecting``/``_writeDisconnected`` (what ``write`` itself checks), and calls its
``writeSomeData`` (one ``send``, EAGAIN as 0); ``policies.ProtocolWrapper.transport`` (the
connection tracker's wrapper) leads to the connection.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.interfaces import ITransport
from twisted.protocols import policies
from twisted.web import http_headers
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers

__all__ = ["RefusalHookChannel", "begin_request", "between_requests", "canonical_header_name",
           "header_table", "suspend_idle_timeout", "systemd_inherited_fds", "write_through"]


def header_table(headers: Headers) -> dict[bytes, list[bytes]]:
    """The live table behind ``headers``: set a header with ``table[b"Canonical-Name"] = [value]``.

    Only for names spelled as ``Headers`` canonicalises them (each word capitalised, e.g.
    ``b"Cache-Control"``) and values without CR or LF; anything else goes through
    ``Headers.setRawHeaders``.
    """
    table: dict[bytes, list[bytes]] = headers._rawHeaders
    return table


def canonical_header_name(name: bytes) -> bytes:
    """The name as ``Headers`` stores it (``b"x-forwarded-for"`` -> ``b"X-Forwarded-For"``);
    ``name`` must be a token (``InvalidHeaderName`` otherwise)."""
    canonical: bytes = http_headers._nameEncoder.encode(name)
    return canonical


def between_requests(channel: HTTPChannel) -> bool:
    """True when ``channel``'s parser holds nothing of a request and none is being answered: the
    next bytes start a request line (and the connection is still persistent)."""
    return bool(not channel._handlingRequest and channel.line_mode and not channel._buffer
                and not channel._busyReceiving and channel._HTTPChannel__first_line == 1  # type: ignore[attr-defined]
                and channel.persistent)


def begin_request(channel: HTTPChannel) -> None:
    """What ``allContentReceived`` does to the channel before it hands a complete request to
    ``Request.requestReceived`` — but for the idle timeout: later bytes are buffered until the
    request is done, and ``requestDone`` restores no timeout (see :func:`suspend_idle_timeout`)."""
    channel._savedTimeOut = None
    channel._handlingRequest = True
    channel.setRawMode()


def suspend_idle_timeout(channel: HTTPChannel) -> None:
    """The rest of what ``allContentReceived`` does, for a request answered later: no idle timeout
    while it is answered, restored by ``requestDone``.  (A request answered at once never needs
    it: suspending and restoring would cancel and re-arm a timer on every request.)"""
    if channel.timeOut:
        channel._savedTimeOut = channel.setTimeout(None)


def write_through(transport: ITransport, data: bytes) -> None:
    """``transport.write(data)``, but sent at once (one ``send``) when ``transport`` is a TCP
    connection (possibly behind a ``ProtocolWrapper``) with nothing queued; what the kernel does
    not take, and everything on any other transport, goes through ``write`` as usual."""
    inner = transport.transport if isinstance(transport, policies.ProtocolWrapper) else transport
    if (isinstance(inner, tcp.Connection) and inner.connected and not inner.disconnecting
            and not inner._writeDisconnecting and not inner._writeDisconnected
            and not inner.dataBuffer and not inner._tempDataLen):
        sent = inner.writeSomeData(data)
        if isinstance(sent, int):  # otherwise the connection is lost: write() lets doWrite see it
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


def systemd_inherited_fds() -> list[tuple[int, str]]:
    """The sockets systemd passed, as ``(fd, name)`` (``"unknown"`` when unnamed), as Twisted read them.

    ``twisted.internet.endpoints`` is imported here, on call, on purpose: importing it consumes the
    ``LISTEN_*`` variables, which :func:`mirrorbits.lifecycle.systemd.listen_fds` reads first.
    """
    from twisted.internet import endpoints

    daemon = endpoints._SystemdParser._sddaemon
    names = {fd: name for name, fd in daemon.inheritedNamedDescriptors().items()}
    return [(fd, names.get(fd, "unknown")) for fd in daemon.inheritedDescriptors()]


class RefusalHookChannel(HTTPChannel):
    """An ``HTTPChannel`` whose refusals of a malformed request go through :meth:`refuse_malformed`."""

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 - twisted's name
        self.refuse_malformed(self._receivedHeaderSize > self.totalHeadersSize)

    def refuse_malformed(self, headers_too_large: bool) -> None:
        """Answer a request the parser refused; ``headers_too_large`` when its request line and
        header lines together went over ``totalHeadersSize``.  Twisted's answer by default."""
        super()._respondToBadRequestAndDisconnect()
