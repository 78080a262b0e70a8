"""Benchmark of the local repository scan: 100,000 small files, a private redis-server.

Prints, for a first scan, a no-change rescan and a rescan after 1% of the files changed: wall time,
files hashed and records written, peak RSS of this process; the worst latency of two PING loops run
during each scan (one on the scanning process's own reactor, which also sees reactor/GIL stalls, and
one in a separate process, which sees only Redis) and the worst lateness of the reactor loop's 5 ms
timer (a stall between two PINGs); the longest Redis command (SLOWLOG); and the throughput of
``sha256sum`` over the same files as the physical limit.

    python bench/local_scan.py                 # 100,000 files
    python bench/local_scan.py --repo /tmp/benchrepo   # build once, reuse on later runs
    python bench/local_scan.py --repo /tmp/spread --spread-mtimes   # mtimes spread over 10 years
    python bench/local_scan.py --files 20000 --sweep 100,250,500,1000,2000   # commit-batch sweep

The process runs one full garbage collection before the first scan, as a long-running daemon has
long done: otherwise the first full collection of this young process (every object created at
import time, ~50 ms here) lands in the first scan whatever the scan does.  The GC pauses of each
scan are printed (count of full collections and the longest pause).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from mirrorbits.config import Config, TorrentConfig  # noqa: E402
from mirrorbits.redis.connection import RedisClient, RedisSettings  # noqa: E402
from mirrorbits.scan.local import COMMIT_BATCH, HASH_WORKERS, LocalScanner  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402

PER_DIR = 1000

PING_PROC = r"""
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
worst = 0.0
f = s.makefile("rb")
while True:
    t = time.perf_counter()
    s.sendall(b"PING\r\n")
    if not f.readline():
        break
    worst = max(worst, time.perf_counter() - t)
    sys.stdout.write("%f\n" % worst); sys.stdout.flush()
    time.sleep(0.005)
"""


def build_tree(root: str, n: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    for i in range(n):
        d = os.path.join(root, f"d{i // PER_DIR:04d}")
        if i % PER_DIR == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"file-{i:06d}.bin"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(100, 4000)))


def spread_mtimes(root: str, n: int, seed: int = 2) -> None:
    """Random mtimes over ten years (nanoseconds too): no two files share a minute, the worst case
    of the scan's per-minute modTime text cache."""
    rnd = random.Random(seed)
    for i in range(n):
        p = os.path.join(root, f"d{i // PER_DIR:04d}", f"file-{i:06d}.bin")
        ns = rnd.randrange(1_400_000_000, 1_715_000_000) * 1_000_000_000 + rnd.randrange(1_000_000_000)
        os.utime(p, ns=(ns, ns))


class GcPauses:
    """Full collections and the longest GC pause while installed."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._t)
        if info["generation"] == 2:
            self.full += 1


def touch_percent(root: str, n: int, percent: float) -> int:
    count = int(n * percent / 100)
    for i in range(0, n, max(1, n // count))[:count]:
        p = os.path.join(root, f"d{i // PER_DIR:04d}", f"file-{i:06d}.bin")
        with open(p, "ab") as f:
            f.write(b"changed")
    return count


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sha256sum_rate(root: str, n: int, parallel: int) -> float:
    t = time.perf_counter()
    subprocess.run(f"find {root} -type f -print0 | xargs -0 -P{parallel} -n 2000 sha256sum >/dev/null",
                   shell=True, check=True)
    return n / (time.perf_counter() - t)


class PingLoop:
    """PINGs on its own connection of the scanning process's reactor, every 5 ms.  ``worst`` is the
    longest PING round trip; ``worst_timer`` the longest overshoot of the 5 ms timer between two
    PINGs, which catches a reactor (or GIL) stall that falls between two round trips."""

    def __init__(self, client: RedisClient, reactor: Any) -> None:
        self.client, self.reactor = client, reactor
        self.worst = 0.0
        self.worst_timer = 0.0
        self.running = False

    async def run(self) -> None:
        self.running = True
        while self.running:
            t = time.perf_counter()
            await self.client.execute("PING")
            t2 = time.perf_counter()
            self.worst = max(self.worst, t2 - t)
            await task.deferLater(self.reactor, 0.005, lambda: None)
            self.worst_timer = max(self.worst_timer, time.perf_counter() - t2 - 0.005)


def _redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def timed_scan(label: str, scanner: LocalScanner, ping_client: RedisClient, server: RedisServer,
                     reactor: Any, rehash: bool = False) -> dict[str, Any]:
    r = server.client()
    r.slowlog_reset()
    proc = subprocess.Popen([sys.executable, "-c", PING_PROC, str(server.port)], stdout=subprocess.PIPE,
                            text=True)
    await task.deferLater(reactor, 0.2, lambda: None)
    loop = PingLoop(ping_client, reactor)
    ld = defer.Deferred.fromCoroutine(loop.run())
    load = os.getloadavg()[0]
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    t = time.perf_counter()
    cpu = time.process_time()
    redis_cpu = _redis_cpu(r)
    try:
        result = await scanner.scan(rehash=rehash)
    finally:
        gc.callbacks.remove(pauses)
    elapsed = time.perf_counter() - t
    cpu = time.process_time() - cpu
    redis_cpu = _redis_cpu(r) - redis_cpu
    loop.running = False
    await ld
    proc.terminate()
    out = proc.communicate()[0].split()
    ext_worst = float(out[-1]) if out else float("nan")
    slow = r.slowlog_get(100000)
    worst_cmd = max(slow, key=lambda e: e["duration"]) if slow else None
    row = {
        "label": label, "seconds": elapsed, "cpu": cpu, "redis_cpu": redis_cpu, "hashed": result.hashed, "written": result.written,
        "indexed": result.indexed, "removed": result.removed, "rss_mb": peak_rss_mb(),
        "ping_reactor_ms": loop.worst * 1000, "ping_external_ms": ext_worst * 1000,
        "timer_late_ms": loop.worst_timer * 1000,
        "slowest_cmd_ms": (worst_cmd["duration"] / 1000) if worst_cmd else 0.0,
        "load": load, "gc_full": pauses.full, "gc_longest_ms": pauses.longest * 1000,
        "slowest_cmd": (worst_cmd["command"][:40].decode("utf-8", "replace")
                        if worst_cmd and isinstance(worst_cmd["command"], bytes)
                        else (str(worst_cmd["command"])[:40] if worst_cmd else "")),
    }
    print(f"{label:<22} {elapsed:7.2f}s wall, {cpu:6.2f}s CPU (Redis {redis_cpu:5.2f}s)  "
          f"{result.indexed / elapsed:7.0f} files/s  hashed={result.hashed:<6} "
          f"written={result.written:<6} removed={result.removed:<4} peakRSS={row['rss_mb']:.0f}MB  "
          f"PING worst: reactor {row['ping_reactor_ms']:.1f}ms, external {row['ping_external_ms']:.1f}ms, "
          f"reactor timer late {row['timer_late_ms']:.1f}ms  "
          f"slowest Redis cmd {row['slowest_cmd_ms']:.2f}ms ({str(row['slowest_cmd']).split()[0] if row['slowest_cmd'] else ''})  "
          f"GC: {pauses.full} full, longest pause {pauses.longest * 1000:.1f}ms  load {load:.2f}",
          flush=True)
    return row


async def main(reactor: Any, args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="mirrorbits-bench-")
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    server = RedisServer(extra_args=["--slowlog-log-slower-than", "500", "--slowlog-max-len", "100000"])
    server.start()
    sub = server.client().pubsub()
    sub.subscribe("_mirrorbits_file_update")  # a realistic PUBLISH cost: one subscriber
    import threading

    def drain() -> None:
        try:
            for _ in sub.listen():
                pass
        except Exception:  # closed at the end
            pass

    threading.Thread(target=drain, daemon=True).start()
    clients: list[RedisClient] = []
    try:
        if args.repo:  # reuse a tree built by an earlier run (building 100k files takes a while)
            repo = args.repo
            if not os.path.isdir(repo):
                os.makedirs(repo)
                build_tree(repo, args.files)
                if args.spread_mtimes:
                    spread_mtimes(repo, args.files)
        else:
            repo = os.path.join(tmp, "repo")
            os.makedirs(repo)
            t = time.perf_counter()
            build_tree(repo, args.files)
            if args.spread_mtimes:
                spread_mtimes(repo, args.files)
            print(f"built {args.files} files in {time.perf_counter() - t:.1f}s under {repo}", flush=True)
        subprocess.run(["sync"], check=False)
        print(f"sha256sum: {sha256sum_rate(repo, args.files, 1):.0f} files/s (1 process), "
              f"{sha256sum_rate(repo, args.files, 2):.0f} files/s (2 processes)", flush=True)
        settings = RedisSettings(address=server.address)

        def new_client() -> RedisClient:
            c = RedisClient(lambda: settings, reactor=reactor)
            c.start()
            c.set_ready()
            clients.append(c)
            return c

        cfg = Config(Repository=repo, Torrent=TorrentConfig(Enabled=args.torrent))
        print(f"-- torrents {'on (piece hashes computed)' if args.torrent else 'off'}", flush=True)
        gc.collect()  # see the module docstring
        ping_client = new_client()
        batches = [int(x) for x in args.sweep.split(",")] if args.sweep else [args.batch]
        for batch in batches:
            server.flush()
            scanner = LocalScanner(new_client(), lambda: cfg, reactor=reactor, commit_batch=batch,
                                   hash_workers=args.workers)
            print(f"-- commit batch {batch}, {args.workers} hash threads", flush=True)
            await timed_scan("first scan", scanner, ping_client, server, reactor)
            if args.sweep:
                continue
            await timed_scan("no-change rescan", scanner, ping_client, server, reactor)
            changed = touch_percent(repo, args.files, 1.0)
            await timed_scan(f"rescan, {changed} changed", scanner, ping_client, server, reactor)
    finally:
        for c in clients:
            await c.stop()
        sub.close()
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=COMMIT_BATCH, help="files per commit MULTI")
    parser.add_argument("--workers", type=int, default=HASH_WORKERS, help="hashing threads")
    parser.add_argument("--repo", default="", help="reuse (or build once) the tree in this directory; "
                        "the 1%% change run modifies it")
    parser.add_argument("--spread-mtimes", action="store_true",
                        help="give the files random mtimes over ten years when building the tree")
    parser.add_argument("--torrent", action="store_true",
                        help="Torrent.Enabled: the scan also computes and stores piece hashes")
    parser.add_argument("--sweep", default="", help="comma-separated commit batch sizes (first scan only)")
    opts = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, opts)))
