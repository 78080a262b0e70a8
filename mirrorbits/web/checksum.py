"""``?md5`` / ``?sha1`` / ``?sha256``: the file's digest as plain text.

Scripts fetch ``<file>?sha256`` and compare it with ``sha256sum`` output, so the body is exactly
``<hex>␠␠<basename>`` with no newline, and the status rules are Go's (including its quirk: the
first present parameter in md5 → sha1 → sha256 order decides, even when that digest is empty).
"""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.web.server import Request

from mirrorbits.model import FileInfo
from mirrorbits.redis import schema
from mirrorbits.redis.replies import as_str_list
from mirrorbits.web.paths import PathError, sanitize_path
from mirrorbits.web.render import plain_error

if TYPE_CHECKING:
    from mirrorbits.cache import MirrorView
    from mirrorbits.redis.connection import RedisClient

__all__ = ["CHECKSUM_PARAMS", "FileInfoLoader", "chosen_hash", "render_checksum"]

log = Logger(namespace="mirrorbits.checksum")

#: In the order Go tests them.
CHECKSUM_PARAMS = ("md5", "sha1", "sha256")


class FileInfoLoader:
    """Loads the local file info of a path: from the redirector's in-memory view when it has one
    (``view_getter()`` returning a :class:`~mirrorbits.cache.MirrorView` or None), else with Go's
    ``HMGET FILE_<path> size modTime sha1 sha256 md5``.  Raises when Redis cannot answer and
    memory does not know the path."""

    def __init__(self, redis: RedisClient,
                 view_getter: Callable[[], MirrorView | None] | None = None) -> None:
        self.redis = redis
        self.view_getter = view_getter

    async def __call__(self, path: str) -> FileInfo:
        view = self.view_getter() if self.view_getter is not None else None
        if view is not None:
            entry = view.lookup(path)
            if entry is not None and entry.info is not None:
                return entry.info  # type: ignore[no-any-return]
            try:
                entry = await view.load(path)
            except Exception:
                entry = view.peek(path)
                if entry is not None and entry.info is not None:
                    return entry.info  # type: ignore[no-any-return]
                raise
            if entry is not None and entry.info is not None:
                return entry.info  # type: ignore[no-any-return]
        reply = await self.redis.execute("HMGET", schema.file_key(path), *schema.FILE_FIELDS)
        return FileInfo.from_redis(path, as_str_list(reply))


def chosen_hash(query: dict[str, list[str]]) -> str | None:
    """The first checksum parameter present (md5, sha1, sha256), or None."""
    for name in CHECKSUM_PARAMS:
        if name in query:
            return name
    return None


async def render_checksum(request: Request, repository: str, url_path: str,
                          load: Callable[[str], Awaitable[FileInfo]],
                          query: dict[str, list[str]]) -> bytes:
    """Answer a CHECKSUM request: set status and headers on ``request``, return the body.

    ``url_path`` is the percent-decoded request path; ``load`` a :class:`FileInfoLoader`;
    ``query`` the request's parsed query.
    """
    try:
        path = sanitize_path(repository, url_path)
    except PathError as e:
        return plain_error(request, e.status, e.text)
    try:
        info = await load(path)
    except Exception as e:
        log.debug("checksum: cannot load {path}: {err}", path=path, err=e)
        return plain_error(request, 503, "Service Unavailable")
    name = chosen_hash(query) or "sha256"
    digest = getattr(info, name, "")
    if not digest:
        return plain_error(request, 404, "Hash type not supported")
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"text/plain; charset=UTF-8")
    return f"{digest}  {posixpath.basename(path)}".encode("utf-8", "surrogateescape")
