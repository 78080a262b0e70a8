"""A real daemon for the fault tests, and the timed HTTP requests they measure it with."""

from __future__ import annotations

import http.client
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures import processes
from tests.fixtures.servers import free_port, wait_for_port
from tests.lifecycle.helpers import FILE, REDIRECT_TO, Daemon, go_style, write_config

FALLBACK = "http://fallback.example/"


@dataclass
class Answer:
    status: int
    location: str
    seconds: float


def get(port: int, path: str, timeout: float = 30.0) -> Answer:
    """One GET on a fresh connection: status, Location and the time to the whole answer."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return Answer(resp.status, resp.getheader("Location") or "", time.perf_counter() - started)
    finally:
        conn.close()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_daemon(tmp: Path, redis_address: str, extra: str = "",
                 pidfile: Path | None = None) -> tuple[Daemon, int]:
    """``python -m mirrorbits daemon`` on a free port, listening once this returns."""
    port = free_port()
    conf = write_config(tmp, port, redis_address, f"Fallbacks:\n    - URL: {FALLBACK}\n{extra}")
    pidfile = pidfile or tmp / "mirrorbits.pid"
    daemon = Daemon(go_style(conf, pidfile), tmp, pidfile=pidfile)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
    except TimeoutError:
        processes.stop(daemon.proc)
        raise AssertionError(daemon.output()) from None
    return daemon, port


def wait_for_redirect(port: int, daemon: Daemon) -> int:
    """Once the daemon redirects FILE to its mirror: how many downloads it counted until then
    (a fallback redirect while it warms up counts too)."""
    deadline = time.monotonic() + 20
    counted = 0
    while True:
        a = get(port, FILE)
        counted += a.status == 302
        if a.location == REDIRECT_TO:
            return counted
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.1)
