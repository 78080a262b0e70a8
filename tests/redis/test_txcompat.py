"""Canary for :mod:`mirrorbits.redis.txcompat`: the txredisapi behaviour the Redis layer relies on.

Each test pins one fact the module's docstring lists, on txredisapi's own protocol class (not on our
subclass), so a txredisapi release that changes it fails here by name instead of somewhere in the
daemon.  When one fails: read the new release, adapt ``txcompat`` (and ``protocol``), then widen the
bound in ``setup.cfg`` and :data:`~mirrorbits.redis.txcompat.TESTED_VERSIONS`.
"""

from __future__ import annotations

from collections import deque

import txredisapi
from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from mirrorbits.redis import txcompat


def connected_base() -> tuple[txredisapi.BaseRedisProtocol, StringTransport]:
    proto = txcompat.BaseRedisProtocol(charset="utf-8", errors="surrogateescape", convertNumbers=False)
    proto.replyQueue = txcompat.ReplyQueue()
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


class TxredisapiCanaryTests(unittest.SynchronousTestCase):
    def test_version_is_in_the_tested_range(self) -> None:
        low, high = (version_tuple(v) for v in txcompat.TESTED_VERSIONS)
        self.assertTrue(low <= version_tuple(txcompat.VERSION) <= high,
                        f"txredisapi {txcompat.VERSION} is outside the tested {txcompat.TESTED_VERSIONS}")

    def test_connected_after_connection_made(self) -> None:
        proto, _ = connected_base()
        self.assertTrue(proto.connected)

    def test_reply_received_feeds_the_queue_in_order(self) -> None:
        proto, _ = connected_base()
        first, second = proto.replyQueue.get(), proto.replyQueue.get()
        self.assertIsInstance(proto.replyQueue.waiting, deque)
        proto.replyReceived("one")
        proto.replyReceived(["two", 2])
        self.assertEqual(self.successResultOf(first), "one")
        self.assertEqual(self.successResultOf(second), ["two", 2])

    def test_pipelining_buffers_encoded_commands_and_their_results(self) -> None:
        proto, transport = connected_base()
        proto.pipelining = True
        proto.pipelined_commands = []
        proto.pipelined_replies = []
        result = proto.execute_command("SET", b"k\xff", 12, "\udce9")
        self.assertEqual(transport.value(), b"")  # buffered, not written
        self.assertEqual(proto.pipelined_commands,
                         [b"*4\r\n$3\r\nSET\r\n$2\r\nk\xff\r\n$2\r\n12\r\n$1\r\n\xe9\r\n"])
        self.assertEqual(proto.pipelined_replies, [result])
        self.assertEqual(len(proto.replyQueue.waiting), 1)
        proto.replyReceived("OK")
        self.assertEqual(result.result, "OK")  # what txcompat's callers read after the last reply

    def test_execute_command_passes_the_reply_through_handle_reply(self) -> None:
        class Marking(txcompat.BaseRedisProtocol):  # type: ignore[misc]
            @staticmethod
            def handle_reply(reply: object) -> object:
                return ("handled", reply)

        proto = Marking(charset="utf-8", errors="surrogateescape", convertNumbers=False)
        proto.replyQueue = txcompat.ReplyQueue()
        transport = StringTransport()
        proto.makeConnection(transport)
        d = proto.execute_command("PING")
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nPING\r\n")  # not pipelining: written at once
        proto.replyReceived("PONG")
        self.assertEqual(self.successResultOf(d), ("handled", "PONG"))

    def test_connection_lost_fills_every_slot_and_clears_connected(self) -> None:
        proto, _ = connected_base()
        slots = [proto.replyQueue.get(), proto.replyQueue.get()]
        lost = proto.whenDisconnected()
        proto.connectionLost(Failure(ConnectionResetError()))
        self.assertFalse(proto.connected)
        for slot in slots:
            self.assertIsInstance(self.successResultOf(slot), txcompat.LostConnection)
        self.successResultOf(lost)

    def test_write_pipelined_writes_once_and_resets_the_state(self) -> None:
        proto, transport = connected_base()
        slots = txcompat.write_pipelined(proto, [("GET", "a"), ("GET", "b")])
        self.assertEqual(transport.value(),
                         b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n")
        self.assertFalse(proto.pipelining)
        self.assertEqual((proto.pipelined_commands, proto.pipelined_replies), ([], []))
        self.assertEqual(len(slots), 2)
        extra = txcompat.extra_reply(proto)
        for reply in ("A", "B", "C"):
            proto.replyReceived(reply)
        self.assertEqual([s.result for s in slots], ["A", "B"])
        self.assertEqual(self.successResultOf(extra), "C")

    def test_reply_queue_refuses_unasked_replies(self) -> None:
        queue = txcompat.ReplyQueue()
        with self.assertRaises(ValueError):
            queue.put("OK")
        d: defer.Deferred[object] = queue.get()
        d.cancel()  # txredisapi keeps a placeholder so later replies stay in step
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(len(queue.waiting), 1)
        queue.put("late")
        self.assertEqual(len(queue.waiting), 0)
