"""The local scan at a moderate scale (5,000 files; the 100,000-file figures come from
``bench/local_scan.py``): incremental rescans, no long Redis command, readers never see half a
record."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from mirrorbits.config import Config
from mirrorbits.redis.connection import RedisClient, RedisSettings
from mirrorbits.scan.local import LocalScanner
from tests.fixtures.redis import RedisServer

FILES = 5000
PER_DIR = 250
#: The acceptance budget for any single Redis stall.
MAX_COMMAND_MS = 50


def run(coro: Any) -> defer.Deferred[Any]:
    return defer.Deferred.fromCoroutine(coro)


class ScaleTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        # Log every command slower than 5 ms; the test fails on any above MAX_COMMAND_MS.
        self.server = RedisServer(extra_args=["--slowlog-log-slower-than", "5000",
                                              "--slowlog-max-len", "10000"]).start()
        self.addCleanup(self.server.cleanup)
        self.tmp = tempfile.mkdtemp(prefix="mirrorbits-scale-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.repo = os.path.join(self.tmp, "repo")
        for i in range(FILES):
            d = os.path.join(self.repo, f"d{i // PER_DIR:03d}")
            if i % PER_DIR == 0:
                os.makedirs(d)
            with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
                f.write(b"x" * (i % 700) + b"%d" % i)
        settings = RedisSettings(address=self.server.address)
        self.client = RedisClient(lambda: settings)
        self.client.start()
        self.client.set_ready()
        self.addCleanup(lambda: run(self.client.stop()))
        config = Config(Repository=self.repo)
        self.scanner = LocalScanner(self.client, lambda: config)

    def slow_commands(self) -> list[tuple[float, str]]:
        entries = self.server.client().slowlog_get(10000)
        return [(e["duration"] / 1000, str(e["command"])[:20] + str(e["command"])[-80:]) for e in entries]

    @defer.inlineCallbacks
    def test_first_scan_rescan_and_one_percent_changed(self) -> Any:
        r = yield run(self.scanner.scan())
        self.assertEqual((r.indexed, r.hashed, r.written), (FILES, FILES, FILES))
        slow = self.slow_commands()
        print(f"slowest Redis commands during the first scan (ms): {sorted(slow)[-3:]}")
        self.assertEqual([s for s in slow if s[0] > MAX_COMMAND_MS], [])

        r = yield run(self.scanner.scan())
        self.assertEqual((r.indexed, r.hashed, r.written, r.removed), (FILES, 0, 0, 0))

        changed = [os.path.join(self.repo, f"d{i // PER_DIR:03d}", f"f{i:05d}")
                   for i in range(0, FILES, 100)]
        for p in changed:
            with open(p, "ab") as f:
                f.write(b"more")
        removed = os.path.join(self.repo, "d000", "f00001")
        os.unlink(removed)

        # A reader polling changing records meanwhile: always all five fields, never a part.
        redis = self.server.client()
        keys = [f"FILE_/d{i // PER_DIR:03d}/f{i:05d}" for i in range(0, FILES, 100)]
        partial: list[dict[str, str]] = []
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                for k in keys:
                    h = redis.hgetall(k)
                    if len(h) != 5:
                        partial.append(h)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            r = yield run(self.scanner.scan())
        finally:
            stop.set()
            t.join()
        self.assertEqual((r.indexed, r.hashed, r.written, r.removed), (FILES - 1, len(changed), len(changed), 1))
        self.assertEqual(partial, [])
        self.assertEqual(self.server.client().scard("FILES"), FILES - 1)
