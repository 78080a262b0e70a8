"""``?stats``: per-file download counters as JSON.

A fix over Go: Go reads the counters under the raw request path and with the server's local
date, while they are written under the sanitised (symlink-resolved) path and the UTC date, so
through a symlink, or around midnight on a non-UTC host, it answers 0.  Here the read uses the
sanitised path (the raw path when it no longer exists on disk, as Go would) and the UTC date, so it
agrees with what was written.  Everything else (period syntax, key names, JSON text, status codes,
headers) is Go's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.web.server import Request

from mirrorbits.gocompat import go_json_marshal, parse_go_int
from mirrorbits.redis import schema
from mirrorbits.web.paths import PathError, sanitize_path
from mirrorbits.web.render import plain_error

if TYPE_CHECKING:
    from mirrorbits.redis.connection import RedisClient

__all__ = ["parse_period", "render_file_stats", "reply_int", "stats_path"]

def _go_parse_int(s: str) -> bool:
    """Whether ``strconv.ParseInt(s, 10, 0)`` accepts ``s`` (sign allowed, 64-bit range)."""
    try:
        parse_go_int(s)
    except ValueError:
        return False
    return True


def parse_period(value: str) -> list[str] | None:
    """Go's ``strings.SplitN(v, "-", 3)`` with every non-empty part a base-10 integer; None when
    the period is invalid."""
    parts = value.split("-", 2)
    for p in parts:
        if p and not _go_parse_int(p):
            return None
    return parts


def stats_path(repository: str, url_path: str) -> str:
    """The hash field to read: the sanitised path, or the raw path when it cannot be sanitised."""
    try:
        return sanitize_path(repository, url_path)
    except PathError:
        return url_path


def reply_int(v: object) -> int:
    """A counter from a Redis reply: a missing field, an error or a non-number is 0."""
    if not isinstance(v, (int, str, bytes)) or v == "":
        return 0
    try:
        return int(v)
    except ValueError:
        return 0


async def render_file_stats(request: Request, redis: RedisClient, repository: str, url_path: str,
                            query: dict[str, list[str]],
                            clock: Callable[[], float] = time.time) -> bytes:
    """Answer a FILESTATS request: set the status on ``request`` and return the body.

    ``query`` is the request's parsed query."""
    values = query.get("stats") or [""]
    raw = values[0]
    parts = parse_period(raw)
    if parts is None:
        return plain_error(request, 400, "Invalid period")
    path = stats_path(repository, url_path)
    try:
        if not parts[0]:
            t = time.gmtime(clock())
            y, m, d = t.tm_year, t.tm_mon, t.tm_mday
            keys = (schema.stats_file_key(y, m, d), schema.stats_file_key(y, m),
                    schema.stats_file_key(y), schema.stats_file_key())
            replies = await redis.transaction([("HGET", k, path) for k in keys])
            for r in replies:
                if isinstance(r, Exception):
                    raise r
            n = [reply_int(r) for r in replies] + [0] * (4 - len(replies))
            doc: dict[str, object] = {"Today": n[0], "Month": n[1], "Year": n[2], "Total": n[3]}
        else:
            key = schema.stats_file_key() + "_" + "_".join(parts)
            reply = await redis.execute("HGET", key, path)
            doc = {"Period": raw, "Downloads": reply_int(reply)}
    except Exception as e:
        return plain_error(request, 500, str(e) or e.__class__.__name__)
    # Go sets no Content-Type: its sniffer answers text/plain for JSON text.
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return go_json_marshal(doc, "    ").encode("utf-8", "surrogateescape")
