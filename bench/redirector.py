"""Benchmark the redirector on the realistic world (loopback only).

Starts a private redis-server, fills it with bench/world.py, starts ``mirrorbits daemon`` on
127.0.0.1 with the GeoLite2 *test* databases, waits until its cache is warm, then runs
``wrk -t2 -c64 -d20s -s bench/load.lua`` and prints requests/s, p50/p99 latency and the daemon's
RSS (all worker processes summed).

    python bench/redirector.py --workers 1
    python bench/redirector.py --workers 2 --duration 20
    python bench/redirector.py --world /tmp/world --hot          # every request for one file
    python bench/redirector.py --world /tmp/world --pin --threads 1   # daemon on CPU 0, wrk on CPU 1
    python bench/redirector.py --world /tmp/world --pin --threads 1 --rate 2470   # p99 at a fixed rate
    python bench/redirector.py --world /tmp/world --compare /path/to/other/tree   # A/B/B/A

``--compare TREE`` runs the daemon from TREE's code and from this tree's, in the order A B B A
(A = TREE), each with its own fresh Redis and daemon on the same world, and prints both sides'
figures; ``--pin`` puts the daemon (all its processes) on one core and wrk on the other, so the
requests/s of one core can be compared with the Go original's one-core figure.
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
if sys.argv[1:2] != ["--serve"]:  # --standalone's server runs the code of the tree in its PYTHONPATH
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


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants (workers), from /proc."""
    out = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes (seconds), from /proc/<pid>/stat.

    Why: on a shared machine requests/s depends on what else runs; the CPU time a process spends
    per request served barely does, so it is the figure to compare between runs and versions.
    """
    ticks = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5): utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def stop_daemon(daemon: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(grace)
    except subprocess.TimeoutExpired:
        daemon.kill()


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


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
RPCListenAddress: 127.0.0.1:{free_port()}
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


#: Prefix of the wrk command line (``--pin``: ``taskset -c 1``).
WRK_PREFIX: list[str] = []


def parse_wrk(out: str) -> dict[str, float]:
    """The ``NAME value`` lines ``load.lua``'s ``done()`` prints, plus ``RPS``."""
    vals: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isupper() and parts[1].lstrip("-").isdigit():
            vals[parts[0]] = float(parts[1])
    vals["RPS"] = vals["REQUESTS"] / (vals["DURATION_US"] / 1e6)
    return vals


#: Total requests/s of the counted runs (``--rate``: paced by ``paced.lua``); 0 = as fast as possible.
PACED_RATE: list[float] = [0.0]


def run_wrk(port: int, world_dir: str, duration: int, threads: int, conns: int,
            pids: list[int] | None = None, redis_pid: int | None = None) -> dict[str, float]:
    """Run wrk; with ``pids`` also the server's CPU time during the run (and Redis's), paced at
    :data:`PACED_RATE` then (the uncounted warm-up runs without ``pids``: never paced)."""
    env = dict(os.environ, WORLD_DIR=world_dir)
    script = os.path.join(HERE, "load.lua")
    if pids and PACED_RATE[0]:
        env.update(LOAD_LUA=script, PACED_RATE_PER_THREAD=str(PACED_RATE[0] / threads))
        script = os.path.join(HERE, "paced.lua")
    pids = pids or []
    cpu0 = cpu_seconds(pids)
    each0 = [cpu_seconds([p]) for p in pids]
    rcpu0 = cpu_seconds([redis_pid]) if redis_pid else 0.0
    out = subprocess.run(
        [*WRK_PREFIX, "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "-s", script,
         f"http://127.0.0.1:{port}/"], env=env, capture_output=True, text=True, check=True).stdout
    vals = parse_wrk(out)
    vals["CPU_S"] = cpu_seconds(pids) - cpu0
    for i, (p, c0) in enumerate(zip(pids, each0, strict=True)):
        vals[f"CPU_S_{i}"] = cpu_seconds([p]) - c0  # how the work is split between processes
    vals["REDIS_CPU_S"] = (cpu_seconds([redis_pid]) - rcpu0) if redis_pid else 0.0
    vals["CPU_US_PER_REQ"] = vals["CPU_S"] * 1e6 / max(1.0, vals["REQUESTS"])
    vals["REDIS_US_PER_REQ"] = vals["REDIS_CPU_S"] * 1e6 / max(1.0, vals["REQUESTS"])
    return vals


def report(label: str, res: dict[str, float], rss: int | None = None) -> None:
    shares = [v for k, v in sorted(res.items()) if k.startswith("CPU_S_")]
    split = ""
    if len(shares) > 1:
        split = "; split " + "/".join(f"{100 * v / max(1e-9, res['CPU_S']):.0f}%" for v in shares)
    errors = ", ".join(f"{k[7:].lower()} {int(v)}" for k, v in res.items()
                       if k.startswith("ERRORS_") and v)
    print(f"{label}: {res['RPS']:.0f} requests/s, p50 {res['LATENCY_P50_US'] / 1000:.2f} ms, "
          f"p99 {res['LATENCY_P99_US'] / 1000:.2f} ms, errors {int(res['ERRORS'])}"
          f"{' (' + errors + ')' if errors else ''}; CPU {res['CPU_US_PER_REQ']:.0f} us/request "
          f"(Redis {res['REDIS_US_PER_REQ']:.1f}{split})"
          f"{f', RSS {rss / 1024:.0f} MiB (all processes)' if rss is not None else ''}; "
          f"load average {loadavg()}", flush=True)


def serve_bare(fd: int | None, port: int, children: int) -> None:
    """The floor: a bare twisted.web server answering every request with a 302 (no access log),
    ``children`` extra processes sharing the listening socket (one accept per wake-up)."""
    import socket

    from twisted.internet import reactor
    from twisted.web import resource, server

    class Bare(resource.Resource):
        isLeaf = True

        def render(self, request):  # type: ignore[no-untyped-def]
            request.setResponseCode(302)
            request.setHeader(b"Location", b"http://mirror.example.net/pub" + request.path)
            return b""

    class Site(server.Site):
        def log(self, request):  # type: ignore[no-untyped-def]
            pass

    if fd is None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
        sock.setblocking(False)
        fd = sock.fileno()
        for _ in range(children):
            subprocess.Popen([sys.executable, os.path.abspath(__file__), "--bare-serve", str(fd)],
                             pass_fds=(fd,))
    if children or not port:  # shared by several processes: one accept per wake-up
        from mirrorbits.lifecycle.listener import adopt_listening_socket

        adopt_listening_socket(reactor, fd, socket.AF_INET, Site(Bare()))  # type: ignore[arg-type]
    else:
        reactor.adoptStreamPort(fd, socket.AF_INET, Site(Bare()))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


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

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    holder = ConfigHolder(load_config(conf), conf)
    app = Mirrorbits(holder, reactor, monitor=False)
    root = service.MultiService()
    RedisService(app).setServiceParent(root)
    app.get_redirector().setServiceParent(root)
    http = strports.service(listen_description(holder.current.ListenAddress), make_site(app))
    http.setName("http")
    http.setServiceParent(root)
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()


def bare_floor(args: argparse.Namespace, tmp: str) -> None:
    """Run the same wrk load against the bare twisted.web 302 server (``--bare``)."""
    with open(os.path.join(tmp, "paths.txt"), "w") as f:
        f.write("\n".join(world.file_paths()) + "\n")
    with open(os.path.join(tmp, "ips.txt"), "w") as f:
        f.write("\n".join(world.client_ips()) + "\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--bare-main", str(port),
                             str(args.workers - 1)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        wait_for_port("127.0.0.1", port, 30)
        time.sleep(1.0)
        pids = descendants(proc.pid)
        res = run_wrk(port, tmp, args.duration, args.threads, args.connections, pids)
        report(f"bare twisted.web 302, {args.workers} process(es)", res, rss_kib(proc.pid))
    finally:
        for p in reversed(descendants(proc.pid)):
            try:
                os.kill(p, signal.SIGTERM)
            except OSError:
                pass
        proc.wait(10)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--bare-serve":
        serve_bare(int(sys.argv[2]), 0, 0)
        return
    if len(sys.argv) >= 4 and sys.argv[1] == "--bare-main":
        serve_bare(None, int(sys.argv[2]), int(sys.argv[3]))
        return
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
    ap.add_argument("--world", help="build the world here once (Redis dump, tree, IPs) and reuse it")
    ap.add_argument("--runs", type=int, default=1, help="wrk runs against the same daemon")
    ap.add_argument("--close", action="store_true",
                    help="one request per connection (Connection: close): measures the accept path")
    ap.add_argument("--warmup", type=int, default=5, help="seconds of uncounted load first")
    ap.add_argument("--profile", help="py-spy flame graph (SVG) of one daemon process, first run")
    ap.add_argument("--serve-script", help="(debugging) a script serving CONF instead of the daemon")
    ap.add_argument("--bare", action="store_true",
                    help="the floor: a bare twisted.web 302 server (--workers processes)")
    ap.add_argument("--hot", action="store_true", help="every request for the same file (the most "
                    "requested one), client IPs still varied")
    ap.add_argument("--pin", action="store_true", help="daemon on --daemon-cpus, wrk on --wrk-cpus "
                    "(taskset)")
    ap.add_argument("--daemon-cpus", default="0")
    ap.add_argument("--wrk-cpus", default="1")
    ap.add_argument("--compare", metavar="TREE", help="A/B/B/A: TREE's daemon (A) against this tree's (B)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="send the counted runs at this many requests/s in all (paced.lua), e.g. the "
                         "Go original's saturation rate, to read the p99 at that rate")
    args = ap.parse_args()
    PACED_RATE[0] = args.rate
    if args.close:
        os.environ["CONNECTION_CLOSE"] = "1"  # read by load.lua (wrk inherits the environment)

    tmp = tempfile.mkdtemp(prefix="mirrorbits-bench-")
    if args.bare:
        try:
            bare_floor(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if args.pin:
        WRK_PREFIX[:] = ["taskset", "-c", args.wrk_cpus]
    if args.hot:
        if not args.world or not os.path.exists(os.path.join(args.world, "paths.txt")):
            sys.exit("--hot needs a world built before (--world DIR, one run without --hot)")
        with open(os.path.join(args.world, "paths.txt")) as f:
            os.environ["HOT_PATH"] = f.readline().strip()  # the most requested file (Zipf rank 1)
        print(f"one hot file: {os.environ['HOT_PATH']}", flush=True)
    try:
        if not args.compare:
            bench_tree(args, tmp, ROOT, "")
            return
        results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        trees = {"A": os.path.abspath(args.compare), "B": ROOT}
        for side in ("A", "B", "B", "A"):
            sub = tempfile.mkdtemp(prefix="mirrorbits-bench-", dir=tmp)
            print(f"--- {side}: {trees[side]}", flush=True)
            results[side] += bench_tree(args, sub, trees[side], f"{side} ")
        for side in ("A", "B"):
            rows = results[side]
            cpu = sorted(r["CPU_US_PER_REQ"] for r in rows)
            rps = sorted(r["RPS"] for r in rows)
            p99 = sorted(r["LATENCY_P99_US"] / 1000 for r in rows)
            print(f"{side} ({trees[side]}): CPU {', '.join(f'{c:.0f}' for c in cpu)} us/request; "
                  f"{', '.join(f'{r:.0f}' for r in rps)} requests/s; p99 "
                  f"{', '.join(f'{p:.2f}' for p in p99)} ms", flush=True)
    finally:
        if args.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_tree(args: argparse.Namespace, tmp: str, tree: str, label: str) -> list[dict[str, float]]:
    """Start Redis and the daemon (``tree``'s code) on the world, run wrk; the figures of each run."""
    results = []
    world_dir = args.world or tmp
    repo = os.path.join(world_dir, "repo")
    redis = RedisServer()
    dump = os.path.join(world_dir, "dump.rdb")
    reuse = bool(args.world) and os.path.exists(dump)
    if reuse:
        shutil.copy(dump, os.path.join(redis.dir, "dump.rdb"))
    redis.start()
    daemon = None
    try:
        t0 = time.monotonic()
        if not reuse:
            counts = world.fill(redis.address, repo, os.path.join(world_dir, "ips.txt"))
            paths = world.file_paths()
            random.Random(5).shuffle(paths)  # Zipf rank order, popular files spread over the tree
            with open(os.path.join(world_dir, "paths.txt"), "w") as f:
                f.write("\n".join(paths) + "\n")
            print(f"world: {json.dumps(counts)} in {time.monotonic() - t0:.1f}s", flush=True)
            if args.world:
                redis.client().save()
                shutil.copy(os.path.join(redis.dir, "dump.rdb"), dump)
        else:
            with open(os.path.join(world_dir, "paths.txt")) as f:
                paths = f.read().split()
            print(f"world: reused {world_dir}", flush=True)
        port = free_port()
        conf = write_config(tmp, repo, redis.address, port, args.workers)
        log = open(os.path.join(tmp, "daemon.log"), "w")
        if args.serve_script:
            cmd = [sys.executable, args.serve_script, conf]
        elif args.standalone:
            cmd = [sys.executable, os.path.abspath(__file__), "--serve", conf]
        else:
            cmd = [sys.executable, "-c", "import sys; from mirrorbits.console import main; sys.exit(main())",
                   "daemon", "-config", conf, "-monitor=false", "-p", os.path.join(tmp, "mirrorbits.pid")]
        if args.pin:
            cmd = ["taskset", "-c", args.daemon_cpus, *cmd]
        daemon = subprocess.Popen(
            cmd,
            cwd=tree, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=tree))
        wait_for_port("127.0.0.1", port, 90)
        t1 = time.monotonic()
        wait_warm(port, paths[:20])
        time.sleep(5 if args.workers == 1 else 8)  # let the warm-up of all files finish
        print(f"daemon up and warm in {time.monotonic() - t1:.1f}s (+ settle)", flush=True)
        pids = descendants(daemon.pid)
        if args.warmup:
            # Uncounted: first sight of each client IP (GeoIP), location and file plans.
            run_wrk(port, world_dir, args.warmup, args.threads, args.connections)
        for run in range(args.runs):
            spy = None
            if args.profile and run == 0:
                spy = subprocess.Popen(["py-spy", "record", "-r", "200", "-o", args.profile, *(["-f", "raw"] if args.profile.endswith(".txt") else []),
                                        "--pid", str(pids[-1]), "-d", str(args.duration)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            res = run_wrk(port, world_dir, args.duration, args.threads, args.connections, pids,
                          redis.proc.pid if redis.proc is not None else None)
            if spy is not None:
                spy.wait(30)
            report(f"{label}workers={args.workers} ({len(pids)} processes)", res, rss_kib(daemon.pid))
            results.append(res)
    finally:
        if daemon is not None:
            stop_daemon(daemon, 15)
        redis.cleanup()
    return results


if __name__ == "__main__":
    main()
