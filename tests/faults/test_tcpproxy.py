"""The partition proxy itself: what it holds, delivers, drops and delays (the partition tests'
conclusions rest on this model of a network)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from tests.fixtures.tcpproxy import TcpProxy


@pytest.fixture
def server() -> Iterator[socket.socket]:
    s = socket.create_server(("127.0.0.1", 0))
    s.settimeout(5)
    yield s
    s.close()


def pair(proxy: TcpProxy, server: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    accepted, _ = server.accept()
    accepted.settimeout(5)
    return client, accepted


def test_black_hole_holds_then_delivers_or_drops(server: socket.socket) -> None:
    with TcpProxy(server.getsockname()[1]) as proxy:
        a_client, a_server = pair(proxy, server)
        b_client, b_server = pair(proxy, server)
        a_client.sendall(b"before")
        assert a_server.recv(100) == b"before"
        proxy.blackhole()
        a_client.sendall(b"aborted")  # its sender then resets: its kernel drops unacknowledged data
        b_client.sendall(b"closed")   # its sender closes gently: its kernel retransmits at the heal
        a_server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            a_server.recv(100)
        a_client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a_client.close()
        b_client.close()
        time.sleep(0.3)
        proxy.heal()
        a_server.settimeout(5)
        assert a_server.recv(100) == b""
        assert b_server.recv(100) == b"closed"
        assert b_server.recv(100) == b""
        for s in (a_server, b_server):
            s.close()


def test_delay_each_way(server: socket.socket) -> None:
    with TcpProxy(server.getsockname()[1]) as proxy:
        client, accepted = pair(proxy, server)
        proxy.delay(0.2)
        started = time.monotonic()
        client.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        accepted.sendall(b"pong")
        assert client.recv(4) == b"pong"
        assert 0.4 <= time.monotonic() - started < 1.5
        client.close()
        accepted.close()
