"""A full and a read-only filesystem under a real daemon: download log, pid file, embedded Redis.

A tiny tmpfs (``tests.fixtures.smallfs``) holds the file under test; it is filled up, freed, or
remounted read-only and back while the daemon serves. What must hold: every request is still
redirected; each condition is logged once (the test counts the lines), not once per request or per
retry; writing resumes by itself when space returns, without a restart; no line of the download
log is left cut short in front of the next one; the download counters lose nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py

from mirrorbits.redis import schema
from tests.faults.helpers import get, start_daemon, wait_for_redirect
from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port
from tests.fixtures.smallfs import SmallFs
from tests.lifecycle.helpers import FILE, REDIRECT_TO, Daemon, go_style, seed_world, write_config

#: One whole line of the download log for a redirect of FILE (to its mirror, or to the fallback
#: while the daemon warms up).
LINE = re.compile(r'^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} REDIRECT 302 GET "/testy\.tgz" '
                  r'ip:127\.0\.0\.1 mirror:\S+( fallback:true)? asn:0 distance:0\.00km countries:$')


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFs]:
    fs = SmallFs(tmp_path / "small", size="1m")
    yield fs
    fs.unmount()


def redirects(port: int, n: int) -> int:
    for _ in range(n):
        a = get(port, FILE)
        assert (a.status, a.location) == (302, REDIRECT_TO)
    return n


def wait_for(what: str, check: object, daemon: Daemon, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}:\n{daemon.output()[-3000:]}"
        time.sleep(0.1)


def total(r: redis_py.Redis) -> int:
    return int(r.get(schema.STATS_TOTAL) or 0)


def test_download_log_on_a_full_disk(tmp_path: Path, redis: RedisServer, small_fs: SmallFs) -> None:
    logs = small_fs.path / "logs"
    logs.mkdir()
    daemon, port = start_daemon(tmp_path, redis.address, f"LogDir: {logs}\n")
    try:
        served = wait_for_redirect(port, daemon)
        served += redirects(port, 20)
        small_fs.fill()
        full_from = len(daemon.output())
        served += redirects(port, 300)  # well past the last page's room: most lines dropped
        during = daemon.output()[full_from:]
        small_fs.free()
        served += redirects(port, 20)
        wait_for("writing resumed", lambda: "lines dropped)" in daemon.output(), daemon)
        wait_for("every count in Redis", lambda: total(redis.client()) >= served, daemon)
        time.sleep(1)
        assert total(redis.client()) == served
        out = daemon.output()
    finally:
        processes.stop(daemon.proc)

    assert during.count("Cannot write to the download log") == 1, during
    assert "No space left on device" in during
    assert out.count("Cannot write to the download log") == 1
    assert out.count("lines dropped)") == 1
    dropped = int(re.search(r"written again \((\d+) lines dropped\)", out).group(1))  # type: ignore[union-attr]
    lines = (logs / "downloads.log").read_text().splitlines()
    assert [line[:2] for line in lines[:3]] == ["# "] * 3
    body = lines[3:]
    whole = [line for line in body if LINE.match(line)]
    torn = [line for line in body if not LINE.match(line)]
    print(f"\n{served} redirects, {len(whole)} lines written, {dropped} dropped, "
          f"{len(torn)} cut short by the full disk")
    # Every request: written whole, or dropped (a line cut short counts as dropped); the cut one,
    # if any, is ended before the next line, so no other line is damaged.
    assert len(whole) + dropped == served
    assert len(torn) <= 1 and dropped > 200, (torn, dropped)


def test_pid_file_and_log_dir_on_a_read_only_filesystem(tmp_path: Path, redis: RedisServer,
                                                        small_fs: SmallFs) -> None:
    run, logs = small_fs.path / "run", small_fs.path / "logs"
    run.mkdir()
    logs.mkdir()
    pidfile = run / "mirrorbits.pid"
    small_fs.read_only(True)
    daemon, port = start_daemon(tmp_path, redis.address, f"LogDir: {logs}\n", pidfile=pidfile)
    try:
        served = wait_for_redirect(port, daemon) + redirects(port, 50)
        time.sleep(6)  # a retry of each
        served += redirects(port, 10)
        during = daemon.output()
        small_fs.read_only(False)
        writable = time.monotonic()
        wait_for("pid file written", lambda: pidfile.exists(), daemon, timeout=10)
        assert pidfile.read_text() == str(daemon.proc.pid)
        wait_for("download log opened", lambda: (logs / "downloads.log").exists(), daemon, timeout=10)
        print(f"\n{served} redirects while read-only; pid file and log written "
              f"{time.monotonic() - writable:.1f} s after the remount")
        served += redirects(port, 5)
        wait_for("every count in Redis", lambda: total(redis.client()) >= served, daemon)
        out = daemon.output()
    finally:
        processes.stop(daemon.proc)
    assert during.count("Unable to write pid file") == 1, during
    assert during.count("Cannot open log file") == 1, during
    assert during.count("Read-only file system") == 2, during
    assert out.count("pid file") == 2 and f"pid file {pidfile} written" in out
    assert f"Download log {logs / 'downloads.log'} opened" in out
    assert list(run.iterdir()) == []  # removed at stop; no temporary file left behind
    lines = (logs / "downloads.log").read_text().splitlines()
    assert len([line for line in lines if LINE.match(line)]) == 5, lines
    assert total(redis.client()) == served


def test_embedded_redis_data_dir_on_a_full_disk(tmp_path: Path, small_fs: SmallFs) -> None:
    """The embedded Redis' AOF cannot grow: Redis refuses writes (``MISCONF``) but still answers
    reads, so the daemon keeps redirecting (and loading misses), keeps its counts in memory, says
    so once, and writes them all once Redis can write again."""
    data = small_fs.path / "data"
    daemon, port = start_daemon(tmp_path, "embedded", f"DataDir: {data}\n")
    try:
        sock = data / "redis.sock"
        wait_for("embedded Redis", lambda: sock.exists(), daemon, timeout=30)
        r = redis_py.Redis(unix_socket_path=str(sock), decode_responses=True, socket_timeout=10)
        wait_for("embedded Redis answers", lambda: _pings(r), daemon)
        seed_world(r)
        served = wait_for_redirect(port, daemon) + redirects(port, 20)
        wait_for("counts written", lambda: total(r) == served, daemon)
        small_fs.fill()
        full_from = len(daemon.output())
        # The AOF's last page still has room for a few flushes: count on until Redis refuses one.
        deadline = time.monotonic() + 20
        while "Uncommited stats" not in daemon.output()[full_from:]:
            assert time.monotonic() < deadline, daemon.output()[full_from:]
            served += redirects(port, 20)
            time.sleep(0.3)
        served += redirects(port, 100)
        time.sleep(2)  # more flushes refused
        during = daemon.output()[full_from:]
        assert total(r) < served
        small_fs.free()
        wait_for("every count in Redis", lambda: total(r) >= served, daemon, timeout=30)
        time.sleep(1)
        assert total(r) == served
        out = daemon.output()[full_from:]
    finally:
        processes.stop(daemon.proc)
    print("\n" + out)
    assert during.count("Uncommited stats kept in-memory") == 1, during
    assert "MISCONF" in during


def _pings(r: redis_py.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis_py.exceptions.RedisError:
        return False


def test_embedded_redis_data_dir_read_only_at_start(tmp_path: Path, small_fs: SmallFs) -> None:
    """No Redis can run on a read-only data directory: a clear fatal start-up error naming the
    path, and no traceback (the daemon cannot redirect without any Redis to read from)."""
    data = small_fs.path / "data"
    data.mkdir()
    small_fs.read_only(True)
    pidfile = tmp_path / "mirrorbits.pid"
    # Not start_daemon: it waits for the listening port, which this daemon may never open.
    conf = write_config(tmp_path, free_port(), "embedded", f"DataDir: {data}\n")
    daemon = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
    try:
        assert daemon.proc.wait(60) != 0
    finally:
        processes.stop(daemon.proc)
    out = daemon.output()
    assert out.count(f"cannot start the embedded Redis: [Errno 30] Read-only file system: '{data}") == 1, out
    assert "Traceback" not in out and "Unhandled" not in out, out
