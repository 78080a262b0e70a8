"""A daemon that cannot start (a port already taken, an unusable admin address) stops what it had
started, the embedded redis-server included, and exits non-zero with one line naming the address
and the config key; under each entry point: ``mirrorbits daemon``, ``twistd mirrorbits`` and
``twistd -y mirrorbits.tac``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures import processes
from tests.fixtures.servers import free_port
from tests.lifecycle.helpers import ROOT, TWISTD, env

QUICKSTART = ROOT / "contrib" / "quickstart"

#: Each entry point's command line for a config file.
ENTRY_POINTS: dict[str, Callable[[Path], list[str]]] = {
    "mirrorbits daemon": lambda conf: [sys.executable, "-m", "mirrorbits", "daemon",
                                       "-config", str(conf), "-monitor=false"],
    "twistd mirrorbits": lambda conf: TWISTD + ["-n", "--pidfile=", "mirrorbits", "--no-monitor",
                                                "--config", str(conf)],
    "twistd mirrorbits.tac": lambda conf: TWISTD + ["-n", "--pidfile=", "-y",
                                                    str(ROOT / "mirrorbits.tac")],
}


def quickstart_config(tmp: Path, addresses: dict[str, str]) -> Path:
    """The quick-start config (embedded Redis) with its DataDir in ``tmp`` and the given listen
    addresses (config key -> address)."""
    settings = {"Repository": str(QUICKSTART / "repo"), "DataDir": str(tmp / "data"),
                "GeoipDatabasePath": str(tmp / "nogeoip"), **addresses}
    lines = []
    for line in (QUICKSTART / "mirrorbits.conf").read_text().splitlines():
        key = line.split(":", 1)[0]
        lines.append(f"{key}: {settings.pop(key)}" if key in settings else line)
    lines += [f"{key}: {value}" for key, value in settings.items()]
    conf = tmp / "mirrorbits.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def redis_servers_in(data_dir: Path) -> list[processes.ProcessInfo]:
    """Live redis-server processes whose working directory or socket is in ``data_dir``."""
    found = []
    for p in processes.processes():
        if "redis-server" not in p.command:
            continue
        try:
            cwd = os.readlink(f"/proc/{p.pid}/cwd")
        except OSError:
            cwd = ""
        if cwd.startswith(str(data_dir)) or str(data_dir) in p.command:
            found.append(p)
    return found


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port on which something else already listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def run_to_exit(tmp: Path, entry: str, conf: Path) -> tuple[int, str]:
    """Start ``entry`` on ``conf``; its exit status and output once it ended on its own.  Any
    redis-server left in the DataDir fails the test (and is stopped with the daemon's group)."""
    log = tmp / "daemon.log"
    with open(log, "wb") as out:
        proc = processes.spawn(ENTRY_POINTS[entry](conf), cwd=tmp, stdout=out,
                               stderr=subprocess.STDOUT, env=env(MIRRORBITS_CONFIG=str(conf)))
    try:
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{entry} still running 60 s after a fatal start-up failure:\n"
                        f"{log.read_text(errors='replace')[-4000:]}")
        output = log.read_text(errors="replace")
        left = redis_servers_in(tmp / "data")
        assert not left, f"{entry} left its embedded Redis running: {left}\n{output[-4000:]}"
        return status, output
    finally:
        processes.stop(proc)  # the whole group: an orphaned redis-server too


def assert_started_embedded_redis(output: str) -> None:
    """The failure came after the embedded Redis was started: it had something to clean up."""
    assert "starting embedded Redis" in output, output[-4000:]


@pytest.mark.parametrize("key", ["ListenAddress", "RPCListenAddress", "MetricsListenAddress"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_port_taken(tmp_path: Path, taken_port: int, entry: str, key: str) -> None:
    """The HTTP port, the admin channel's or the metrics listener's is taken."""
    addresses = {name: f"127.0.0.1:{free_port()}"
                 for name in ("ListenAddress", "RPCListenAddress", "MetricsListenAddress")}
    addresses[key] = f"127.0.0.1:{taken_port}"
    status, output = run_to_exit(tmp_path, entry, quickstart_config(tmp_path, addresses))
    assert status != 0, output[-4000:]
    message = f"cannot listen on 127.0.0.1:{taken_port} ({key}): Address already in use"
    assert output.count(message) == 1, output[-4000:]
    assert_started_embedded_redis(output)


def test_bad_admin_address(tmp_path: Path) -> None:
    conf = quickstart_config(tmp_path, {"ListenAddress": f"127.0.0.1:{free_port()}",
                                        "RPCListenAddress": "127.0.0.1:notaport"})
    status, output = run_to_exit(tmp_path, "twistd mirrorbits", conf)
    assert status != 0, output[-4000:]
    assert "cannot listen on 127.0.0.1:notaport (RPCListenAddress): invalid listen address" in output, \
        output[-4000:]
    assert_started_embedded_redis(output)
