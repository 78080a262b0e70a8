"""Serving while every mirror is rescanned: requests/s and latency before, during and after a full
rescan, and the daemon's CPU per listed entry (loopback only).

The bench world (:mod:`bench.world`: 5,000 files, 60 mirrors) in a private ``redis-server``; its
repository tree served by one real ``rsync --daemon`` module (the rsync URL of every mirror but the
first ``--ftp`` ones) and by a real FTP server (pyftpdlib, MLSD without MDTM: the FTP URL of those).
A ``mirrorbits daemon -monitor=false`` (the world's mirrors are not on loopback, so no health checks)
with the GeoLite2 test databases and ``Workers`` as given; scans are started the way an admin does,
``mirrorbits scan -all`` (one mirror after the other, each over rsync, else FTP).

1. A first ``scan -all`` brings every mirror's index to what it lists (not measured).
2. The daemon's CPU per listed entry, nothing else running: an unchanged ``scan -all`` and a
   1%-changed one (the mtime of 1% of the files moved, so every mirror lists them changed and the
   view refreshes them).  The parent process's CPU (``/proc/<pid>/stat``; the rsync processes, the
   FTP server and Redis are not included), the workers' separately.
3. The idle capacity: ``wrk -t2 -c8`` unpaced with ``load.lua`` (the realistic mix: Zipf paths,
   client addresses all over the world).
4. At half that capacity, paced (``paced.lua``, ``-c16``), in windows of ``--window`` seconds:
   before, during and after an unchanged ``scan -all``, then the same around a 1%-changed one.
   Per phase: requests/s, the median window's p50 and the worst window's p99.

    python bench/serving_while_scanning.py --workers 1,2
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench import world  # noqa: E402
from bench.redirector import cpu_seconds, descendants, loadavg, parse_wrk, wait_warm  # noqa: E402
from bench.scan_slices import touch_share  # noqa: E402
from bench.scan_world import scan_world  # noqa: E402
from tests.fixtures.servers import free_port, wait_for_port  # noqa: E402

PASSWORD = "bench"


def write_config(tmp: Path, repo: Path, redis_address: str, http_port: int, rpc_port: int,
                 metrics_port: int, workers: int) -> Path:
    geo = tmp / "geoip"
    geo.mkdir(exist_ok=True)
    for name in ("City", "ASN"):
        shutil.copy(Path(world.GEOIP_DIR) / f"GeoLite2-{name}-Test.mmdb", geo / f"GeoLite2-{name}.mmdb")
    conf = tmp / f"mirrorbits-{workers}.conf"
    conf.write_text(f"""Repository: {repo}
RedisAddress: {redis_address}
ListenAddress: 127.0.0.1:{http_port}
RPCListenAddress: 127.0.0.1:{rpc_port}
RPCPassword: {PASSWORD}
MetricsListenAddress: 127.0.0.1:{metrics_port}
OutputMode: redirect
GeoipDatabasePath: {geo}
RepositoryScanInterval: 0
Workers: {workers}
DataDir: {tmp / 'data'}
Fallbacks:
  - URL: http://fallback.example.org/
""")
    return conf


class Daemon:
    def __init__(self, tmp: Path, repo: Path, redis_address: str, workers: int) -> None:
        self.http_port, self.rpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.workers = workers
        conf = write_config(tmp, repo, redis_address, self.http_port, self.rpc_port, self.metrics_port,
                            workers)
        self.env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.env.pop("MIRRORBITS_CONFIG", None)
        log = open(tmp / f"daemon-{workers}.log", "ab")  # noqa: SIM115 - the daemon's, closed at exit
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mirrorbits", "daemon", "-monitor=false", "-config", str(conf),
             "-p", str(tmp / f"mirrorbits-{workers}.pid")],
            cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_for_port("127.0.0.1", self.http_port, 120)
        wait_for_port("127.0.0.1", self.rpc_port, 120)
        self.worker_pids: list[int] = []

    def settle(self, paths: list[str]) -> None:
        wait_warm(self.http_port, paths[:20])
        time.sleep(5 if self.workers == 1 else 8)
        self.worker_pids = [p for p in descendants(self.proc.pid) if p != self.proc.pid]

    def reactor_lag(self) -> dict[str, float]:
        """The cumulative buckets of ``mirrorbits_reactor_lag_seconds`` (every process summed): how
        late the daemon's 500 ms timer fired, i.e. how long its reactors were busy or not scheduled."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as f:
            text = f.read().decode()
        buckets: dict[str, float] = {}
        for m in re.finditer(r'^mirrorbits_reactor_lag_seconds_bucket\{.*?le="([^"]+)".*?\} (\S+)$', text, re.M):
            buckets[m.group(1)] = buckets.get(m.group(1), 0.0) + float(m.group(2))
        return buckets

    def start_scan(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mirrorbits", "-h", "127.0.0.1", "-p", str(self.rpc_port), "-P", PASSWORD,
             "scan", "-all"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def entries_of(cli_output: str) -> int:
    return sum(int(n) for n in re.findall(r"(\d+) files indexed", cli_output))


def finish_scan(scan: subprocess.Popen[str]) -> int:
    out, _ = scan.communicate(timeout=1800)
    entries = entries_of(out)
    if "scan error" in out or not entries:
        raise RuntimeError(f"scan -all failed:\n{out}")
    return entries


def measure_scan_cpu(daemon: Daemon, label: str) -> None:
    parent0, workers0 = cpu_seconds([daemon.proc.pid]), cpu_seconds(daemon.worker_pids)
    t0 = time.perf_counter()
    entries = finish_scan(daemon.start_scan())
    wall = time.perf_counter() - t0
    parent, workers = cpu_seconds([daemon.proc.pid]) - parent0, cpu_seconds(daemon.worker_pids) - workers0
    extra = f", workers {workers:.2f} s" if daemon.worker_pids else ""
    print(f"  {label}: {entries} listed entries, daemon CPU {parent:.2f} s "
          f"({parent / entries * 1e6:.1f} us/entry){extra}, wall {wall:.1f} s, load {loadavg()}", flush=True)


def wrk(port: int, world_dir: Path, seconds: float, rate: float | None, threads: int = 2,
        conns: int = 16) -> dict[str, float]:
    """One wrk run: unpaced (``load.lua``) or at ``rate`` requests/s (``paced.lua``)."""
    env = dict(os.environ, WORLD_DIR=str(world_dir), LOAD_LUA=str(HERE / "load.lua"))
    script = HERE / "load.lua"
    if rate is not None:
        env["PACED_RATE_PER_THREAD"] = str(rate / threads)
        script = HERE / "paced.lua"
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "-s", str(script),
                          f"http://127.0.0.1:{port}/"], env=env, capture_output=True, text=True,
                         check=True).stdout
    return parse_wrk(out)


def summary(windows: list[dict[str, float]]) -> tuple[float, float, float, int]:
    """(requests/s, median window p50 ms, worst window p99 ms, errors) over a phase's windows."""
    requests = sum(w["REQUESTS"] for w in windows)
    seconds = sum(w["DURATION_US"] for w in windows) / 1e6
    return (requests / seconds, statistics.median(w["LATENCY_P50_US"] for w in windows) / 1000,
            max(w["LATENCY_P99_US"] for w in windows) / 1000, int(sum(w["ERRORS"] for w in windows)))


def lag_text(start: dict[str, float], end: dict[str, float]) -> str:
    """How many of the daemon's 500 ms reactor-lag samples taken meanwhile were later than 25 and
    100 ms."""
    def delta(le: str) -> float:
        return end.get(le, 0.0) - start.get(le, 0.0)
    total = delta("+Inf")
    return (f"reactor lag samples > 25 ms: {total - delta('0.025'):.0f}, > 100 ms: {total - delta('0.1'):.0f}, "
            f"> 1 s: {total - delta('1.0'):.0f} of {total:.0f}")


def serve_around_scan(daemon: Daemon, world_dir: Path, rate: float, window: float, label: str,
                      calm: int) -> None:
    port = daemon.http_port
    lag0 = daemon.reactor_lag()
    before = [wrk(port, world_dir, window, rate) for _ in range(calm)]
    lag1 = daemon.reactor_lag()
    parent0, workers0 = cpu_seconds([daemon.proc.pid]), cpu_seconds(daemon.worker_pids)
    t0 = time.perf_counter()
    scan = daemon.start_scan()
    during = []
    while scan.poll() is None:
        during.append(wrk(port, world_dir, window, rate))
    wall = time.perf_counter() - t0
    entries = finish_scan(scan)
    parent, workers = cpu_seconds([daemon.proc.pid]) - parent0, cpu_seconds(daemon.worker_pids) - workers0
    lag2 = daemon.reactor_lag()
    after = [wrk(port, world_dir, window, rate) for _ in range(calm)]
    lag3 = daemon.reactor_lag()
    lags = {"before": lag_text(lag0, lag1), "during": lag_text(lag1, lag2), "after": lag_text(lag2, lag3)}
    idle_rps = summary(before)[0]
    print(f"  {label} ({entries} listed entries, scan wall {wall:.1f} s; daemon CPU meanwhile: "
          f"parent {parent:.1f} s{f', workers {workers:.1f} s' if daemon.worker_pids else ''}):", flush=True)
    for name, windows in (("before", before), ("during", during), ("after", after)):
        rps, p50, p99, errors = summary(windows)
        print(f"    {name:6s} {rps:7.0f} requests/s ({100 * rps / idle_rps:3.0f}% of before), p50 {p50:5.2f} ms, "
              f"p99 {p99:6.2f} ms (worst of {len(windows)} windows), errors {errors}; {lags[name]}", flush=True)
    print("    windows during: " + ", ".join(
        f"{w['RPS']:.0f}/s p99 {w['LATENCY_P99_US'] / 1000:.1f}" for w in during) + f"; load {loadavg()}",
        flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="comma-separated Workers settings to run")
    ap.add_argument("--ftp", type=int, default=6, help="mirrors scanned over FTP instead of rsync")
    ap.add_argument("--window", type=float, default=3.0, help="seconds per wrk run")
    ap.add_argument("--rate", type=float, help="paced requests/s (default: half the measured capacity)")
    ap.add_argument("--calm", type=int, default=8, help="windows before and after each scan")
    args = ap.parse_args()
    with scan_world("mb-servescan-", ftp=args.ftp, ips=True) as w:
        tmp, repo = w.workdir, w.repo
        paths = world.file_paths()
        random.Random(5).shuffle(paths)
        (tmp / "paths.txt").write_text("\n".join(paths) + "\n")
        print(f"machine: {os.cpu_count()} CPUs, load {loadavg()}; world {w.counts}; "
              f"{w.counts['mirrors'] - args.ftp} mirrors over rsync, {args.ftp} over FTP", flush=True)
        first = True
        for workers in (int(n) for n in args.workers.split(",")):
            daemon = Daemon(tmp, repo, w.redis.address, workers)
            try:
                daemon.settle(paths)
                print(f"Workers: {workers} ({1 + len(daemon.worker_pids)} processes)", flush=True)
                if first:
                    t0 = time.perf_counter()
                    entries = finish_scan(daemon.start_scan())
                    print(f"  first scan -all: {entries} entries in {time.perf_counter() - t0:.1f} s", flush=True)
                    first = False
                measure_scan_cpu(daemon, "unchanged scan -all, no load")
                n = touch_share(repo, 0.01, seed=workers)
                measure_scan_cpu(daemon, f"1%-changed scan -all ({n} files moved), no load")
                wrk(daemon.http_port, tmp, 5, None, conns=8)  # warm-up: GeoIP, plans
                capacity = wrk(daemon.http_port, tmp, 10, None, conns=8)
                rate = args.rate or capacity["RPS"] / 2
                print(f"  idle capacity (wrk -t2 -c8, unpaced): {capacity['RPS']:.0f} requests/s, "
                      f"p99 {capacity['LATENCY_P99_US'] / 1000:.2f} ms; paced at {rate:.0f} requests/s", flush=True)
                serve_around_scan(daemon, tmp, rate, args.window, "unchanged scan -all", args.calm)
                n = touch_share(repo, 0.01, seed=100 + workers)
                serve_around_scan(daemon, tmp, rate, args.window, f"1%-changed scan -all ({n} files moved)",
                                  args.calm)
            finally:
                daemon.stop()


if __name__ == "__main__":
    main()
