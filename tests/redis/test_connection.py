"""The Redis layer against real redis-server processes: commands, gate, outages, pub/sub."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from mirrorbits.redis.connection import (
    DEAD_LINK_SILENCE,
    CommandTimeout,
    NotReady,
    RedisClient,
    RedisSettings,
    RedisUnavailable,
    ResponseError,
    parse_address,
)
from tests.fixtures.redis import RedisServer
from tests.fixtures.tcpproxy import TcpProxy
from tests.fixtures.trial import sleep


async def eventually(check: Any, timeout: float = 10.0, step: float = 0.05) -> Any:
    waited = 0.0
    while True:
        try:
            result = await check() if callable(check) else check
            if result:
                return result
        except RedisUnavailable:
            pass
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await sleep(step)
        waited += step


class ParseAddressTests(unittest.SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_address("127.0.0.1:6379"), ("tcp", "127.0.0.1", 6379))
        self.assertEqual(parse_address(":6380"), ("tcp", "127.0.0.1", 6380))
        self.assertEqual(parse_address("[::1]:6379"), ("tcp", "::1", 6379))
        self.assertEqual(parse_address("unix:/run/r.sock"), ("unix", "/run/r.sock", 0))
        self.assertRaises(ValueError, parse_address, "nocolon")
        self.assertRaises(ValueError, parse_address, "host:port")


class RedisClientTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.server = RedisServer(password="s3cret").start()
        self.addCleanup(self.server.cleanup)
        self.settings = RedisSettings(address=self.server.address, password="s3cret", db=3)
        self.client = RedisClient(lambda: self.settings)
        self.client.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.client.stop()))

    @defer.inlineCallbacks
    def test_gate_commands_transactions(self) -> Any:
        with self.assertRaises(NotReady):
            yield defer.Deferred.fromCoroutine(self.client.execute("PING"))
        pong = yield defer.Deferred.fromCoroutine(self.client.execute("PING", unblocked=True))
        self.assertEqual(pong, "PONG")
        self.client.set_ready()
        yield defer.Deferred.fromCoroutine(self.client.execute("SET", "k", "1234"))
        # numbers stay strings, as Go writes and compares them
        value = yield defer.Deferred.fromCoroutine(self.client.execute("GET", "k"))
        self.assertEqual(value, "1234")
        # SELECT went to db 3
        self.assertEqual(self.server.client(db=3).get("k"), "1234")
        self.assertIsNone(self.server.client(db=0).get("k"))
        replies = yield defer.Deferred.fromCoroutine(self.client.transaction(
            [("INCR", "n"), ("HSET", "h", "f", "v"), ("INCR", "k2x"), ("LPUSH", "k", "x")]))
        self.assertEqual(replies[:3], [1, 1, 1])
        self.assertIsInstance(replies[3], ResponseError)  # WRONGTYPE inside EXEC is a value
        piped = yield defer.Deferred.fromCoroutine(self.client.pipeline([("GET", "n"), ("GET", "none")]))
        self.assertEqual(piped, ["1", None])
        with self.assertRaises(ResponseError):
            yield defer.Deferred.fromCoroutine(self.client.execute("NOSUCHCOMMAND"))

    @defer.inlineCallbacks
    def test_non_utf8_round_trip(self) -> Any:
        self.client.set_ready()
        name = b"/dir/caf\xe9 \n.iso".decode("utf-8", "surrogateescape")
        yield defer.Deferred.fromCoroutine(self.client.execute("SADD", "FILES", name))
        raw = self.server.client(db=3, decode=False).smembers("FILES")
        self.assertEqual(raw, {b"/dir/caf\xe9 \n.iso"})
        members = yield defer.Deferred.fromCoroutine(self.client.execute("SMEMBERS", "FILES"))
        self.assertEqual(members, [name])

    @defer.inlineCallbacks
    def test_outage_and_recovery(self) -> Any:
        self.client.set_ready()
        yield defer.Deferred.fromCoroutine(self.client.execute("SET", "a", "1"))
        self.server.kill()
        with self.assertRaises(RedisUnavailable):
            yield defer.Deferred.fromCoroutine(self.client.execute("GET", "a"))
        # fails fast while down, never hangs
        start = reactor.seconds()
        for _ in range(20):
            try:
                yield defer.Deferred.fromCoroutine(self.client.execute("GET", "a"))
            except RedisUnavailable:
                pass
        self.assertLess(reactor.seconds() - start, 5)
        self.assertTrue(self.client.failing)
        self.server.start()  # same port, empty data (no persistence in this fixture)

        async def back() -> bool:
            return await self.client.execute("PING") == "PONG"

        yield defer.Deferred.fromCoroutine(eventually(back))
        self.assertFalse(self.client.failing)

    @defer.inlineCallbacks
    def test_subscription_survives_restart(self) -> Any:
        self.client.set_ready()
        got: list[tuple[str, str]] = []
        reconnects: list[int] = []
        sub = self.client.subscribe(["chan"], lambda c, m: got.append((c, m)),
                                    lambda: reconnects.append(1))
        self.addCleanup(sub.stop)
        yield defer.Deferred.fromCoroutine(eventually(lambda: defer.succeed(sub.subscribed)))
        self.server.client().publish("chan", "one")
        yield defer.Deferred.fromCoroutine(eventually(lambda: defer.succeed(got)))
        self.assertEqual(got, [("chan", "one")])
        self.server.kill()
        self.server.start()
        yield defer.Deferred.fromCoroutine(eventually(lambda: defer.succeed(reconnects and sub.subscribed)))
        self.server.client().publish("chan", "two")
        yield defer.Deferred.fromCoroutine(eventually(lambda: defer.succeed(len(got) == 2)))
        self.assertEqual(got[1], ("chan", "two"))
        self.assertEqual(reconnects, [1])


class SubscriptionStopTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_stop_while_retrying(self) -> Any:
        """Stopping a subscription that waits to retry (Redis away) leaves nothing pending."""
        port_owner = RedisServer().start()
        address = port_owner.address
        port_owner.cleanup()  # nothing listens there any more
        client = RedisClient(lambda: RedisSettings(address=address))
        client.start()
        client.set_ready()
        sub = client.subscribe(["chan"], lambda c, m: None)
        yield sleep(0.3)  # the loop is now sleeping between attempts
        self.assertFalse(sub.subscribed)
        sub.stop()
        yield defer.Deferred.fromCoroutine(client.stop())
        yield sleep(0.7)  # past the retry delay: an AlreadyCalledError would surface here


class DeadLinkTests(unittest.TestCase):
    """A partition seen by the client alone (the daemon-level test is tests/faults/test_partition)."""

    timeout = 60

    def setUp(self) -> None:
        self.server = RedisServer().start()
        self.addCleanup(self.server.cleanup)
        self.proxy = TcpProxy(self.server.port).start()
        self.addCleanup(self.proxy.close)
        settings = RedisSettings(address=self.proxy.address)
        self.client = RedisClient(lambda: settings)
        self.client.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.client.stop()))
        self.client.set_ready()

    @defer.inlineCallbacks
    def test_silence_drops_the_link_then_commands_fail_fast_until_the_heal(self) -> Any:
        yield defer.Deferred.fromCoroutine(self.client.execute("SET", "a", "1"))
        self.proxy.blackhole()
        # A short deadline passes: the link is not yet taken for dead (a paused server looks so).
        with self.assertRaises(CommandTimeout):
            yield defer.Deferred.fromCoroutine(self.client.execute("INCR", "n", timeout=0.3))
        self.assertFalse(self.client.failing)
        # The pending INCR owes its reply; once silent for DEAD_LINK_SILENCE, the link is dropped.
        async def dropped() -> bool:
            return self.client.failing

        yield defer.Deferred.fromCoroutine(eventually(dropped, timeout=DEAD_LINK_SILENCE + 3))
        start = reactor.seconds()
        for _ in range(10):
            with self.assertRaises(RedisUnavailable):
                yield defer.Deferred.fromCoroutine(self.client.execute("GET", "a", timeout=5))
        self.assertLess(reactor.seconds() - start, 0.5)  # at once, not a dial's wait each
        # The client is failing as soon as it decides to drop the link; the abort itself reaches
        # the socket on the reactor's next turn. Heal only once it has: a heal before the reset
        # delivers the INCR, as a real network would.
        async def reset_seen() -> bool:
            return self.proxy.resets >= 1

        yield defer.Deferred.fromCoroutine(eventually(reset_seen))
        self.proxy.heal()

        async def back() -> bool:
            return await self.client.execute("GET", "a") == "1"

        yield defer.Deferred.fromCoroutine(eventually(back))
        self.assertFalse(self.client.failing)
        # The INCR written into the partition died with the aborted connection: never applied.
        self.assertIsNone(self.server.client().get("n"))
