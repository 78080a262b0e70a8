"""A SIGHUP or SIGUSR1 sent while the daemon starts does not kill it (their default action): every
entry point catches them from the moment it builds the service tree, and the daemon acts on them
once it serves (a reload asked during start-up happens then)."""

from __future__ import annotations

import http.client
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port
from tests.lifecycle.helpers import FILE, ROOT, TWISTD, Daemon, write_config

ENTRY_POINTS = {
    "twistd mirrorbits": lambda conf: TWISTD + ["-n", "--pidfile=", "mirrorbits", "--no-monitor",
                                                "--config", str(conf)],
    "twistd mirrorbits.tac": lambda conf: TWISTD + ["-n", "--pidfile=", "-y",
                                                    str(ROOT / "mirrorbits.tac")],
    "mirrorbits daemon": lambda conf: [sys.executable, "-m", "mirrorbits", "daemon",
                                       "-config", str(conf), "-monitor=false", "-p", ""],
}


def serves(port: int, wait: float = 30.0) -> bool:
    """Whether the daemon answers an HTTP request on ``port`` within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("HEAD", FILE)
            if conn.getresponse().status in (302, 503):
                return True
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    return False


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (its ``SigCgt`` mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_sighup_and_sigusr1_during_startup(tmp_path: Path, redis: RedisServer, entry: str) -> None:
    port = free_port()
    conf = write_config(tmp_path, port, redis)
    daemon = Daemon(ENTRY_POINTS[entry](conf), tmp_path, extra_env={"MIRRORBITS_CONFIG": str(conf)})
    pid = daemon.proc.pid
    try:
        # Before the process catches SIGHUP no program can survive it (the interpreter is still
        # starting): wait for the first handler, then send at once, and again for about a second,
        # which covers the hand-over from the start-up handlers to the lifecycle's.
        deadline = time.monotonic() + 30
        while not catches(pid, signal.SIGHUP):
            assert daemon.proc.poll() is None, daemon.output()[-4000:]
            assert time.monotonic() < deadline, "SIGHUP never caught:\n" + daemon.output()[-4000:]
            time.sleep(0.001)
        until = time.monotonic() + 1.0
        sent = 0
        while time.monotonic() < until:
            os.kill(pid, signal.SIGHUP if sent % 2 == 0 else signal.SIGUSR1)
            sent += 1
            time.sleep(0.02)
        # Serves: the tac runs the monitor, which may disable the test's unreachable mirror, so
        # any HTTP answer will do (a 302, or a 503 without mirror).
        assert serves(port), daemon.output()[-4000:]
        daemon.wait_log("SIGHUP Received: Reloading configuration...")
        assert daemon.proc.poll() is None, daemon.output()[-4000:]
        if entry == "mirrorbits daemon":
            # Its start-up handlers come after its imports: the window before the lifecycle's is
            # too short for this test to hit reliably on a loaded machine.
            return
        # Under twistd they come before the daemon's imports: the first SIGHUP is a start-up one,
        # and the remembered reload happens once the daemon serves.
        daemon.wait_log("Handling SIGHUP received during start-up", timeout=10)
        out = daemon.output()
        assert "SIGHUP Received: Reloading configuration..." in out.split(
            "Handling SIGHUP received during start-up", 1)[1], out[-4000:]
    finally:
        processes.stop(daemon.proc)
