"""The HTTP front: a ``twisted.web`` Site whose root resource dispatches every request.

Until the redirector is wired in, every path answers the Go-style plain ``404 Not Found``.
"""

from __future__ import annotations

from typing import Any

from twisted.web import resource, server

from mirrorbits import VERSION


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


class _Site(server.Site):
    """No per-request access log: the Go original writes none (its download log is separate), and
    formatting one line per request costs ~15% of a redirect's CPU time."""

    def log(self, request: Any) -> None:
        pass


def make_site(app: Any) -> server.Site:
    root = app.get_web_root() if hasattr(app, "get_web_root") else NotFoundRoot()
    site = _Site(root)
    site.displayTracebacks = False
    return site
