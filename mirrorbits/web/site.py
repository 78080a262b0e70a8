"""The HTTP front: a ``twisted.web`` Site whose root resource dispatches every request.

Why a lean request class: a redirect is a few microseconds of our own work, and twisted.web's
generic per-request machinery (query parsing into ``request.args``, resource traversal, the
default ``Server``/``Date`` headers, a ``getsockname`` call for ``request.host``, several header
look-ups on the way out) cost more than the redirect itself (measured: a bare twisted.web 302
spends ~140 us of CPU per request on the 2-core VM, a plain Twisted protocol ~45 us).
:class:`LeanRequest` keeps the twisted.web API (everything a resource or a test may use still
works, lazily where possible) and takes a short path for what the redirector does: a leaf root
resource that returns the whole body at once.  Anything else (a non-leaf root, a POST form, an
unusual response: cookies, ETag, ``lastModified``) takes twisted's own path unchanged.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web import http, resource, server
from twisted.web.http import parse_qs
from twisted.web.http_headers import Headers

from mirrorbits import VERSION

__all__ = ["LeanRequest", "NotFoundRoot", "make_site", "plain_error"]

_NO_BODY = (http.NOT_MODIFIED, http.NO_CONTENT)


def plain_error(request: Any, code: int, text: str) -> bytes:
    """Go's ``http.Error``: text/plain, nosniff, ``<text>\\n``."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    return (text + "\n").encode()


class NotFoundRoot(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"Server", f"Mirrorbits/{VERSION}".encode())
        return plain_error(request, 404, "Not Found")


class _DateCache:
    """The ``Date`` header value, formatted once per second (twisted formats it per request)."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def now(self) -> bytes:
        t = int(time.time())
        if t != self.second:
            self.value = http.datetimeToString(t)
            self.second = t
        return self.value


class LeanRequest(server.Request):
    """A ``server.Request`` with a short path for a leaf root resource (see the module docstring).

    Differences a caller could notice: ``args``, ``postpath`` and ``host`` are computed on first
    use; twisted's default ``Server: TwistedWeb/…`` header is not added (every response of the
    redirector sets its own ``Server`` or, like Go's 400/301, none).
    """

    _dates = _DateCache()  # one per process; only ever touched from the reactor thread

    def __init__(self, channel: Any, *args: Any, **kw: Any) -> None:
        # http.Request.__init__ without the getsockname() for ``host`` (see the ``host`` property),
        # and Componentized.__init__.
        self.notifications = []
        self.channel = channel
        self.client = channel.getPeer()
        self.requestHeaders = Headers()
        self.received_cookies = {}
        self.responseHeaders = Headers()
        self.cookies = []
        self.transport = channel.transport
        self.queued = False
        self._parsePOSTFormSubmission = channel.site._parsePOSTFormSubmission
        self._adapterCache = {}

    # -- lazily computed attributes ------------------------------------------------------------

    @property  # type: ignore[override]
    def host(self) -> Any:
        h = self.__dict__.get("_host")
        if h is None:
            h = self.__dict__["_host"] = self.transport.getHost()  # type: ignore[union-attr]
        return h

    @host.setter
    def host(self, value: Any) -> None:
        self.__dict__["_host"] = value

    @property  # type: ignore[override]
    def args(self) -> Any:
        a = self.__dict__.get("_args")
        if a is None:
            uri = self.uri
            q = uri.find(b"?")
            a = self.__dict__["_args"] = parse_qs(uri[q + 1:], 1) if q >= 0 else {}
        return a

    @args.setter
    def args(self, value: Any) -> None:
        self.__dict__["_args"] = value

    @property  # type: ignore[override]
    def postpath(self) -> Any:
        p = self.__dict__.get("_postpath")
        if p is None and self.path is not None:
            p = self.__dict__["_postpath"] = list(map(unquote_to_bytes, self.path[1:].split(b"/")))
        return p

    @postpath.setter
    def postpath(self, value: Any) -> None:
        self.__dict__["_postpath"] = value

    # -- request side --------------------------------------------------------------------------

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        """As twisted's, minus the eager query parsing (``args`` is lazy); POST goes the old way
        (form bodies are merged into ``args`` there)."""
        if command == b"POST":
            server.Request.requestReceived(self, command, path, version)
            return
        self.content.seek(0, 0)  # type: ignore[union-attr]
        self.method = command
        self.uri = path
        self.clientproto = version
        q = path.find(b"?")
        self.path = path if q < 0 else path[:q]
        self.process()

    def process(self) -> None:
        site = self.site = self.channel.site  # type: ignore[attr-defined]
        root = site.resource
        if not getattr(root, "isLeaf", False) or self.path == b"*":
            server.Request.process(self)
            return
        self.responseHeaders._rawHeaders[b"Date"] = [self._dates.now()]
        self.prepath = []
        self.sitepath: list[bytes] = []
        try:
            self._render_leaf(root)
        except BaseException:
            from twisted.python import failure

            self.processingFailed(failure.Failure())

    def _render_leaf(self, root: Any) -> None:
        body = root.render(self)
        if body is server.NOT_DONE_YET:
            return
        if (not isinstance(body, bytes) or self._disconnected or self.cookies
                or self.etag is not None or self.lastModified is not None
                or self._encoder is not None):
            self._finish_like_twisted(body, root)
            return
        self._write_whole(body)

    def _finish_like_twisted(self, body: Any, root: Any) -> None:
        """What ``server.Request.render`` does with a returned body."""
        if not isinstance(body, bytes):
            body = resource._UnsafeErrorPage(  # type: ignore[attr-defined]
                http.INTERNAL_SERVER_ERROR, "Request did not return bytes", "").render(self)
        if self.method == b"HEAD":
            if body:
                self.setHeader(b"Content-Length", b"%d" % (len(body),))
            self.write(b"")
        else:
            self.setHeader(b"Content-Length", b"%d" % (len(body),))
            self.write(body)
        self.finish()

    def _write_whole(self, body: bytes) -> None:
        """Status line, headers and body in one transport write, then twisted's finish steps.

        Same bytes as twisted's ``render``/``write``/``finish`` chain: ``Content-Length`` for a
        non-HEAD answer (HEAD: only when a body was produced; so never chunked), the default
        ``Content-Type`` when none is set and the length is not 0, no body for HEAD, 204 and 304.
        """
        raw = self.responseHeaders._rawHeaders
        code = self.code
        head = self.method == b"HEAD"
        if not head or body:
            raw[b"Content-Length"] = [b"%d" % len(body)]
        if (code not in _NO_BODY and b"Content-Type" not in raw and self.defaultContentType is not None
                and raw.get(b"Content-Length", (None,))[0] != b"0"):
            raw[b"Content-Type"] = [self.defaultContentType]
        parts = [self.clientproto, b" %d " % code, self.code_message, b"\r\n"]
        for name, values in raw.items():
            for value in values:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        if body and not head and code not in http.NO_BODY_CODES:
            parts.append(body)
            self.sentLength = len(body)
        self.startedWriting = 1
        self.channel.transport.write(b"".join(parts))  # type: ignore[union-attr]
        factory = getattr(self.channel, "factory", None)
        if factory is not None:
            factory.log(self)
        self.finished = 1
        self._cleanup()


class _Site(server.Site):
    """No per-request access log: the Go original writes none (its download log is separate), and
    formatting one line per request costs ~15% of a redirect's CPU time."""

    requestFactory = LeanRequest

    def log(self, request: Any) -> None:
        pass


def make_site(app: Any) -> server.Site:
    root = app.get_web_root() if hasattr(app, "get_web_root") else NotFoundRoot()
    site = _Site(root)
    site.displayTracebacks = False
    return site
