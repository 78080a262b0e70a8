"""Each signal does its work once per process, and ``--debug`` is honoured in every entry point.

One owner of the signals (the lifecycle) means a SIGHUP reloads GeoIP and reopens the download log
exactly once in each process (the main one, and each HTTP worker it forwards the signal to), and a
SIGUSR1 reopens the logs exactly once, never reloading GeoIP.  Counted on a real daemon's own debug
lines ("Reloading the GeoIP databases", "Re-opening the download log"), which also shows that
``-debug`` reaches the workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port, wait_for_port
from tests.lifecycle.helpers import READY, ROOT, TWISTD, Daemon, go_style, write_config

GEOIP_DATA = Path(__file__).resolve().parents[1] / "data" / "geoip"
GEOIP_RELOAD = "Reloading the GeoIP databases"
LOG_REOPEN = "Re-opening the download log"


def world(tmp_path: Path, redis: RedisServer, port: int, workers: int) -> Path:
    geoip = tmp_path / "geoip"
    geoip.mkdir()
    shutil.copy(GEOIP_DATA / "GeoLite2-City-Test.mmdb", geoip / "GeoLite2-City.mmdb")
    shutil.copy(GEOIP_DATA / "GeoLite2-ASN-Test.mmdb", geoip / "GeoLite2-ASN.mmdb")
    logs = tmp_path / "logs"
    logs.mkdir()
    conf = write_config(tmp_path, port, redis, f"Workers: {workers}\nLogDir: {logs}\n")
    # write_config names a directory without databases; this world has them.
    conf.write_text(conf.read_text().replace(f"GeoipDatabasePath: {tmp_path / 'nogeoip'}",
                                             f"GeoipDatabasePath: {geoip}"))
    return conf


def wait_count(d: Daemon, text: str, count: int, settle: float = 1.0) -> int:
    """Wait until ``text`` was logged ``count`` times, then a moment more for any extra one."""
    d.wait_log(text, count=count)
    time.sleep(settle)
    return d.output().count(text)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_signal_reloads_and_reopens_once_per_process(tmp_path: Path, redis: RedisServer,
                                                          workers: int) -> None:
    port = free_port()
    conf = world(tmp_path, redis, port, workers)
    pidfile = tmp_path / "mirrorbits.pid"
    d = Daemon([*go_style(conf, pidfile), "-debug"], tmp_path, pidfile=pidfile)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        if workers > 1:
            d.wait_log("HTTP worker 1 serving", timeout=30)
        else:
            d.wait_log(READY)
        time.sleep(0.5)
        out = d.output()
        geoip, reopen = out.count(GEOIP_RELOAD), out.count(LOG_REOPEN)
        assert (tmp_path / "logs" / "downloads.log").exists()

        for round_ in range(1, 3):
            d.proc.send_signal(signal.SIGHUP)
            d.wait_log("SIGHUP Received: Reloading configuration...", count=round_ * workers)
            assert wait_count(d, GEOIP_RELOAD, geoip + workers) == geoip + workers, d.output()[-3000:]
            assert wait_count(d, LOG_REOPEN, reopen + workers, settle=0) == reopen + workers
            geoip, reopen = geoip + workers, reopen + workers

        os.rename(tmp_path / "logs" / "downloads.log", tmp_path / "logs" / "downloads.log.1")
        d.proc.send_signal(signal.SIGUSR1)
        d.wait_log("SIGUSR1 Received: Re-opening logs...")
        assert wait_count(d, LOG_REOPEN, reopen + workers) == reopen + workers, d.output()[-3000:]
        assert d.output().count(GEOIP_RELOAD) == geoip, "SIGUSR1 does not reload GeoIP"
        assert (tmp_path / "logs" / "downloads.log").exists(), "the download log was reopened"

        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0, d.output()[-3000:]
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    if workers > 1:
        assert "HTTP worker 1 (pid" in d.output()


def run_and_reload(args: list[str], cwd: Path, port: int, extra_env: dict[str, str] | None = None
                   ) -> str:
    """Start a daemon, wait until it is ready, reload it (SIGHUP), stop it; its output."""
    d = Daemon(args, cwd, extra_env=extra_env)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        d.wait_log(READY)
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log("SIGHUP Received: Reloading configuration...")
        time.sleep(0.5)
    finally:
        processes.stop(d.proc, grace=30)
    return d.output()


@pytest.mark.parametrize("entry", ["daemon", "twistd", "tac"])
def test_debug_is_honoured_by_every_entry_point(tmp_path: Path, redis: RedisServer, entry: str) -> None:
    """Debug events (the GeoIP reload of a SIGHUP, among others) appear with the flag, only with it."""
    outputs = {}
    for debug in (False, True):
        cwd = tmp_path / f"debug-{debug}"
        cwd.mkdir()
        port = free_port()
        conf = world(cwd, redis, port, 1)
        extra_env: dict[str, str] = {}
        if entry == "daemon":
            args = [sys.executable, "-m", "mirrorbits", "daemon", "-config", str(conf),
                    "-p", str(cwd / "pid"), "-monitor=false", *(["-debug"] if debug else [])]
        elif entry == "twistd":
            args = [*TWISTD, "-n", "--pidfile=", "mirrorbits", "--no-monitor", "--config", str(conf),
                    *(["--debug"] if debug else [])]
        else:
            args = [*TWISTD, "-n", "--pidfile=", "-y", str(ROOT / "mirrorbits.tac")]
            extra_env = {"MIRRORBITS_CONFIG": str(conf), **({"MIRRORBITS_DEBUG": "1"} if debug else {})}
        outputs[debug] = run_and_reload(args, cwd, port, extra_env)
    assert GEOIP_RELOAD in outputs[True], outputs[True][-3000:]
    assert "#debug]" not in outputs[False] and GEOIP_RELOAD not in outputs[False], outputs[False][-3000:]
    assert "#info]" in outputs[False] or "Service listening on" in outputs[False]



def test_twistd_log_file_follows_logrotate(tmp_path: Path, redis: RedisServer) -> None:
    """Under twistd with ``--logfile`` (the daemon brings its own observer), SIGUSR1 after a
    rotation makes the daemon write to a new file, as twistd's own handler would."""
    port = free_port()
    conf = world(tmp_path, redis, port, 1)
    logfile = tmp_path / "twistd.log"
    d = Daemon([*TWISTD, "-n", "--pidfile=", "--logfile", str(logfile), "mirrorbits", "--no-monitor",
                "--config", str(conf)], tmp_path)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 20
        while READY not in (logfile.read_text() if logfile.exists() else ""):
            assert time.monotonic() < deadline, d.output()[-3000:]
            time.sleep(0.05)
        os.rename(logfile, tmp_path / "twistd.log.1")
        d.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while not logfile.exists():
            assert time.monotonic() < deadline, (tmp_path / "twistd.log.1").read_text()[-3000:]
            time.sleep(0.05)
        d.proc.send_signal(signal.SIGHUP)  # something to log, in the new file
        while "SIGHUP Received" not in logfile.read_text():
            assert time.monotonic() < deadline, logfile.read_text()[-3000:]
            time.sleep(0.05)
        old = (tmp_path / "twistd.log.1").read_text()
        assert "SIGUSR1 Received" in old and "SIGHUP Received" not in old
        assert "#debug]" not in old + logfile.read_text()
    finally:
        processes.stop(d.proc, grace=30)
