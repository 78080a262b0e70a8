"""The two flavours of ``makeService``'s tree, built (not started) in the test process.

The main process and an HTTP worker are assembled by the same function; what differs is stated here:
a worker has no embedded Redis, monitor, scans, admin channel or manhole, serves the socket its
parent passed (paused until ready, shared on stop), and both stop in the same order (HTTP first, the
lifecycle last).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mirrorbits.app import DaemonOptions, WorkerSpec
from mirrorbits.service import makeService


def config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "repo").mkdir(exist_ok=True)
    conf = tmp_path / "mirrorbits.conf"
    conf.write_text(f"Repository: {tmp_path / 'repo'}\nRedisAddress: embedded\nDataDir: {tmp_path / 'data'}\n"
                    f"ListenAddress: 127.0.0.1:0\nRPCListenAddress: 127.0.0.1:0\n"
                    f"ManholeListenAddress: 127.0.0.1:0\nManholeAuthorizedKeys: {tmp_path / 'keys'}\n"
                    f"GeoipDatabasePath: {tmp_path / 'nogeoip'}\n{extra}")
    return conf


def test_main_process_tree(tmp_path: Path) -> None:
    root = makeService(DaemonOptions(config=str(config(tmp_path))))
    names = [s.name for s in root]
    assert names == ["lifecycle", "embedded-redis", "redis", "source-scan", "monitor", "redirector",
                     "rpc", "manhole", "stats", "stats-retention", "downloadlog", "http"], names
    app = root.app
    assert app.worker is None and app.lifecycle is app.get_lifecycle()
    assert app.get_redirector().spawn and not app.get_http_listener().shared


def test_worker_tree(tmp_path: Path) -> None:
    """A worker: its own view, counters and download log; the rest is the main process's."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        # The tree owns the fd it is given (a worker's inherited socket): give it its own copy, or
        # its socket object closes ours once collected, by then maybe another file's number.
        spec = WorkerSpec(index=1, listen_fd=os.dup(sock.fileno()))
        root = makeService(DaemonOptions(config=str(config(tmp_path)), worker=spec))
        names = [s.name for s in root]
        assert names == ["lifecycle", "redis", "redirector", "stats", "downloadlog", "http"], names
        app = root.app
        assert app.worker is spec and not app.run_monitor
        http = app.get_http_listener()
        assert http.shared and http.paused
        assert not app.get_redirector().spawn
        assert app.get_lifecycle().worker is spec
        # The worker dials its parent's embedded Redis, and never starts one.
        assert app.redis_settings().address.startswith("unix:")
    finally:
        sock.close()


@pytest.mark.parametrize("monitor", [True, False])
def test_monitor_flag(tmp_path: Path, monitor: bool) -> None:
    root = makeService(DaemonOptions(config=str(config(tmp_path)), monitor=monitor))
    assert ("monitor" in [s.name for s in root]) is monitor
