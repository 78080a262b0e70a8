"""Benchmark the redirector on the realistic world (loopback only).

Starts a private redis-server, fills it with bench/world.py, starts ``mirrorbits daemon`` on
127.0.0.1 with the GeoLite2 *test* databases, waits until its cache is warm, then runs
``wrk -t2 -c64 -d20s -s bench/load.lua`` and prints requests/s, p50/p99 latency and the daemon's
RSS (all worker processes summed).

    python bench/redirector.py --workers 1
    python bench/redirector.py --workers 2 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

sys.path.insert(0, HERE)
import world  # noqa: E402

from tests.fixtures.redis import RedisServer  # noqa: E402
from tests.fixtures.servers import free_port, wait_for_port  # noqa: E402


def rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants (KiB)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return total


def write_config(tmp: str, repo: str, redis_address: str, port: int, workers: int) -> str:
    geo = os.path.join(tmp, "geoip")
    os.makedirs(geo)
    for name in ("City", "ASN"):
        shutil.copy(os.path.join(world.GEOIP_DIR, f"GeoLite2-{name}-Test.mmdb"),
                    os.path.join(geo, f"GeoLite2-{name}.mmdb"))
    path = os.path.join(tmp, "mirrorbits.conf")
    with open(path, "w") as f:
        f.write(f"""Repository: {repo}
RedisAddress: {redis_address}
ListenAddress: 127.0.0.1:{port}
OutputMode: redirect
GeoipDatabasePath: {geo}
RepositoryScanInterval: 0
Workers: {workers}
DataDir: {os.path.join(tmp, 'data')}
Fallbacks:
  - URL: http://fallback.example.org/
""")
    return path


def wait_warm(port: int, sample: list[str], timeout: float = 120.0) -> None:
    """Wait until requests for a sample of paths are answered with mirror redirects."""
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(NoRedirect())
    while time.monotonic() < deadline:
        ok = 0
        for p in sample:
            try:
                opener.open(f"http://127.0.0.1:{port}{p}", timeout=5)
            except urllib.error.HTTPError as e:
                if e.code == 302 and "fallback" not in (e.headers.get("Location") or ""):
                    ok += 1
            except OSError:
                pass
        if ok == len(sample):
            return
        time.sleep(0.5)
    raise TimeoutError("the daemon did not serve mirror redirects in time")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def run_wrk(port: int, world_dir: str, duration: int, threads: int, conns: int) -> dict[str, float]:
    env = dict(os.environ, WORLD_DIR=world_dir)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "-s", os.path.join(HERE, "load.lua"),
         f"http://127.0.0.1:{port}/"], env=env, capture_output=True, text=True, check=True).stdout
    vals: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isupper() and parts[1].lstrip("-").isdigit():
            vals[parts[0]] = float(parts[1])
    vals["RPS"] = vals["REQUESTS"] / (vals["DURATION_US"] / 1e6)
    return vals


def serve_standalone(conf: str) -> None:
    """Only the HTTP side of the daemon (Redis service, redirector, listener), for when the full
    daemon cannot start (``--standalone``): same service classes as ``makeService``."""
    from twisted.application import service, strports
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from mirrorbits.app import Mirrorbits
    from mirrorbits.config import ConfigHolder, load_config
    from mirrorbits.endpoints import listen_description
    from mirrorbits.service import RedisService
    from mirrorbits.web.site import make_site
    from mirrorbits.web.workers import RedirectorService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    holder = ConfigHolder(load_config(conf), conf)
    app = Mirrorbits(holder, reactor, monitor=False)
    root = service.MultiService()
    RedisService(app).setServiceParent(root)
    RedirectorService(app).setServiceParent(root)
    http = strports.service(listen_description(holder.current.ListenAddress), make_site(app))
    http.setName("http")
    http.setServiceParent(root)
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve":
        if "--no-memo" in sys.argv:
            from mirrorbits.web.resource import RedirectorResource

            RedirectorResource.memo_size = 0
        serve_standalone(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--standalone", action="store_true",
                    help="run only the HTTP side (not `mirrorbits daemon`)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="mirrorbits-bench-")
    repo = os.path.join(tmp, "repo")
    redis = RedisServer().start()
    daemon = None
    try:
        t0 = time.monotonic()
        counts = world.fill(redis.address, repo, os.path.join(tmp, "ips.txt"))
        paths = world.file_paths()
        random.Random(5).shuffle(paths)  # Zipf rank order, popular files spread over the tree
        with open(os.path.join(tmp, "paths.txt"), "w") as f:
            f.write("\n".join(paths) + "\n")
        print(f"world: {json.dumps(counts)} in {time.monotonic() - t0:.1f}s", flush=True)
        port = free_port()
        conf = write_config(tmp, repo, redis.address, port, args.workers)
        log = open(os.path.join(tmp, "daemon.log"), "w")
        if args.standalone:
            cmd = [sys.executable, os.path.abspath(__file__), "--serve", conf]
        else:
            cmd = [sys.executable, "-c", "import sys; from mirrorbits.admin.cli import main; sys.exit(main())",
                   "daemon", "-config", conf, "-monitor=false", "-p", os.path.join(tmp, "mirrorbits.pid")]
        daemon = subprocess.Popen(
            cmd,
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT))
        wait_for_port("127.0.0.1", port, 30)
        t1 = time.monotonic()
        wait_warm(port, paths[:20])
        time.sleep(5 if args.workers == 1 else 8)  # let the warm-up of all files finish
        print(f"daemon up and warm in {time.monotonic() - t1:.1f}s (+ settle)", flush=True)
        res = run_wrk(port, tmp, args.duration, args.threads, args.connections)
        rss = rss_kib(daemon.pid)
        print(f"workers={args.workers}: {res['RPS']:.0f} requests/s, p50 {res['LATENCY_P50_US'] / 1000:.2f} ms, "
              f"p99 {res['LATENCY_P99_US'] / 1000:.2f} ms, errors {int(res['ERRORS'])}, "
              f"RSS {rss / 1024:.0f} MiB (all processes)")
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
        redis.cleanup()
        if args.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
