"""The RESP layer (mirrorbits.redis.protocol): the reply parser on split and nested input, command
encoding by txredisapi, request deadlines on a fake clock, and deadlines against a real redis-server
paused by ``CLIENT PAUSE``."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from mirrorbits.redis.connection import CommandTimeout, RedisUnavailable, ResponseError
from mirrorbits.redis.protocol import RedisProtocol, Reply, RespReplyParser
from mirrorbits.redis.replies import as_int, as_list, as_str, as_str_list, hash_dict
from tests.fixtures.trial import RedisClassTestCase, eventually, run

NESTED = b"*3\r\n*2\r\n$1\r\na\r\n:12\r\n$-1\r\n*0\r\n+OK\r\n-ERR unknown command\r\n*-1\r\n"


def parse(chunks: list[bytes]) -> list[Reply]:
    out: list[Reply] = []
    parser = RespReplyParser(out.append)
    for chunk in chunks:
        parser.feed(chunk)
    return out


class ParserTests(unittest.SynchronousTestCase):
    def check_nested(self, replies: list[Reply]) -> None:
        self.assertEqual(replies[0], [["a", 12], None, []])
        self.assertEqual(replies[1], "OK")
        self.assertIsInstance(replies[2], ResponseError)
        self.assertEqual(str(replies[2]), "unknown command")  # "ERR " dropped, as Redis clients do
        self.assertIsNone(replies[3])
        self.assertEqual(len(replies), 4)

    def test_whole_and_byte_by_byte(self) -> None:
        self.check_nested(parse([NESTED]))
        self.check_nested(parse([NESTED[i:i + 1] for i in range(len(NESTED))]))

    def test_bulk_split_inside_crlf_and_binary(self) -> None:
        data = b"$5\r\nab\r\nc\r\n$3\r\n\xe9\x00z\r\n"
        self.assertEqual(parse([data[:7], data[7:8], data[8:]]),
                         ["ab\r\nc", "\udce9\x00z"])

    def test_other_errors_keep_their_code(self) -> None:
        (err,) = parse([b"-WRONGTYPE Operation against a key\r\n"])
        self.assertEqual(str(err), "WRONGTYPE Operation against a key")

    def test_garbage_raises(self) -> None:
        with self.assertRaises(ValueError):
            parse([b"?what\r\n"])


class RepliesTests(unittest.SynchronousTestCase):
    def test_typed_readings(self) -> None:
        self.assertEqual(hash_dict(["a", "1", "b", "2"]), {"a": "1", "b": "2"})
        self.assertEqual(hash_dict(None), {})
        self.assertEqual(as_int("42"), 42)
        self.assertEqual(as_int(None), 0)
        self.assertEqual(as_str(7), "7")
        self.assertEqual(as_str_list(["x", None]), ["x", ""])
        self.assertEqual(as_list(None), [])
        with self.assertRaises(ResponseError):
            hash_dict(ResponseError("WRONGTYPE"))
        with self.assertRaises(ValueError):
            as_list("text")


class DeadlineOnClockTests(unittest.SynchronousTestCase):
    """The deadline itself, on a fake clock: the caller fails in time, and the late reply is
    consumed by the request it belonged to, so the next request gets its own."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.proto = RedisProtocol(self.clock)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def test_timeout_then_late_reply_is_dropped(self) -> None:
        first = self.proto.request([("GET", "a")], timeout=2.0)
        second = self.proto.request([("GET", "b"), ("GET", "c")], timeout=5.0)
        self.assertEqual(self.transport.value(), b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
                         b"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n*2\r\n$3\r\nGET\r\n$1\r\nc\r\n")
        self.clock.advance(1.9)
        self.assertNoResult(first)
        self.clock.advance(0.2)
        self.failureResultOf(first, CommandTimeout)
        self.assertNoResult(second)
        self.proto.dataReceived(b"$1\r\nA\r\n$1\r\nB\r\n")
        self.assertNoResult(second)
        self.proto.dataReceived(b"$1\r\nC\r\n")
        self.assertEqual(self.successResultOf(second), ["B", "C"])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # the answered request's timer is gone

    def test_cancelled_request_keeps_the_queue_in_step(self) -> None:
        first = self.proto.request([("GET", "a")], timeout=2.0)
        second = self.proto.request([("GET", "b")], timeout=2.0)
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.proto.dataReceived(b"$1\r\nA\r\n$1\r\nB\r\n")
        self.assertEqual(self.successResultOf(second), ["B"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_encoding_is_byte_exact(self) -> None:
        """Non-UTF-8 bytes, surrogate-escaped text and integers are written as Go writes them."""
        self.proto.request([("SET", b"k\xff", 12, "\udce9")], timeout=None)
        self.assertEqual(self.transport.value(),
                         b"*4\r\n$3\r\nSET\r\n$2\r\nk\xff\r\n$2\r\n12\r\n$1\r\n\xe9\r\n")

    def test_unencodable_argument_leaves_the_queue_in_step(self) -> None:
        """A command txredisapi cannot encode fails alone: nothing is written, no slot is left."""
        with self.assertRaises(ValueError):
            self.proto.request([("GET", "a"), ("GET", "\ud800")], timeout=1.0)
        self.assertEqual(self.transport.value(), b"")
        d = self.proto.request([("GET", "b")], timeout=1.0)
        self.proto.dataReceived(b"$1\r\nB\r\n")
        self.assertEqual(self.successResultOf(d), ["B"])

    def test_error_replies_are_values_in_a_pipeline(self) -> None:
        d = self.proto.request([("GET", "a"), ("INCR", "s")], timeout=1.0)
        self.proto.dataReceived(b"$1\r\nA\r\n-ERR value is not an integer\r\n")
        a, err = self.successResultOf(d)
        self.assertEqual(a, "A")
        self.assertIsInstance(err, ResponseError)

    def test_unsolicited_reply_drops_the_connection(self) -> None:
        self.proto.dataReceived(b"+OK\r\n")
        self.assertTrue(self.transport.disconnecting)

    def test_connection_lost_fails_waiters(self) -> None:
        d = self.proto.request([("PING",)], timeout=None)
        self.proto.connectionLost(Failure(ConnectionResetError()))
        self.failureResultOf(d, RedisUnavailable)
        self.successResultOf(self.proto.when_lost())
        self.failureResultOf(self.proto.request([("PING",)], timeout=None), RedisUnavailable)

    def test_subscriber_messages_are_not_replies(self) -> None:
        got: list[tuple[str, str]] = []
        self.proto.on_message = lambda c, m: got.append((c, m))
        d = defer.Deferred.fromCoroutine(self.proto.subscribe(["x", "y"], timeout=1.0))
        self.proto.dataReceived(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n"
                                b"*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$2\r\nhi\r\n"
                                b"*3\r\n$9\r\nsubscribe\r\n$1\r\ny\r\n:2\r\n")
        self.successResultOf(d)
        self.assertEqual(got, [("x", "hi")])


class PausedServerTests(RedisClassTestCase):
    """A real server that stops answering (``CLIENT PAUSE``): commands fail at their deadline, and
    the connection answers correctly once the server is back."""

    timeout = 30

    def test_deadline_on_a_paused_server(self) -> defer.Deferred[None]:
        client = self.new_client()

        async def go() -> None:
            await client.execute("SET", "a", "1")
            await client.execute("SET", "b", "2")
            self.server.client().client_pause(1500)
            with self.assertRaises(CommandTimeout):
                await client.execute("GET", "a", timeout=0.3)
            # Queued behind the late reply of "GET a": must get its own reply when Redis resumes.
            self.assertEqual(await client.execute("GET", "b"), "2")
            self.assertFalse(client.failing)

        return run(go())

    def test_dials_are_quiet(self) -> defer.Deferred[None]:
        """Every connection of the client would log "Starting factory" with a noisy factory."""
        events: list[str] = []

        def observer(event: dict[str, object]) -> None:
            events.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        client = self.new_client()

        async def go() -> None:
            await client.execute("PING")
            sub = client.subscribe(["chan"], lambda c, m: None)
            self.addCleanup(sub.stop)
            await eventually(lambda: sub.subscribed)
            self.assertEqual([e for e in events if "factory" in e.lower()], [])

        return run(go())
