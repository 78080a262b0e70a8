"""Download statistics end to end: a real ``mirrorbits daemon`` process on a real redis-server, the
index and mirror records written as the Go original writes them, real GET redirects over loopback,
then SIGTERM right after the last request.  The ``STATS_*`` keys must then hold exactly what was
served (per file, per mirror, bytes), on top of what a Go node had already written to the same keys,
also when Redis was stopped for a while in the middle.

The in-process variants (tests/web/test_stats.py) cover the same rules with a controlled reactor;
these tests check that the daemon's own stop order (HTTP drained, then stats flushed, then Redis
closed) really gets the last counts out of the process.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirrorbits import gocompat
from mirrorbits.redis import schema
from mirrorbits.web.stats import utc_day
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port
from tests.test_daemon import Daemon

PATH = "/pub/file.bin"
CONTENT = bytes(range(256)) * 5 + b"tail"  # 1284 bytes
SIZE = len(CONTENT)
MIRRORS = {7: "http://127.0.0.1:9/seven/", 8: "http://127.0.0.1:9/eight/"}  # never contacted


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A persistent redis-server (a stop/start keeps its data) and the Go-written index and mirrors."""
    server = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
    repo = tmp_path / "repo"
    (repo / "pub").mkdir(parents=True)
    local = repo / "pub" / "file.bin"
    local.write_bytes(CONTENT)
    st = local.stat()
    r = server.client()
    r.set("MIRRORBITS_DB_VERSION", "2")
    mod_time = gocompat.format_gts(st.st_mtime_ns, "local")  # Go: time.Time.String() in local time
    # FILE_ as the Go local scan writes it (SHA-256 only, the default Hashes), and FILES.
    r.hset(schema.file_key(PATH), mapping={"size": str(SIZE), "modTime": mod_time, "sha1": "",
                                           "sha256": hashlib.sha256(CONTENT).hexdigest(), "md5": ""})
    r.sadd(schema.FILES, PATH)
    for mid, url in MIRRORS.items():
        # The RPC save plus the state a Go monitor and scan leave behind.
        r.hset(schema.mirror_key(mid), mapping={
            "ID": str(mid), "name": f"m{mid}", "http": url, "rsync": "", "ftp": "", "enabled": "1",
            "httpUp": "1", "httpsUp": "0", "score": "0", "latitude": "0", "longitude": "0",
            "continentCode": "", "countryCodes": "", "excludedCountryCodes": "", "asnum": "0",
            "continentOnly": "0", "countryOnly": "0", "asOnly": "0", "allowredirects": "0",
            "stateSince": str(int(time.time()) - 3600), "lastSuccessfulSync": str(int(time.time()) - 60)})
        r.hset(schema.MIRRORS, str(mid), f"m{mid}")
        r.sadd(schema.file_mirrors_key(PATH), str(mid))
        r.sadd(f"MIRRORFILES_{mid}", PATH)
        r.hset(schema.file_info_key(mid, PATH), mapping={"size": str(SIZE), "modTime": mod_time})
    port = free_port()
    conf = tmp_path / "mirrorbits.conf"
    conf.write_text(
        f"Repository: {repo}\nRedisAddress: {server.address}\nDataDir: {tmp_path / 'data'}\n"
        f"ListenAddress: 127.0.0.1:{port}\nRPCListenAddress: 127.0.0.1:{free_port()}\n"
        f"GeoipDatabasePath: {tmp_path / 'nogeoip'}\nLogDir: {tmp_path / 'logs'}\n"
        f"SameDownloadInterval: 600\nOutputMode: redirect\n")
    (tmp_path / "logs").mkdir()
    started: list[Daemon] = []
    yield {"server": server, "conf": conf, "port": port, "tmp": tmp_path, "daemons": started}
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    server.cleanup()


def start_daemon(world: dict[str, Any]) -> Daemon:
    tmp: Path = world["tmp"]
    d = Daemon([sys.executable, "-m", "mirrorbits", "daemon", "-config", str(world["conf"]),
                "-monitor=false", "-p", str(tmp / "mirrorbits.pid")], world["port"], tmp)
    world["daemons"].append(d)
    d.wait_http()
    # Ready once the schema check opened the gate: HEAD is redirected to a mirror (HEAD never counts).
    deadline = time.monotonic() + 30
    while True:
        status, location = request(d.port, "HEAD")
        if status == 302 and location in {u + "pub/file.bin" for u in MIRRORS.values()}:
            return d
        assert time.monotonic() < deadline, f"daemon never redirected ({status}):\n{d.output()}"
        time.sleep(0.1)


def request(port: int, method: str = "GET", headers: dict[str, str] | None = None,
            path: str = PATH) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Location") or ""
    finally:
        conn.close()


def stats_page(port: int) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", PATH + "?stats")
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


def redirects(port: int, n: int, served: Counter[int], **kw: Any) -> None:
    """``n`` GETs; ``served`` counts which mirror each one was sent to."""
    by_url = {u + "pub/file.bin": mid for mid, u in MIRRORS.items()}
    for _ in range(n):
        status, location = request(port, **kw)
        assert status == 302, status
        served[by_url[location]] += 1


def read_counters(r: Any) -> dict[str, Any]:
    y, m, dd = utc_day(time.time())
    out: dict[str, Any] = {"total": int(r.get(schema.STATS_TOTAL) or 0)}
    out["file"] = [int(r.hget(k, PATH) or 0) for k in _levels(schema.stats_file_key, y, m, dd)]
    for mid in MIRRORS:
        out[f"mirror{mid}"] = [int(r.hget(k, str(mid)) or 0) for k in _levels(schema.stats_mirror_key, y, m, dd)]
        out[f"bytes{mid}"] = [int(r.hget(k, str(mid)) or 0)
                              for k in _levels(schema.stats_mirror_bytes_key, y, m, dd)]
    return out


def _levels(fn: Any, y: int, m: int, dd: int) -> list[str]:
    return [fn(y, m, dd), fn(y, m), fn(y), fn()]


def expected(base: dict[str, Any], served: Counter[int]) -> dict[str, Any]:
    n = sum(served.values())
    out = {"total": base["total"] + n, "file": [v + n for v in base["file"]]}
    for mid in MIRRORS:
        out[f"mirror{mid}"] = [v + served[mid] for v in base[f"mirror{mid}"]]
        out[f"bytes{mid}"] = [v + served[mid] * SIZE for v in base[f"bytes{mid}"]]
    return out


def write_go_counters(r: Any) -> dict[str, Any]:
    """What a Go node already counted today, written with Go's commands (HINCRBY/INCRBY)."""
    y, m, dd = utc_day(time.time())
    for k, v in zip(_levels(schema.stats_file_key, y, m, dd), (3, 30, 300, 3000), strict=True):
        r.hincrby(k, PATH, v)
    for mid in MIRRORS:
        for k, v in zip(_levels(schema.stats_mirror_key, y, m, dd), (2, 20, 200, 2000), strict=True):
            r.hincrby(k, str(mid), v)
        for k, v in zip(_levels(schema.stats_mirror_bytes_key, y, m, dd), (5, 50, 500, 5000), strict=True):
            r.hincrby(k, str(mid), v * SIZE)
    r.incrby(schema.STATS_TOTAL, 3000)
    return read_counters(r)


def wait_counters(r: Any, want: dict[str, Any], d: Daemon, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while read_counters(r) != want:
        assert time.monotonic() < deadline, (read_counters(r), want, d.output())
        time.sleep(0.05)


def stop_now(d: Daemon) -> None:
    code = d.stop(signal.SIGTERM)
    assert code == 0, f"exit status {code}:\n{d.output()}"


def assert_value_types(r: Any) -> None:
    """Go's HINCRBY/INCRBY on these keys only work on hashes/strings of integers: check the types."""
    for key in r.keys("STATS_*"):
        if key == schema.STATS_TOTAL:
            assert r.type(key) == "string" and r.get(key).isdigit()
        else:
            assert r.type(key) == "hash", key
            assert all(v.lstrip("-").isdigit() for v in r.hvals(key)), (key, r.hgetall(key))


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_right_after_the_last_request_keeps_every_count(world: dict[str, Any], workers: int) -> None:
    """With ``Workers: 2`` the worker processes count too, and hand their counts in before exit."""
    world["conf"].write_text(world["conf"].read_text() + f"Workers: {workers}\n")
    r = world["server"].client()
    base = write_go_counters(r)
    d = start_daemon(world)
    served: Counter[int] = Counter()
    # The daemon reads the Go counters as its own (?stats: today, month, year, total).
    assert stats_page(d.port) == {"Today": base["file"][0], "Month": base["file"][1],
                                  "Year": base["file"][2], "Total": base["file"][3]}
    if workers > 1:
        # Only the workers can answer while the parent is stopped: their counts must reach Redis.
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            redirects(d.port, 25, served)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
    else:
        redirects(d.port, 25, served)
    # Ranged GETs of one client count once (DOWNLOADED_ key); the last request of the run is the
    # first ranged GET of a new client, whose de-duplication is still in flight at SIGTERM.
    # The de-duplication runs after the answer, so with two processes a later ranged GET of the
    # same client may reach Redis first: exactly one of that client's GETs counts, with its mirror.
    ranged: dict[str, list[int]] = {}
    for ua, hits in (("ua-a", 4), ("ua-b", 1)):
        for _ in range(hits):
            seen: Counter[int] = Counter()
            redirects(d.port, 1, seen, headers={"Range": "bytes=0-9", "User-Agent": ua})
            ranged.setdefault(ua, []).extend(seen)
    served[ranged["ua-b"][0]] += 1
    pending_at_stop = read_counters(r)["total"] - base["total"]
    stop_now(d)
    got = read_counters(r)
    candidates = ranged["ua-a"] if workers > 1 else ranged["ua-a"][:1]  # one process: the first
    allowed = {mid: expected(base, served + Counter({mid: 1})) for mid in candidates}
    assert got in allowed.values(), (got, allowed, d.output())
    served[next(mid for mid, counts in allowed.items() if counts == got)] += 1
    assert sum(served.values()) == 27
    assert len(r.keys("DOWNLOADED_*")) == 2
    assert_value_types(r)
    log = d.output()
    assert "Saving stats" in log
    lines = (world["tmp"] / "logs" / "downloads.log").read_text().splitlines()
    assert sum(' 302 GET "/pub/file.bin" ' in line for line in lines) == 25 + 5
    # Not asserted (timing): how many of the counts only the final flush at stop wrote.
    print(f"counted in Redis before SIGTERM: {pending_at_stop} of 27")


def test_redis_outage_in_the_middle_then_clean_stop(world: dict[str, Any]) -> None:
    server: RedisServer = world["server"]
    r = server.client()
    base = write_go_counters(r)
    d = start_daemon(world)
    served: Counter[int] = Counter()
    redirects(d.port, 10, served)
    wait_counters(r, expected(base, served), d)
    server.stop()  # Redis away; the daemon answers from its cache and keeps the counts
    redirects(d.port, 12, served)
    time.sleep(1.2)  # a few failed flushes
    server.start()
    r = server.client()
    wait_counters(r, expected(base, served), d, timeout=20)
    # logrotate (the Go original's snippet: move the file away, then SIGUSR1 in postrotate).
    logs: Path = world["tmp"] / "logs"
    (logs / "downloads.log").rename(logs / "downloads.log.1")
    d.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not (logs / "downloads.log").exists():
        assert time.monotonic() < deadline, d.output()
        time.sleep(0.05)
    redirects(d.port, 8, served)
    stop_now(d)
    assert read_counters(r) == expected(base, served), d.output()
    assert sum(served.values()) == 30
    assert_value_types(r)
    assert "Uncommited stats kept in-memory" in d.output()
    old = (logs / "downloads.log.1").read_text().splitlines()
    new = (logs / "downloads.log").read_text().splitlines()
    assert [line[:2] for line in new[:3]] == ["# "] * 3 and new[0].startswith("# Log file created at: ")
    gets = ' REDIRECT 302 GET "/pub/file.bin" ip:127.0.0.1 mirror:m'
    assert all(gets in line or ' REDIRECT 302 HEAD "' in line for line in old + new[3:] if line[:1] != "#")
    assert (sum(gets in line for line in old), sum(gets in line for line in new)) == (22, 8)
    # What the daemon answers for ?stats is what Go's ?stats would read from the same keys.
    d2 = start_daemon(world)
    want = expected(base, served)
    assert stats_page(d2.port) == {"Today": want["file"][0], "Month": want["file"][1],
                                   "Year": want["file"][2], "Total": want["file"][3]}
    stop_now(d2)


def test_counts_survive_a_seamless_upgrade(world: dict[str, Any]) -> None:
    """SIGUSR2: the old process hands the socket over, saves its counts and leaves; the new one
    counts on.  Nothing is lost or counted twice across the hand-over."""
    r = world["server"].client()
    base = read_counters(r)
    d = start_daemon(world)
    pidfile: Path = world["tmp"] / "mirrorbits.pid"
    served: Counter[int] = Counter()
    redirects(d.port, 9, served)
    d.proc.send_signal(signal.SIGUSR2)
    assert d.proc.wait(60) == 0, d.output()  # the old process leaves once the child has taken over
    child = int(pidfile.read_text())
    assert child != d.proc.pid
    try:
        assert read_counters(r) == expected(base, served), d.output()
        redirects(d.port, 6, served)  # the same listening socket, now served by the child
        os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(child):
            assert time.monotonic() < deadline, d.output()
            time.sleep(0.05)
        assert not pidfile.exists()
        assert read_counters(r) == expected(base, served), d.output()
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert "Saving stats" in d.output()


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (not our child: a zombie waiting for init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
