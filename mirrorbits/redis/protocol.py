"""The Redis wire protocol (RESP2) through txredisapi, with the one fast reply parser.

Every connection of the daemon (commands, pipelines, the redirector view's bulk reads, pub/sub, the
sentinels, the embedded server's probes) is a :class:`RedisProtocol`: txredisapi's protocol
(:mod:`mirrorbits.redis.txcompat` says what of it is relied on) with our reply parser.  It is
written for bulk reads:

* :class:`RespReplyParser` parses everything that has arrived in one pass, keeps its state across TCP
  reads (nested arrays on an explicit stack, no recursion, no reactor turn per element) and hands
  each complete reply to txredisapi's ``replyReceived`` — txredisapi's own parser spends a reactor
  iteration per bulk string, 4 s for one 100,000-member SMEMBERS;
* a request (one command or a pipeline of thousands) is encoded by txredisapi and written in one
  piece, and completes one Deferred, not one per command;
* every request has a deadline: when Redis does not answer in time (paused, hung, overloaded) the
  caller gets :class:`~mirrorbits.redis.errors.CommandTimeout` and the late reply, should it come, is
  read and dropped, so the connection stays in step for the requests queued behind it.

Bulk strings are decoded as UTF-8 with ``surrogateescape`` (and arguments encoded so): non-UTF-8 file
names round-trip byte-exactly between the file system, Redis and Go nodes.  Numbers in bulk strings
stay strings (Go stores them as text, and comparisons of records are textual).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias, cast

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.reactor import IDaemonReactor
from mirrorbits.redis import txcompat
from mirrorbits.redis.errors import CommandTimeout, ResponseError, Unreachable

log = Logger(namespace="mirrorbits.redis")

#: A decoded reply: bulk and status strings as ``str``, integers, nil as None, arrays as lists and
#: error replies as :class:`ResponseError` values (inside pipelines and EXEC they are data).
Reply: TypeAlias = "str | int | None | ResponseError | list[Reply]"
#: A command argument: text is encoded as UTF-8 with ``surrogateescape``, integers in decimal.
Arg: TypeAlias = txcompat.Arg
Command: TypeAlias = Sequence[Arg]

#: The Go original dials with a 200 ms connect timeout; loopback and LAN Redis answer far faster, and
#: a short timeout keeps requests from stalling while Redis is away.
CONNECT_TIMEOUT = 0.2


class RespReplyParser:
    """Incremental RESP2 reply parser: :meth:`feed` bytes as they arrive, complete replies go to
    ``deliver`` in order.  Raises ValueError on bytes that are not RESP (the caller drops the
    connection)."""

    __slots__ = ("deliver", "_buf", "_stack")

    def __init__(self, deliver: Callable[[Reply], None]) -> None:
        self.deliver = deliver
        self._buf = bytearray()
        #: One ``[items, remaining]`` per array still open.
        self._stack: list[tuple[list[Reply], list[int]]] = []

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        stack = self._stack
        deliver = self.deliver
        value: Reply
        try:
            while pos < n:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                kind = buf[pos]
                if kind == 36:  # $ bulk string
                    length = int(buf[pos + 1:nl])
                    if length < 0:
                        value = None
                        pos = nl + 2
                    else:
                        end = nl + 2 + length
                        if end + 2 > n:
                            break
                        value = buf[nl + 2:end].decode("utf-8", "surrogateescape")
                        pos = end + 2
                elif kind == 42:  # * array
                    count = int(buf[pos + 1:nl])
                    pos = nl + 2
                    if count > 0:
                        stack.append(([], [count]))
                        continue
                    value = [] if count == 0 else None
                elif kind == 58:  # : integer
                    value = int(buf[pos + 1:nl])
                    pos = nl + 2
                elif kind == 43:  # + status
                    value = buf[pos + 1:nl].decode("utf-8", "surrogateescape")
                    pos = nl + 2
                elif kind == 45:  # - error
                    text = buf[pos + 1:nl].decode("utf-8", "replace")
                    value = ResponseError(text[4:] if text[:4] == "ERR " else text)
                    pos = nl + 2
                else:
                    raise ValueError(f"unexpected RESP type byte {kind!r}")
                while stack:
                    items, remaining = stack[-1]
                    items.append(value)
                    remaining[0] -= 1
                    if remaining[0]:
                        break
                    stack.pop()
                    value = items
                else:
                    deliver(value)
        finally:
            del buf[:pos]


class _Request:
    """The reply slots of one request in txredisapi's queue.  Replies come in order, so when the
    last slot fires, every slot holds its reply (``Deferred.result``: the slots have no callbacks of
    their own) — one callback per request instead of one per reply."""

    __slots__ = ("slots", "done", "deadline")

    def __init__(self, slots: list[defer.Deferred[object]]) -> None:
        self.slots = slots
        self.done: defer.Deferred[list[Reply]] = defer.Deferred()
        self.deadline: IDelayedCall | None = None

    def complete(self, last: object) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        if self.done.called:  # it timed out or was cancelled: the replies are dropped
            return
        if isinstance(last, txcompat.LostConnection):  # every slot after the first lost one has it
            self.fail(Unreachable(f"Redis connection lost: {last}"))
            return
        # What RespReplyParser delivered, through handle_reply, which passes it on as it is.
        replies = cast("list[Reply]", [slot.result for slot in self.slots])
        self.done.callback(replies)

    def fail(self, error: Exception) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        if not self.done.called:
            self.done.errback(Failure(error))


class RedisProtocol(txcompat.BaseRedisProtocol):  # type: ignore[misc]
    """One Redis connection: txredisapi's protocol fed by :class:`RespReplyParser`; requests are
    written whole and answered in order.

    Once subscribed (:meth:`subscribe`), ``message`` pushes go to :attr:`on_message` and only the
    subscription confirmations are replies.
    """

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__(charset="utf-8", errors="surrogateescape", convertNumbers=False)
        self.clock = clock
        self.replyQueue = txcompat.ReplyQueue()
        self.parser = RespReplyParser(self.replyReceived)
        self.subscribed = False
        self.on_message: Callable[[str, str], None] | None = None
        #: When (``clock.seconds()``) the last bytes arrived, and when the connection last went
        #: from no request waiting to one: together, how long it has owed a reply in silence.
        self.last_received = clock.seconds()
        self._busy_since = 0.0
        self._waiting = 0

    # -- Twisted's and txredisapi's side ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.last_received = self.clock.seconds()
        try:
            self.parser.feed(data)
        except ValueError as e:  # not RESP, or a reply nobody asked for
            log.error("Redis protocol error: {e}", e=e)
            self.abort()

    def replyReceived(self, reply: Reply) -> None:  # noqa: N802 - txredisapi's name
        if self.subscribed and type(reply) is list and reply and reply[0] in ("message", "pmessage"):
            if self.on_message is not None:
                channel, message = reply[-2], reply[-1]
                self.on_message(str(channel), str(message))
            return
        super().replyReceived(reply)

    @staticmethod
    def handle_reply(reply: Reply) -> Reply:
        """Error replies are values (a pipeline or EXEC carries them per command); :meth:`execute`
        raises them."""
        return reply

    # -- ours ---------------------------------------------------------------------------------

    def request(self, commands: Iterable[Command], timeout: float | None,
                replies: int | None = None) -> defer.Deferred[list[Reply]]:
        """Write ``commands`` in one piece; the Deferred fires with their replies in order (error
        replies as values), or fails with :class:`CommandTimeout` after ``timeout`` seconds or with
        :class:`Unreachable` when the connection is lost.  ``replies`` overrides the count of replies
        expected (SUBSCRIBE answers once per channel)."""
        if not self.usable:
            return defer.fail(Unreachable("Not connected"))
        slots = txcompat.write_pipelined(self, commands)
        if replies is not None:
            slots.extend(txcompat.extra_reply(self) for _ in range(replies - len(slots)))
        if not slots:
            return defer.succeed([])
        req = _Request(slots)
        if not self._waiting:
            self._busy_since = self.clock.seconds()
        self._waiting += 1
        slots[-1].addBoth(self._answered)
        if timeout is not None:
            req.deadline = self.clock.callLater(timeout, req.fail, CommandTimeout(
                f"Redis did not answer within {timeout:g} s"))
        slots[-1].addCallback(req.complete)
        return req.done

    def _answered(self, result: object) -> object:
        self._waiting -= 1
        return result

    def silent_for(self) -> float:
        """Seconds this connection has owed a reply without receiving a byte (0: it owes none).
        A request that timed out still owes its reply: the late reply arrives on a live link."""
        if not self._waiting:
            return 0.0
        return self.clock.seconds() - max(self.last_received, self._busy_since)

    async def execute(self, *args: Arg, timeout: float | None) -> Reply:
        """One command; an error reply raises :class:`ResponseError`."""
        (reply,) = await self.request([args], timeout)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def subscribe(self, channels: Sequence[str], timeout: float | None) -> None:
        """Enter subscriber mode on ``channels``; messages then go to :attr:`on_message`."""
        self.subscribed = True
        for reply in await self.request([("SUBSCRIBE", *channels)], timeout, replies=len(channels)):
            if isinstance(reply, ResponseError):
                raise reply

    def when_lost(self) -> defer.Deferred[None]:
        """Fires once the connection is closed (at once if it is already)."""
        if not self.connected:
            return defer.succeed(None)
        lost: defer.Deferred[object] = self.whenDisconnected()
        return lost.addCallback(lambda _: None)

    @property
    def usable(self) -> bool:
        return bool(self.connected and self.transport is not None
                    and not getattr(self.transport, "disconnecting", False))

    def close(self) -> None:
        """Close gently: what was written is still sent."""
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Close at once; waiting requests fail with :class:`Unreachable`."""
        if self.transport is not None:
            self.transport.abortConnection()


def parse_address(address: str) -> tuple[str, str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or ``unix:/path`` -> (kind, host-or-path, port)."""
    if address.startswith("unix:"):
        return ("unix", address[5:], 0)
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"invalid Redis address {address!r} (expected host:port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port_n = int(port)
    except ValueError:
        raise ValueError(f"invalid Redis address {address!r} (bad port)") from None
    return ("tcp", host or "127.0.0.1", port_n)


async def connect(reactor: IDaemonReactor, address: str,
                  timeout: float = CONNECT_TIMEOUT) -> RedisProtocol:
    """A new connection to ``address`` (see :func:`parse_address`)."""
    kind, host, port = parse_address(address)
    endpoint: IStreamClientEndpoint
    if kind == "unix":
        endpoint = UNIXClientEndpoint(reactor, host, timeout=max(timeout, 1.0))
    elif ":" in host:
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    else:
        # Names (localhost...) resolve through the reactor; IP literals stay literal.
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    proto = RedisProtocol(reactor)
    await endpoint.connect(_OneConnection(proto))
    return proto


class _OneConnection(protocol.Factory):
    """Hands out one protocol instance, quietly: every dial (commands, subscriptions, sentinel
    questions, the embedded server's probes) would otherwise log "Starting factory"."""

    noisy = False

    def __init__(self, proto: RedisProtocol) -> None:
        self.proto = proto

    def buildProtocol(self, addr: IAddress | None) -> RedisProtocol:  # noqa: N802 - Twisted's name
        return self.proto
