"""The one place that knows how txredisapi behaves (checked by ``tests/redis/test_txcompat.py``).

Redis is spoken through txredisapi: :class:`mirrorbits.redis.protocol.RedisProtocol` is a subclass
of its ``BaseRedisProtocol``; txredisapi encodes and writes every command (``execute_command``) and
hands each reply to the caller through its reply queue (``replyReceived`` -> ``replyQueue`` ->
``handle_reply``).  Only txredisapi's reply *parser* is replaced (``dataReceived``, Twisted's public
hook): it pauses and goes back through the reactor after every bulk string, ~40 us per element, i.e.
4.3 s for one 100,000-member SMEMBERS against 0.27 s for :class:`~mirrorbits.redis.protocol.
RespReplyParser` (measured; see ``bench/README.md``).

Everything used here is a public name of txredisapi or Twisted; what the rest of the package relies
on is their *behaviour*, which the canary test pins, and the txredisapi requirement in ``setup.cfg``
is bounded to the releases that test passed on:

* ``BaseRedisProtocol(charset=, errors=, convertNumbers=)`` decodes nothing we feed it and encodes
  ``str`` arguments with the given charset and error handler;
* ``replyReceived(reply)`` puts the reply into ``replyQueue``, a ``DeferredQueue`` whose ``waiting``
  holds one Deferred per expected reply, in order;
* ``execute_command(*args)`` while ``pipelining`` is true appends the encoded command to
  ``pipelined_commands`` and its result Deferred to ``pipelined_replies`` instead of writing it; the
  result Deferred fires with ``handle_reply(reply)``;
* ``connectionLost`` clears ``connected`` and puts a ``txredisapi.ConnectionError`` into every
  waiting slot; ``whenDisconnected()`` fires on ``connectionLost``.

txredisapi's own MULTI (``multi()``) reserves the connection for one caller until EXEC; the client
multiplexes every caller on one connection, so a transaction is MULTI, its commands and EXEC written
through ``execute_command`` in one piece, which Redis runs atomically all the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import txredisapi
from twisted.internet import defer

__all__ = ["BaseRedisProtocol", "LostConnection", "ReplyQueue", "TESTED_VERSIONS", "VERSION",
           "extra_reply", "write_pipelined"]

#: The releases the canary test passed on (``setup.cfg`` pins the same range).
TESTED_VERSIONS = ("1.4.10", "1.6.0")
VERSION: str = txredisapi.__version__

#: The base class of our protocol (untyped: txredisapi has no annotations).
BaseRedisProtocol = txredisapi.BaseRedisProtocol
#: What a waiting reply slot receives when its connection is lost.
LostConnection: type[Exception] = txredisapi.ConnectionError

#: An argument txredisapi encodes as we need it: ``str`` with the protocol's charset, ``bytes`` as is,
#: ``int`` in decimal (a ``float`` would be written with six decimals, not as Go writes it).
Arg: TypeAlias = "str | bytes | int"


class ReplyQueue(txredisapi.ReplyQueue):  # type: ignore[misc]
    """txredisapi's reply queue with a ``deque`` for the waiting slots: ``DeferredQueue`` pops them
    from the front of a list, which makes a pipeline of 20,000 commands quadratic.  A reply nobody
    waits for is a protocol error (the connection is dropped), not a reply for the next command."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: deque[defer.Deferred[object]] = deque()

    def put(self, obj: object) -> None:
        if not self.waiting:
            raise ValueError("a reply nobody asked for")
        self.waiting.popleft().callback(obj)


def write_pipelined(proto: txredisapi.BaseRedisProtocol,
                    commands: Iterable[Sequence[Arg]]) -> list[defer.Deferred[object]]:
    """Encode ``commands`` with txredisapi and write them in one piece; their result Deferreds, in
    order (each fires with ``proto.handle_reply(reply)``).  Raises ValueError, having written
    nothing, when an argument cannot be encoded."""
    proto.pipelining = True
    proto.pipelined_commands = []
    proto.pipelined_replies = []
    try:
        execute = proto.execute_command
        try:
            for command in commands:
                execute(*command)
        except BaseException as e:
            # Nothing was written: take the slots of the encoded commands back out of the queue.
            for _ in proto.pipelined_replies:
                proto.replyQueue.waiting.pop()
            if isinstance(e, txredisapi.InvalidData):  # text that is not encodable (a lone surrogate)
                raise ValueError(str(e)) from e
            raise
        written: list[bytes] = proto.pipelined_commands
        results: list[defer.Deferred[object]] = proto.pipelined_replies
    finally:
        proto.pipelining = False
        proto.pipelined_commands = []
        proto.pipelined_replies = []
    proto.transport.write(b"".join(written))
    return results


def extra_reply(proto: txredisapi.BaseRedisProtocol) -> defer.Deferred[object]:
    """One more reply slot in ``proto``'s queue (SUBSCRIBE answers once per channel)."""
    slot: defer.Deferred[object] = proto.replyQueue.get()
    return slot
