"""The redirector on the million-file world (``bench/million.py``): memory, view hit rate, latency.

Starts a private ``redis-server`` on ``<world>/world.rdb``, starts ``mirrorbits daemon`` on
127.0.0.1 (test GeoIP databases, ``-monitor=false``, the metrics listener on), and reports:

* the time to load the RDB, the time until ``/readyz`` (the view's warm-up) and the warm-up's own
  figure (``mirrorbits_view_warmup_duration_seconds``);
* for each wrk run (Zipf paths over all million files, ``load.lua``): requests/s, p50/p99, errors,
  the daemon's CPU per request, its RSS, the view's hit rate over the run (from
  ``mirrorbits_view_lookups``: hits / all lookups), the view's size;
* during each run, a probe that asks, one at a time, for paths wrk never asks for (held out of
  wrk's list), each once: the latency of requests that miss the view (the view may hold a few of
  them from the warm-up, which loads the first paths ``SSCAN`` returns until it is 90% full: the
  probe says how many it found already loaded);
* Redis' ``INFO memory``.

    python bench/million_load.py --world /tmp/million                   # 3 runs of 60 s, -c64
    python bench/million_load.py --world /tmp/million --rate 2000       # a steady 2,000 requests/s
    python bench/million_load.py --world /tmp/million --capacity 1815000   # another view capacity

``--rate`` paces each wrk connection (``load.lua``'s ``DELAY_MS``), so the load is a steady rate
below saturation rather than as many requests as the daemon can take.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import million  # noqa: E402
import redirector  # noqa: E402

from tests.fixtures.servers import free_port, wait_for_port  # noqa: E402


def scrape(port: int) -> dict[str, float]:
    """The daemon's metrics as ``name{labels}`` -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


PATHS_HELD = 'mirrorbits_view_entries{kind="paths"}'


def view_counts(m: dict[str, float]) -> dict[str, float]:
    return {k: m.get(f'mirrorbits_view_lookups_total{{result="{k}"}}', 0.0)
            for k in ("hit", "negative", "miss")}


class Probe(threading.Thread):
    """Requests for paths nobody else asks for, one at a time, each once: misses of the view."""

    def __init__(self, port: int, paths: list[str], ips: list[str], interval: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.paths = paths
        self.ips = ips
        self.interval = interval
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.codes: dict[int, int] = {}

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        rng = random.Random(7)
        while self.paths and not self.stop.is_set():
            path = self.paths.pop()
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers={"X-Forwarded-For": rng.choice(self.ips)})
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            self.latencies.append(time.perf_counter() - t0)
            self.codes[resp.status] = self.codes.get(resp.status, 0) + 1
            self.stop.wait(self.interval)
        conn.close()


def gc_pauses(path: str, since: float) -> list[float]:
    """Pauses (seconds) of the daemon's full collections logged after ``since`` (Unix time)."""
    try:
        with open(path) as f:
            rows = [line.split() for line in f]
    except OSError:
        return []
    return [float(r[1]) for r in rows if len(r) == 3 and float(r[0]) >= since]


class ExternalRedis:
    """A redis-server this script did not start (``--redis``): used, never stopped."""

    def __init__(self, address: str) -> None:
        self.address = address
        host, port = address.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.proc = None
        pid = self.client(decode=False).info("server")["process_id"]
        self.pid = int(pid)

    def client(self, decode: bool = True) -> object:
        import redis as redis_py

        return redis_py.Redis(host=self.host, port=self.port, decode_responses=decode, socket_timeout=60)

    def cleanup(self) -> None:
        pass


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, help="the directory bench/million.py built")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rate", type=int, default=0,
                    help="a steady total rate (requests/s) instead of saturation")
    ap.add_argument("--holdout", type=int, default=3000, help="paths kept for the miss probe")
    ap.add_argument("--probe-interval", type=float, default=0.02)
    ap.add_argument("--capacity", type=int, default=0, help="the view's capacity (0: the default)")
    ap.add_argument("--redis", help="host:port of a redis-server already serving the world "
                    "(`bench/million.py --out DIR --serve`): saves reloading the RDB for each run")
    ap.add_argument("--gc-threshold", help="(experiments) gc.set_threshold for the daemon, e.g. 700,10,10")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="mirrorbits-million-")
    with open(os.path.join(args.world, "paths.txt")) as f:
        ranked = f.read().split()
    with open(os.path.join(args.world, "ips.txt")) as f:
        ips = f.read().split()
    rng = random.Random(11)
    held = set(rng.sample(range(len(ranked)), args.holdout))
    held_paths = [ranked[i] for i in sorted(held)]
    rng.shuffle(held_paths)
    wrk_dir = os.path.join(tmp, "wrk")
    os.makedirs(wrk_dir)
    with open(os.path.join(wrk_dir, "paths.txt"), "w") as f:
        f.write("\n".join(p for i, p in enumerate(ranked) if i not in held) + "\n")
    os.symlink(os.path.join(args.world, "ips.txt"), os.path.join(wrk_dir, "ips.txt"))

    t0 = time.monotonic()
    redis = ExternalRedis(args.redis) if args.redis else million.serve(args.world)
    print(f"redis-server: {'running' if args.redis else 'world.rdb loaded'} in {time.monotonic() - t0:.0f} s; "
          f"{million.memory(redis.client(decode=False))}", flush=True)
    daemon = None
    try:
        port, metrics_port = free_port(), free_port()
        conf = redirector.write_config(tmp, os.path.join(args.world, "repo"), redis.address, port, 1)
        with open(conf, "a") as f:
            f.write(f"MetricsListenAddress: 127.0.0.1:{metrics_port}\n")
        env = dict(os.environ, PYTHONPATH=ROOT)
        if args.gc_threshold:
            env["MIRRORBITS_BENCH_GC_THRESHOLD"] = args.gc_threshold
        if args.capacity:
            env["MIRRORBITS_BENCH_VIEW_CAPACITY"] = str(args.capacity)
        log = open(os.path.join(tmp, "daemon.log"), "w")
        gc_log = os.path.join(tmp, "gc.log")
        env["MIRRORBITS_BENCH_GC_LOG"] = gc_log
        code = ("import sys, os, gc, time\n"
                # Every full (generation 2) collection of the daemon: its pause, one line each.
                "_gc_log = open(os.environ['MIRRORBITS_BENCH_GC_LOG'], 'a', buffering=1)\n"
                "_gc_t = [0.0]\n"
                "def _gc_cb(phase, info):\n"
                "    if info['generation'] == 2:\n"
                "        if phase == 'start': _gc_t[0] = time.perf_counter()\n"
                "        else: _gc_log.write(f'{time.time():.3f} {time.perf_counter() - _gc_t[0]:.4f} '\n"
                "                            f'{info[\"collected\"]}\\n')\n"
                "gc.callbacks.append(_gc_cb)\n"
                "_thr = os.environ.get('MIRRORBITS_BENCH_GC_THRESHOLD')\n"
                "if _thr: gc.set_threshold(*map(int, _thr.split(',')))\n"
                "cap = os.environ.get('MIRRORBITS_BENCH_VIEW_CAPACITY')\n"
                "if cap:\n"
                "    import mirrorbits.cache as c; c.DEFAULT_CAPACITY = int(cap)\n"
                "    c.MirrorView.__init__.__kwdefaults__['capacity'] = int(cap)\n"
                "from mirrorbits.console import main; sys.exit(main())")
        t_start = time.monotonic()
        daemon = subprocess.Popen([sys.executable, "-c", code, "daemon", "-config", conf,
                                   "-monitor=false", "-p", os.path.join(tmp, "mirrorbits.pid")],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for_port("127.0.0.1", port, 120)
        wait_for_port("127.0.0.1", metrics_port, 120)
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=30)
                break
            except urllib.error.HTTPError:
                time.sleep(0.2)
            if time.monotonic() - t_start > 900:
                raise TimeoutError("the view did not warm in 15 minutes")
        ready = time.monotonic() - t_start
        m = scrape(metrics_port)
        print(f"daemon ready (view warm) {ready:.1f} s after start; warm-up "
              f"{m.get('mirrorbits_view_warmup_duration_seconds', float('nan')):.1f} s, "
              f"{m.get(PATHS_HELD, 0):.0f} paths, "
              f"RSS {redirector.rss_kib(daemon.pid) / 1024:.0f} MiB", flush=True)
        pids = redirector.descendants(daemon.pid)
        if args.rate:
            # Each connection sends one request per DELAY_MS (plus its latency).
            os.environ["DELAY_MS"] = str(max(1, round(1000 * args.connections / args.rate)))
        for run in range(args.runs):
            before = view_counts(scrape(metrics_port))
            gc_mark = time.time()
            probe = Probe(port, held_paths, ips, args.probe_interval)
            probe.start()
            res = redirector.run_wrk(port, wrk_dir, args.duration, args.threads, args.connections,
                                     pids, redis.proc.pid if redis.proc is not None
                                     else getattr(redis, "pid", None))
            probe.stop.set()
            probe.join(30)
            m = scrape(metrics_port)
            after = view_counts(m)
            d = {k: after[k] - before[k] for k in after}
            total = sum(d.values())
            redirector.report(f"run {run + 1}{f' (rate {args.rate}/s)' if args.rate else ''}", res,
                              redirector.rss_kib(daemon.pid))
            lat = probe.latencies
            print(f"  view: hit rate {100 * (d['hit'] + d['negative']) / max(1, total):.1f}% "
                  f"({d['hit']:.0f} hits, {d['miss']:.0f} misses), "
                  f"{m.get(PATHS_HELD, 0):.0f} paths held; "
                  f"miss probe: {len(lat)} requests {probe.codes}, p50 {1000 * pct(lat, 0.5):.1f} ms, "
                  f"p99 {1000 * pct(lat, 0.99):.1f} ms, max {1000 * max(lat, default=0):.1f} ms, "
                  f"mean {1000 * (statistics.mean(lat) if lat else 0):.1f} ms", flush=True)
            pauses = gc_pauses(gc_log, gc_mark)
            print(f"  full GC collections during the run: {len(pauses)}, longest "
                  f"{1000 * max(pauses, default=0):.0f} ms, total {1000 * sum(pauses):.0f} ms", flush=True)
        print(f"redis: {million.memory(redis.client(decode=False))}", flush=True)
    finally:
        if daemon is not None:
            redirector.stop_daemon(daemon, 30)
        redis.cleanup()
        if args.keep:
            print("kept", tmp)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
