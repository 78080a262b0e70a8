"""The daemon as users start it: real processes, the embedded Redis, a real HTTP listener."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py

from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def write_config(tmp: Path, port: int, redis: str = "embedded", extra: str = "") -> Path:
    repo = tmp / "repo"
    (repo / "pub").mkdir(parents=True, exist_ok=True)
    (repo / "pub" / "file.txt").write_text("hello")
    conf = tmp / "mirrorbits.conf"
    conf.write_text(
        f"Repository: {repo}\nRedisAddress: {redis}\nDataDir: {tmp / 'data'}\n"
        f"ListenAddress: 127.0.0.1:{port}\nRPCListenAddress: 127.0.0.1:{free_port()}\n"
        f"GeoipDatabasePath: {tmp / 'nogeoip'}\n{extra}")
    return conf


class Daemon:
    def __init__(self, args: list[str], port: int, cwd: Path) -> None:
        self.port = port
        self.log = open(cwd / "daemon.log", "ab")  # noqa: SIM115
        self.logpath = cwd / "daemon.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = processes.spawn(args, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_http(self) -> None:
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {timeout} s of {signal.Signals(sig).name}:\n"
                                 f"{self.output()}") from None
        finally:
            self.log.close()

    def output(self) -> str:
        return self.logpath.read_text(errors="replace")


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        processes.kill(d.proc)


def twistd(conf: Path) -> list[str]:
    return TWISTD + ["-n", "--pidfile=", "mirrorbits", "--config", str(conf)]


def go_style(conf: Path, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "mirrorbits", "daemon", "-config", str(conf),
            "-p", str(tmp / "mirrorbits.pid")]


def test_twistd_embedded_redis_persists(tmp_path: Path, daemons: list[Daemon]) -> None:
    port = free_port()
    conf = write_config(tmp_path, port)
    d = Daemon(twistd(conf), port, tmp_path)
    daemons.append(d)
    d.wait_http()
    status, headers, body = d.get("/pub/missing.txt")
    assert status == 404 and body == b"Not Found\n"
    assert headers["Server"].startswith("Mirrorbits/")
    sock = tmp_path / "data" / "redis.sock"
    r = redis_py.Redis(unix_socket_path=str(sock), decode_responses=True)
    deadline = time.monotonic() + 15
    while r.get("MIRRORBITS_DB_VERSION") != "2":  # a fresh database is stamped 2
        assert time.monotonic() < deadline, d.output()
        time.sleep(0.1)
    r.hset("MIRRORS", "1", "kept-across-restarts")
    # twistd re-raises the signal it stopped on, so its status is -SIGTERM
    assert d.stop() in (0, -signal.SIGTERM), d.output()
    assert not sock.exists() or not _answers(sock)  # the embedded Redis stopped with the daemon

    d2 = Daemon(twistd(conf), port, tmp_path)
    daemons.append(d2)
    d2.wait_http()
    deadline = time.monotonic() + 15
    while not _answers(sock):
        assert time.monotonic() < deadline, d2.output()
        time.sleep(0.1)
    assert redis_py.Redis(unix_socket_path=str(sock), decode_responses=True).hget("MIRRORS", "1") \
        == "kept-across-restarts"
    assert d2.stop() in (0, -signal.SIGTERM)


def _answers(sock: Path) -> bool:
    try:
        return bool(redis_py.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis_py.exceptions.RedisError:
        return False


def go_style_daemon(tmp_path: Path, daemons: list[Daemon], server: RedisServer) -> Daemon:
    """``mirrorbits daemon`` on ``server``, serving."""
    port = free_port()
    conf = write_config(tmp_path, port, redis=server.address)
    d = Daemon(go_style(conf, tmp_path), port, tmp_path)
    daemons.append(d)
    d.wait_http()
    return d


def wait_for_redial(server: RedisServer, d: Daemon, pause: float = 0.2) -> None:
    """Until the daemon has a connection to ``server`` again (it dials on its own)."""
    deadline = time.monotonic() + 15
    while not any(c.get("cmd") not in ("client|list", "client")
                  for c in server.client().client_list()):
        assert time.monotonic() < deadline, d.output()
        time.sleep(pause)


def test_go_style_daemon_survives_redis_outage(tmp_path: Path, daemons: list[Daemon]) -> None:
    server = RedisServer().start()
    try:
        d = go_style_daemon(tmp_path, daemons, server)
        pid = (tmp_path / "mirrorbits.pid").read_text()
        assert pid == str(d.proc.pid)  # decimal pid, no newline
        assert "|__|_|__|__||__|" in d.output()  # the banner
        server.kill()
        time.sleep(1.5)
        assert d.proc.poll() is None, d.output()
        assert d.get("/pub/missing.txt")[0] == 404  # still serving
        server.start()
        wait_for_redial(server, d)
        assert d.stop(signal.SIGINT) == 0
        assert not (tmp_path / "mirrorbits.pid").exists()
    finally:
        server.cleanup()


@pytest.mark.parametrize("moment", ["down", "restarted", "redialling", "reconnected"])
def test_sigint_during_a_redis_outage_exits_within_seconds(tmp_path: Path, daemons: list[Daemon],
                                                           moment: str) -> None:
    """SIGINT while Redis is away, the moment it is back, while the client waits out its backoff and
    once it has dialled again: every stop step is bounded, the daemon exits at once."""
    server = RedisServer().start()
    try:
        d = go_style_daemon(tmp_path, daemons, server)
        server.kill()
        time.sleep(2.5)  # the client is failing, its backoff at the cap
        if moment != "down":
            server.start()
        if moment == "redialling":
            time.sleep(0.3)
        elif moment == "reconnected":
            wait_for_redial(server, d, pause=0.05)
        started = time.monotonic()
        assert d.stop(signal.SIGINT, timeout=15) == 0, d.output()
        assert time.monotonic() - started < 15
        assert not (tmp_path / "mirrorbits.pid").exists()
    finally:
        server.cleanup()


def test_newer_schema_stops_startup(tmp_path: Path, daemons: list[Daemon]) -> None:
    server = RedisServer().start()
    try:
        server.client().set("MIRRORBITS_DB_VERSION", "3")
        port = free_port()
        conf = write_config(tmp_path, port, redis=server.address)
        d = Daemon(go_style(conf, tmp_path), port, tmp_path)
        daemons.append(d)
        code = d.proc.wait(30)
        assert code != 0
        assert "version 3" in d.output()
        assert server.client().get("MIRRORBITS_DB_VERSION") == "3"
        assert server.client().dbsize() == 1  # nothing written
    finally:
        server.cleanup()


@pytest.mark.parametrize("text,key", [("OutputMode: fast", "OutputMode"),
                                      ("WeightDistributionRange: 0", "WeightDistributionRange")])
def test_bad_config_fails_startup(tmp_path: Path, text: str, key: str) -> None:
    conf = write_config(tmp_path, free_port(), extra=text + "\n")
    for args in (twistd(conf), go_style(conf, tmp_path)):
        p = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert p.returncode != 0
        assert key in p.stderr + p.stdout


def test_cli_help_and_plugin_help() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "mirrorbits", "help"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0
    assert p.stderr.startswith("Usage: mirrorbits [OPTIONS] COMMAND [arg...]\n")
    assert "    daemon    Start the server\n" in p.stderr
    p = subprocess.run(TWISTD + ["mirrorbits", "--help"], capture_output=True,
                       text=True, env=env, timeout=60, cwd=ROOT)
    assert p.returncode == 0
    assert "--config=" in p.stdout and "--no-monitor" in p.stdout
