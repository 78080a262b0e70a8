"""The embedded redis-server: start, persistence, adoption by a second generation, shutdown."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import redis as redis_py
from twisted.internet import defer, reactor
from twisted.trial import unittest

from mirrorbits.redis.embedded import EmbeddedRedis, ping_socket, server_config, socket_path


class EmbeddedRedisTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mb-emb-")

    def test_config_is_private_and_persistent(self) -> None:
        conf = server_config(self.dir)
        self.assertIn("port 0\n", conf)  # no TCP port at all
        self.assertIn(f"unixsocket {socket_path(self.dir)}\n", conf)
        self.assertIn("appendonly yes\n", conf)

    @defer.inlineCallbacks
    def test_adopted_server_is_stopped_by_the_new_owner(self) -> Any:
        first = EmbeddedRedis(self.dir)
        first.startService()
        yield first.when_ready()
        self.assertFalse(first.adopted)
        redis_py.Redis(unix_socket_path=socket_path(self.dir)).set("k", "v")
        second = EmbeddedRedis(self.dir)  # e.g. the process started by a seamless upgrade
        second.startService()
        yield second.when_ready()
        self.assertTrue(second.adopted)
        first.keep_running = True
        yield first.stopService()  # the old generation leaves it running
        alive = yield defer.Deferred.fromCoroutine(ping_socket(reactor, socket_path(self.dir)))
        self.assertTrue(alive)
        yield second.stopService()
        alive = yield defer.Deferred.fromCoroutine(ping_socket(reactor, socket_path(self.dir)))
        self.assertFalse(alive)
        yield first._proto.ended  # the process itself has exited
        self.assertTrue(os.path.exists(os.path.join(self.dir, "dump.rdb")))  # SHUTDOWN SAVE wrote it
