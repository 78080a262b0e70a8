"""The trace file: a timestamp a mirror publishes, stored as ``lastModTime``.

Fetched at the start of each scan attempt, with ``GET <base>/<TraceFileLocation>``.  Only the first
whitespace-delimited token of the body (at most 64 KiB) is read; the connection is dropped after
that, so a mirror answering with a huge page costs us nothing.
"""

from __future__ import annotations

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from mirrorbits.httpclient import HttpClient, describe_error, user_agent
from mirrorbits.model import Mirror
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient

log = Logger(namespace="mirrorbits.scan.trace")

#: Go's bufio.Scanner limit for one token.
MAX_TOKEN = 64 * 1024
#: The trace fetch follows this many redirects (Go's http.Client default).
TRACE_MAX_REDIRECTS = 10
_GO_SPACE = b" \t\n\v\f\r"


def trace_url(mirror: Mirror, location: str) -> str:
    """Base (``http`` with its scheme, else https when ``httpsUp``, else http) joined with exactly
    one ``/`` to ``TraceFileLocation``."""
    base = mirror.http_url
    if not base.startswith(("http://", "https://")):
        base = ("https://" if mirror.https_up else "http://") + base
    if base.endswith("/") and location.startswith("/"):
        return base + location[1:]
    if not base.endswith("/") and not location.startswith("/"):
        return base + "/" + location
    return base + location


def first_token(body: bytes) -> bytes | None:
    """The first whitespace-delimited token, or None when the body holds none (or it is too long)."""
    start = 0
    while start < len(body) and body[start] in _GO_SPACE:
        start += 1
    end = start
    while end < len(body) and body[end] not in _GO_SPACE:
        end += 1
    if end == start or end - start > MAX_TOKEN:
        return None
    return body[start:end]


def parse_trace(token: bytes) -> int | None:
    """Go's ``strconv.ParseInt(token, 10, 64)``; None when not a number or out of range."""
    text = token.decode("utf-8", "replace")
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        raise ValueError(text)
    value = int(text)
    if not -(1 << 63) <= value < (1 << 63):
        return None
    return value


class _TokenReader(protocol.Protocol):
    """Collects the body until the first token is complete (or 64 KiB + 1 bytes), then hangs up."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.done.called:
            return
        self.data += data
        stripped = bytes(self.data).lstrip(_GO_SPACE)
        if len(self.data) > MAX_TOKEN + 1 or any(c in _GO_SPACE for c in stripped):
            self.done.callback(bytes(self.data))
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        if not self.done.called:
            self.done.callback(bytes(self.data))


async def _read_token(response: IResponse) -> bytes:
    reader = _TokenReader()
    response.deliverBody(reader)
    return await reader.done


async def fetch_trace(redis: RedisClient, client: HttpClient, mirror: Mirror, location: str) -> int | None:
    """Fetch the trace file and store it; returns the stored value (None if nothing was stored).

    Never raises (except cancellation): failures are logged as in Go.
    """
    if not location:
        return None
    url = trace_url(mirror, location)
    try:
        _, body = await client.request("GET", url, user_agent("TRACE"),
                                       allow_redirect=lambda src, dst: True,
                                       max_redirects=TRACE_MAX_REDIRECTS, read_body=_read_token)
    except defer.CancelledError:
        raise
    except Exception as e:
        log.warn("[{name}] fetching trace file failed: {err}", name=mirror.name, err=describe_error(e))
        return None
    token = first_token(body)
    try:
        value = parse_trace(token if token is not None else b"")
    except ValueError:
        shown = (token or b"").decode("utf-8", "replace")
        log.warn('[{name}] parsing trace file failed: "{token}" is not a valid timestamp',
                 name=mirror.name, token=shown)
        return None
    if value is None:
        return None  # out of range: ignored silently, as in Go
    try:
        await redis.execute("HSET", schema.mirror_key(mirror.id), "lastModTime", str(value))
        await redis.publish(schema.CHANNEL_MIRROR_UPDATE, str(mirror.id))
    except Exception as e:
        log.warn("[{name}] storing the trace file failed: {err}", name=mirror.name, err=e)
        return None
    return value

