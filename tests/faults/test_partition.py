"""A network partition between a real daemon and its real redis-server (a proxy in between).

Redis stays up but the link goes silent (nothing forwarded, nothing closed), or slow (200 ms each
way). What must hold: requests for files in the view keep their latency (they never touch Redis);
a miss is answered with the fallbacks within ``RedisLoadTimeout``; the daemon logs the partition
once and reconnects by itself once the link heals; every download counted across the partition
reaches the ``STATS_*`` counters exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrorbits.redis import schema
from mirrorbits.redis.connection import DEAD_LINK_SILENCE
from tests.faults.helpers import FALLBACK, get, percentile, start_daemon, wait_for_redirect
from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.tcpproxy import TcpProxy
from tests.lifecycle.helpers import FILE, MIRROR_URL, MODTIME, REDIRECT_TO, Daemon

SECOND = "/second.tgz"


@pytest.fixture
def proxy(redis: RedisServer) -> Iterator[TcpProxy]:
    with TcpProxy(redis.port) as p:
        yield p


def total(redis: RedisServer) -> int:
    return int(redis.client().get(schema.STATS_TOTAL) or 0)


def miss_paths(tmp: Path, n: int) -> list[str]:
    """Files on disk the view does not hold (and Redis does not know)."""
    (tmp / "repo" / "miss").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        (tmp / "repo" / "miss" / f"f{i}.bin").write_bytes(b"m")
        paths.append(f"/miss/f{i}.bin")
    return paths


def publish_file(redis: RedisServer, tmp: Path, path: str) -> None:
    """A file on disk and in Redis, carried by the seeded mirror (no message published: the view
    learns of it on its first request)."""
    (tmp / "repo" / path.lstrip("/")).write_bytes(b"y" * 48)
    r = redis.client()
    r.hset(schema.file_key(path), mapping={"size": "48", "modTime": MODTIME, "sha1": "",
                                           "sha256": "", "md5": ""})
    r.sadd(schema.FILES, path)
    r.sadd(schema.file_mirrors_key(path), "1")
    r.hset(schema.file_info_key(1, path), mapping={"size": "48", "modTime": MODTIME})


def hits(port: int, n: int) -> list[float]:
    """``n`` GETs of the file in the view, one after the other: their times (each a counted 302)."""
    times = []
    for _ in range(n):
        a = get(port, FILE)
        assert (a.status, a.location) == (302, REDIRECT_TO)
        times.append(a.seconds)
    return times


def wait_total(redis: RedisServer, want: int, daemon: Daemon, timeout: float = 20.0) -> float:
    """Seconds until ``STATS_TOTAL`` reaches ``want``; then it must stay there (nothing twice)."""
    started = time.monotonic()
    while total(redis) < want:
        assert time.monotonic() - started < timeout, (total(redis), want, daemon.output()[-3000:])
        time.sleep(0.05)
    took = time.monotonic() - started
    time.sleep(1.5)  # three more flush intervals: a delayed duplicate would show now
    assert total(redis) == want, daemon.output()[-3000:]
    return took


def ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 2)


#: The deadline of a miss in these tests (``RedisLoadTimeout``), shorter than the default 2 s.
LOAD_TIMEOUT = 1.5
#: How long the partition lasts: past the silence after which the daemon drops the link
#: (``DEAD_LINK_SILENCE``, checked every second), with time to spare for misses after it.
PARTITION = DEAD_LINK_SILENCE + 3.0


def test_blackhole_then_heal(tmp_path: Path, redis: RedisServer, proxy: TcpProxy) -> None:
    daemon, port = start_daemon(tmp_path, proxy.address, f"RedisLoadTimeout: {LOAD_TIMEOUT}\n")
    try:
        misses = miss_paths(tmp_path, 100)
        counted = wait_for_redirect(port, daemon)
        before = hits(port, 300)
        counted += len(before)
        wait_total(redis, counted, daemon)
        mark = len(daemon.output())

        proxy.blackhole()
        started = time.monotonic()
        during = hits(port, 300)
        miss_times: list[tuple[float, float]] = []  # (since the partition began, duration)
        while time.monotonic() - started < PARTITION:
            path = misses[len(miss_times)]
            at = time.monotonic() - started
            a = get(port, path)
            assert (a.status, a.location) == (302, FALLBACK + path.lstrip("/")), daemon.output()
            miss_times.append((at, a.seconds))
            during += hits(port, 20)
            time.sleep(0.5)
        counted += len(during) + len(miss_times)  # a fallback redirect counts as a download too
        log_during = daemon.output()[mark:]

        # A new file published in Redis during the partition: the daemon must read it after the heal.
        publish_file(redis, tmp_path, SECOND)
        proxy.heal()
        healed = time.monotonic()
        while True:
            a = get(port, SECOND)
            assert a.status == 302
            counted += 1
            if a.location == MIRROR_URL + SECOND.lstrip("/"):
                break
            assert time.monotonic() - healed < 15, daemon.output()[mark:]
            time.sleep(0.05)
        recovered = time.monotonic() - healed
        flushed = wait_total(redis, counted, daemon)
        log_after = daemon.output()[mark + len(log_during):]
    finally:
        processes.stop(daemon.proc)

    print(f"\nhits before: p50 {ms(before, .5)} ms, p99 {ms(before, .99)} ms ({len(before)})")
    print(f"hits during: p50 {ms(during, .5)} ms, p99 {ms(during, .99)} ms ({len(during)})")
    slow = [t for at, t in miss_times if at < DEAD_LINK_SILENCE + 1.5]
    fast = [t for at, t in miss_times if at >= DEAD_LINK_SILENCE + 1.5]
    print(f"misses until the link is dropped: {len(slow)}, max {max(slow):.3f} s; "
          f"after: {len(fast)}, max {max(fast):.3f} s")
    print(f"recovered {recovered:.2f} s after the heal; counters complete {flushed:.2f} s later: {counted}")
    print("log during the partition:\n" + log_during + "log after:\n" + log_after)

    # Hits never touch Redis: their latency stays that of a plain redirect.
    assert percentile(during, .5) < percentile(before, .5) + 0.02
    assert percentile(during, .99) < 0.25
    # Misses: each within one RedisLoadTimeout; once the link is known dead, at once.
    assert max(slow) < LOAD_TIMEOUT + 0.5, miss_times
    assert fast and max(fast) < 0.25, miss_times
    # Noticed once: one line for the dead link, one for the counts kept in memory; no line per
    # request or per failed dial (the partition lasted through several dials).
    lines = [line for line in log_during.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "connection dropped" in lines[0] and "Uncommited stats kept in-memory" in log_during
    assert log_after.count("Connected to redis master") == 1, log_after
    assert "Traceback" not in daemon.output()


def test_blackhole_without_misses(
        tmp_path: Path, redis: RedisServer, proxy: TcpProxy) -> None:
    """Only hits during the partition: the flush of the counters is the one command waiting; the
    link is found dead by its silence alone. The batch was written to a link that never
    acknowledged it; the connection is aborted, so that batch is not delivered at the heal, and
    it is written again afterwards: exactly once."""
    daemon, port = start_daemon(tmp_path, proxy.address)
    try:
        counted = wait_for_redirect(port, daemon)
        wait_total(redis, counted, daemon)
        mark = len(daemon.output())
        proxy.blackhole()
        started = time.monotonic()
        while time.monotonic() - started < PARTITION:
            counted += len(hits(port, 20))
            time.sleep(0.2)
        log_during = daemon.output()[mark:]
        proxy.heal()
        wait_total(redis, counted, daemon)
    finally:
        processes.stop(daemon.proc)
    lines = [line for line in log_during.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "no answer from" in lines[0] and "connection dropped" in lines[0]
    assert "Uncommited stats kept in-memory" in log_during


def test_200ms_each_way(tmp_path: Path, redis: RedisServer, proxy: TcpProxy) -> None:
    """A slow link (200 ms each way, under ``RedisLoadTimeout``): hits keep their latency, a miss
    waits for its round trip and gets the mirror (no fallback, nothing logged), counts are exact."""
    daemon, port = start_daemon(tmp_path, proxy.address)
    try:
        counted = wait_for_redirect(port, daemon)
        before = hits(port, 300)
        counted += len(before)
        mark = len(daemon.output())
        proxy.delay(0.2)
        during = hits(port, 300)
        counted += len(during)
        publish_file(redis, tmp_path, SECOND)
        a = get(port, SECOND)
        counted += 1
        assert (a.status, a.location) == (302, MIRROR_URL + SECOND.lstrip("/"))
        during += hits(port, 100)
        counted += 100
        flushed = wait_total(redis, counted, daemon)
        log_during = daemon.output()[mark:]
        proxy.heal()
    finally:
        processes.stop(daemon.proc)
    print(f"\nhits before: p50 {ms(before, .5)} ms, p99 {ms(before, .99)} ms ({len(before)})")
    print(f"hits with 200 ms each way: p50 {ms(during, .5)} ms, p99 {ms(during, .99)} ms ({len(during)})")
    print(f"miss: {a.seconds:.3f} s; counters complete {flushed:.2f} s after the last request")
    assert percentile(during, .5) < percentile(before, .5) + 0.02
    assert percentile(during, .99) < 0.25
    assert 0.4 <= a.seconds < 2.0
    assert log_during.strip() == "", log_during
