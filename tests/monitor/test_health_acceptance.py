"""Health checks end to end: the test CA is trusted *through configuration* (``CheckTLSCAFile``), and a
reload that changes it takes effect on the next check (the key is ours, Go uses the system roots
only)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor

from mirrorbits.config import Config
from mirrorbits.httpclient import HttpClient
from mirrorbits.monitor.cluster import Cluster
from mirrorbits.monitor.health import HealthChecker
from mirrorbits.monitor.scheduler import Monitor
from mirrorbits.redis import schema
from mirrorbits.scan.mirror import MirrorScanner
from tests.monitor.httpd import Answer, CertAuthority, WebServer
from tests.monitor.support import RedisTestCase, eventually

FILE = "/pub/x.iso"


class ConfiguredCATests(RedisTestCase):
    timeout = 60

    async def test_ca_from_config_and_reload(self) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="mb-ca-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        ca = CertAuthority(tmp)
        web = WebServer(ca.leaf(["localhost", "127.0.0.1"]))
        self.addCleanup(web.stop)
        web.answer(FILE, Answer(200, {"Content-Length": "3"}))
        self.r.sadd(schema.FILES, FILE)
        self.r.hset(schema.file_key(FILE), "size", "3")
        self.r.hset(schema.MIRRORS, "1", "m1")
        self.r.hset(schema.mirror_key(1), mapping={"ID": "1", "name": "m1", "enabled": "1",
                                                   "http": f"https://localhost:{web.number}/"})
        self.r.sadd(schema.handled_files_key(1), FILE)

        config = [Config(Repository=str(tmp), ConcurrentSync=0, CheckTLSCAFile=str(ca.ca_file))]
        http = HttpClient(reactor, connect_timeout=2, timeout=2)  # no CA of its own: system roots
        mon = Monitor(self.client, lambda: config[0], Cluster(self.client, 0, node_id="solo-00001"),
                      HealthChecker(http), MirrorScanner(self.client, lambda: config[0], http),
                      tick=0.1, cluster_settle=0)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(mon.stop()))
        seen: list[Any] = []
        mon.check_listeners.append(lambda mid, outs: seen.append(outs[0]))
        await mon.start()
        await eventually(lambda: len(seen) == 1, timeout=10)
        self.assertEqual((seen[0].up, seen[0].reason), (True, ""))
        self.assertEqual(self.r.hget(schema.mirror_key(1), "httpsUp"), "1")

        # A reload drops the key: back to the system roots, which do not know the test CA.
        config[0] = config[0].replace(CheckTLSCAFile="")
        mon.mirrors[1].last_check = 0.0
        await eventually(lambda: len(seen) == 2, timeout=10)
        self.assertEqual((seen[1].up, seen[1].reason), (False, "Unreachable"))
        h = self.r.hgetall(schema.mirror_key(1))
        self.assertEqual((h["httpsUp"], h["httpsDownReason"]), ("0", "Unreachable"))

        # And naming it again trusts it again.
        config[0] = config[0].replace(CheckTLSCAFile=str(ca.ca_file))
        mon.mirrors[1].last_check = 0.0
        await eventually(lambda: len(seen) == 3, timeout=10)
        self.assertTrue(seen[2].up)
