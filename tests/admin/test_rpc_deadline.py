"""The admin client's deadlines, on a ``task.Clock``: a daemon that accepts the connection and never
answers fails an operation after its declared deadline (10 s by default, 60 s for ``remove``), and
never for ``refresh``. The connection and the silent daemon are real (loopback TCP)."""

from __future__ import annotations

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.interfaces import IListeningPort
from twisted.protocols import amp
from twisted.trial import unittest

from mirrorbits.admin.interface import DEFAULT_DEADLINE, OPERATIONS, AdminError
from mirrorbits.admin.rpc import RemoteAdmin
from tests.fixtures.trial import sleep


class Silent(protocol.Protocol):
    """Reads every request, answers none (a hung daemon)."""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.factory.received += len(data)  # type: ignore[attr-defined]


class DeadlineTests(unittest.TestCase):
    timeout = 30

    async def connect(self) -> tuple[RemoteAdmin, task.Clock, protocol.Factory]:
        factory = protocol.Factory.forProtocol(Silent)
        factory.received = 0  # type: ignore[attr-defined]
        port: IListeningPort = await endpoints.TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        proto = await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(amp.AMP))
        clock = task.Clock()
        admin = RemoteAdmin(proto, "sekret", clock)
        self.addCleanup(admin.close)
        return admin, clock, factory

    async def expires(self, call: defer.Deferred[object], clock: task.Clock, deadline: float,
                      factory: protocol.Factory) -> AdminError:
        """``call`` is still waiting just before ``deadline`` and fails right at it."""
        while not factory.received:  # type: ignore[attr-defined]
            await sleep(0.01)  # the request reached the silent daemon
        clock.advance(deadline - 0.01)
        await sleep(0.05)
        self.assertFalse(call.called)
        clock.advance(0.01)
        with self.assertRaises(AdminError) as caught:
            await call
        return caught.exception

    def test_default_deadline(self) -> defer.Deferred[None]:
        async def run() -> None:
            admin, clock, factory = await self.connect()
            self.assertEqual(OPERATIONS["ping"].deadline, DEFAULT_DEADLINE)
            error = await self.expires(defer.Deferred.fromCoroutine(admin.ping()), clock,
                                       DEFAULT_DEADLINE, factory)
            self.assertEqual((str(error), error.code),
                             (f"the daemon did not answer within {DEFAULT_DEADLINE:g} s", "DeadlineExceeded"))
        return defer.Deferred.fromCoroutine(run())

    def test_remove_has_a_minute(self) -> defer.Deferred[None]:
        async def run() -> None:
            admin, clock, factory = await self.connect()
            self.assertEqual(OPERATIONS["remove_mirror"].deadline, 60.0)
            call = defer.Deferred.fromCoroutine(admin.remove_mirror(1))
            error = await self.expires(call, clock, 60.0, factory)
            self.assertEqual(error.code, "DeadlineExceeded")
        return defer.Deferred.fromCoroutine(run())

    def test_refresh_waits_as_long_as_it_takes(self) -> defer.Deferred[None]:
        async def run() -> None:
            admin, clock, factory = await self.connect()
            self.assertIsNone(OPERATIONS["refresh"].deadline)
            call = defer.Deferred.fromCoroutine(admin.refresh())
            while not factory.received:  # type: ignore[attr-defined]
                await sleep(0.01)
            clock.advance(24 * 3600)
            await sleep(0.05)
            self.assertFalse(call.called)
            admin.close()  # the connection goes away: that ends it
            with self.assertRaises(AdminError) as caught:
                await call
            self.assertEqual(caught.exception.code, "Unavailable")
        return defer.Deferred.fromCoroutine(run())
