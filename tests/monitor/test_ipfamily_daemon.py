"""``SelectByIPFamily`` in a REAL daemon process: with the key off (the default) a health-check round
writes nothing that Go does not write; with it on, the same round stores the per-family states.
The mirrors are IP literals (``http://127.0.0.1:P/``, ``http://[::1]:Q/``): the daemon's own
resolver answers them without asking any DNS server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mirrorbits.model import MIRROR_FIELD_BY_REDIS
from mirrorbits.redis import schema
from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
FILE = "/pub/file.txt"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture
def servers() -> Iterator[tuple[int, int]]:
    four = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    six = Server6(("::1", 0), Handler)
    for web in (four, six):
        web.daemon_threads = True
        threading.Thread(target=web.serve_forever, daemon=True).start()
    yield four.server_address[1], six.server_address[1]
    for web in (four, six):
        web.shutdown()
        web.server_close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


def _round(tmp: Path, server: RedisServer, ports: tuple[int, int], extra: str) -> Any:
    """Start a daemon on a database with two enabled mirrors, wait until both were checked."""
    r = server.client()
    repo = tmp / "repo"
    (repo / "pub").mkdir(parents=True)
    (repo / "pub" / "file.txt").write_text("hello")
    r.set(schema.DB_VERSION_KEY, str(schema.DB_VERSION))
    urls = {1: f"http://127.0.0.1:{ports[0]}/", 2: f"http://[::1]:{ports[1]}/"}
    for mid, url in urls.items():
        r.hset(schema.MIRRORS, str(mid), f"m{mid}")
        r.hset(schema.mirror_key(mid), mapping={"ID": str(mid), "name": f"m{mid}", "http": url,
                                                "enabled": "1"})
        r.sadd(schema.handled_files_key(mid), FILE)
    conf = tmp / "mirrorbits.conf"
    conf.write_text(
        f"Repository: {repo}\nRedisAddress: {server.address}\nDataDir: {tmp / 'data'}\n"
        f"ListenAddress: 127.0.0.1:{free_port()}\nRPCListenAddress: 127.0.0.1:{free_port()}\n"
        f"GeoipDatabasePath: {tmp / 'nogeoip'}\nConcurrentSync: 0\n{extra}")
    proc = processes.spawn([sys.executable, "-m", "mirrorbits", "daemon", "-config", str(conf)],
                           cwd=tmp, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not all(r.hget(schema.mirror_key(m), "httpUp") == "1" for m in urls):
            assert proc.poll() is None, "the daemon exited"
            assert time.monotonic() < deadline, "no health-check round within 60 s"
            time.sleep(0.1)
    finally:
        processes.kill(proc)
    return r


def _every_field_name(r: Any) -> set[str]:
    names = set()
    for key in r.scan_iter():
        names.add(key)
        if r.type(key) == "hash":
            names.update(r.hkeys(key))
    return names


@pytest.mark.timeout(90)
def test_off_a_daemon_writes_nothing_per_family(tmp_path: Path, redis_server: RedisServer,
                                                servers: tuple[int, int]) -> None:
    r = _round(tmp_path, redis_server, servers, "")
    for mid in (1, 2):
        assert set(r.hkeys(schema.mirror_key(mid))) <= set(MIRROR_FIELD_BY_REDIS)
        for entry in r.lrange(schema.mirror_logs_key(mid), 0, -1):
            assert "Family" not in json.loads(entry)
    assert not [n for n in _every_field_name(r) if "IPv4" in n or "IPv6" in n]


@pytest.mark.timeout(90)
def test_on_a_daemon_stores_the_state_per_family(tmp_path: Path, redis_server: RedisServer,
                                                 servers: tuple[int, int]) -> None:
    r = _round(tmp_path, redis_server, servers, "SelectByIPFamily: true\n")

    def states(mid: int) -> tuple[str, str]:
        h = r.hgetall(schema.mirror_key(mid))
        return h.get("httpUpIPv4", ""), h.get("httpUpIPv6", "")

    deadline = time.monotonic() + 10
    while (states(1), states(2)) != (("1", "none"), ("none", "1")):
        assert time.monotonic() < deadline, (states(1), states(2))
        time.sleep(0.1)
