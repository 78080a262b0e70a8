"""The redis-server fixture starts a server of its own or says why not: a port another server holds
is never mistaken for ours (the tests would then share, and flush, someone else's data)."""

from __future__ import annotations

import time

import pytest

from tests.fixtures.redis import PortTaken, RedisServer


def test_a_port_held_by_another_server_fails_at_once_naming_the_cause() -> None:
    with RedisServer() as other:
        other.client().set("theirs", "1")
        started = time.monotonic()
        with pytest.raises(PortTaken, match="already in use"):
            RedisServer(port=other.port).start()
        assert time.monotonic() - started < 30  # not the start-up deadline: the process exited
        assert other.client().get("theirs") == "1"


def test_a_chosen_port_taken_before_the_bind_is_chosen_again() -> None:
    with RedisServer() as other:
        ours = RedisServer()
        ours.port = other.port  # as if another run took the free port first
        try:
            ours.start()
            assert ours.port != other.port and ours.proc is not None
            assert ours.client().info("server")["process_id"] == ours.proc.pid
            ours.client().set("ours", "1")
            assert other.client().get("ours") is None
        finally:
            ours.cleanup()
