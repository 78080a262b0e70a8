"""HTTPListener in-process, on real loopback sockets: graceful drain and ListenAddress rebinding."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest
from twisted.web import resource, server

from mirrorbits.lifecycle.listener import HTTPListener
from mirrorbits.web.site import LeanSite
from tests.fixtures.servers import free_port


class Slow(resource.Resource):
    """``/slow`` answers after 0.5 s; anything else at once."""

    isLeaf = True

    def render_GET(self, request: Any) -> Any:  # noqa: N802
        body = b"done " + request.path
        if request.path == b"/slow":
            def finish() -> None:
                if not request._disconnected:
                    request.write(body)
                    request.finish()
            reactor.callLater(0.5, finish)
            return server.NOT_DONE_YET
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return body


class Raw(protocol.Protocol):
    """Collects everything the server sends until it closes."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.closed.callback(self.data)


async def connect(port: int) -> Raw:
    return await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        protocol.Factory.forProtocol(Raw))


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


class DrainTests(unittest.TestCase):
    def listener(self, port: int, **kw: Any) -> HTTPListener:
        site = LeanSite(Slow())  # the daemon's site: its channel can be wound down
        http = HTTPListener(site, lambda: f"127.0.0.1:{port}", reactor, **kw)
        http.startService()
        self.addCleanup(lambda: http.stopService() if http.running else None)
        return http

    def test_stop_finishes_in_flight_and_closes_idle(self) -> defer.Deferred[None]:
        async def run() -> None:
            port = free_port()
            http = self.listener(port, idle_grace=0.3)
            busy = await connect(port)
            busy.transport.write(get("/slow"))
            idle = await connect(port)
            idle.transport.write(get("/fast"))
            await task.deferLater(reactor, 0.1, lambda: None)
            self.assertIn(b"done /fast", idle.data)  # answered, connection kept alive
            self.assertFalse(idle.closed.called)
            stopped = http.stopService()
            self.assertTrue(refused(port))  # no new connection from the moment the stop begins
            slow_answer = await busy.closed
            self.assertIn(b"200 OK", slow_answer)
            self.assertIn(b"done /slow", slow_answer)
            self.assertIn(b"Connection: close", slow_answer)  # told not to reuse it
            await idle.closed  # closed after the idle grace, having sent nothing since
            await stopped
            self.assertEqual(len(http.tracker), 0)
        return defer.Deferred.fromCoroutine(run())

    def test_keepalive_request_during_drain_is_answered_then_closed(self) -> defer.Deferred[None]:
        async def run() -> None:
            port = free_port()
            http = self.listener(port, idle_grace=1.0)
            client = await connect(port)
            client.transport.write(get("/first"))
            await task.deferLater(reactor, 0.1, lambda: None)
            stopped = http.stopService()
            # a client reusing its connection right after the stop began is still served
            client.transport.write(get("/second"))
            data = await client.closed
            self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 2)
            self.assertIn(b"done /second", data)
            self.assertTrue(data.rstrip().endswith(b"done /second"))
            await stopped
        return defer.Deferred.fromCoroutine(run())

    def test_stop_cuts_what_outlives_the_timeout(self) -> defer.Deferred[None]:
        async def run() -> None:
            port = free_port()
            http = self.listener(port, drain_timeout=0.2, idle_grace=0.1)
            busy = await connect(port)
            busy.transport.write(get("/slow"))
            await task.deferLater(reactor, 0.05, lambda: None)
            await http.stopService()
            data = await busy.closed
            self.assertNotIn(b"done /slow", data)  # cut at 0.2 s, before the 0.5 s answer
            await task.deferLater(reactor, 0.5, lambda: None)  # the resource's late answer
        return defer.Deferred.fromCoroutine(run())

    def test_rebind_new_socket_before_old_closes(self) -> defer.Deferred[None]:
        async def run() -> None:
            old_port, new_port = free_port(), free_port()
            http = self.listener(old_port)
            moved: list[Any] = []
            http.on_rebind(moved.append)
            busy = await connect(old_port)
            busy.transport.write(get("/slow"))
            await task.deferLater(reactor, 0.05, lambda: None)
            self.assertTrue(await http.rebind(f"127.0.0.1:{new_port}"))
            self.assertTrue(refused(old_port))
            self.assertEqual(moved[0].getHost().port, new_port)
            fresh = await connect(new_port)
            fresh.transport.write(get("/x"))
            await task.deferLater(reactor, 0.1, lambda: None)
            self.assertIn(b"done /x", fresh.data)
            fresh.transport.loseConnection()
            busy_data = await busy.closed if busy.closed.called else await _wait_data(busy, b"done /slow")
            self.assertIn(b"done /slow", busy_data)  # the old connection went on undisturbed
            busy.transport.loseConnection()
            # an address that cannot be bound keeps the current socket
            blocker = socket.socket()
            blocker.bind(("127.0.0.1", 0))
            blocker.listen(1)
            self.addCleanup(blocker.close)
            self.assertFalse(await http.rebind(f"127.0.0.1:{blocker.getsockname()[1]}"))
            self.assertFalse(refused(new_port))
            self.assertFalse(await http.rebind("not an address"))
            self.assertEqual(http.bound_address, f"127.0.0.1:{new_port}")
        return defer.Deferred.fromCoroutine(run())

    def test_rebind_to_another_interface_on_the_same_port(self) -> defer.Deferred[None]:
        async def run() -> None:
            port = free_port()
            http = self.listener(port)
            self.assertTrue(await http.rebind(f"tcp:{port}:interface=0.0.0.0"))
            self.assertEqual(http.listening_socket().getsockname(), ("0.0.0.0", port))
            client = await connect(port)
            client.transport.write(get("/y"))
            await task.deferLater(reactor, 0.1, lambda: None)
            self.assertIn(b"done /y", client.data)
            client.transport.loseConnection()
        return defer.Deferred.fromCoroutine(run())

    def test_bind_failure_is_fatal_at_start(self) -> None:
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        fatal: list[str] = []
        site = LeanSite(Slow())  # the daemon's site: its channel can be wound down
        http = HTTPListener(site, lambda: f"127.0.0.1:{blocker.getsockname()[1]}", reactor,
                            fatal=fatal.append)
        http.startService()
        self.assertEqual(len(fatal), 1)
        self.assertIn("Address already in use", fatal[0])
        self.assertIsNone(http.listening_socket())
        self.flushLoggedErrors()


async def _wait_data(proto: Raw, needle: bytes) -> bytes:
    for _ in range(100):
        if needle in proto.data:
            return proto.data
        await task.deferLater(reactor, 0.02, lambda: None)
    return proto.data
