"""CPU cost of the redirector's request path in one process, without sockets (loopback only Redis).

Why: on a shared machine wrk's requests/s swing with the load; the Python work per request does
not.  This feeds raw HTTP/1.1 requests (Zipf paths, X-Forwarded-For from the world's client IPs,
as bench/load.lua does) straight into the real twisted.web Site of the redirector, over an
in-memory transport, and reports CPU microseconds per request — optionally with a cProfile.

    python bench/request_path.py --world /tmp/world            # build once, then reuse
    python bench/request_path.py --world /tmp/world --profile  # top functions by own time
    python bench/request_path.py --world /tmp/world --metrics-ab   # rounds with/without metrics
    python bench/request_path.py --world /tmp/world --family-ab    # rounds with/without SelectByIPFamily
    python bench/request_path.py --world /tmp/world --lane-ab      # rounds with/without the lean lane
    python bench/request_path.py --world /tmp/world --watch-ab     # path check: watched paths / lstat walk

The world (Redis dump, repository tree, IP list) is the one bench/redirector.py builds; Redis is a
private redis-server on a free port.  Download counters are flushed every 500 ms as in the daemon
unless ``--no-stats``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import redirector  # noqa: E402
import world  # noqa: E402

from tests.fixtures.redis import RedisServer  # noqa: E402


def requests(world_dir: str, n: int, seed: int = 1) -> list[bytes]:
    with open(os.path.join(world_dir, "paths.txt")) as f:
        paths = f.read().split()
    with open(os.path.join(world_dir, "ips.txt")) as f:
        ips = f.read().split()
    cdf = list(itertools.accumulate(1 / k for k in range(1, len(paths) + 1)))
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = paths[bisect.bisect_left(cdf, rng.random() * cdf[-1])]
        ip = rng.choice(ips)
        out.append(f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Forwarded-For: {ip}\r\n\r\n".encode())
    return out


def watch_switch():  # type: ignore[no-untyped-def]
    """on(True/False): path sanitisation keeps symlink-free paths under inotify watches, or
    checks every path on the disk with an lstat per component (the way before, and the way
    where inotify is missing)."""
    from mirrorbits.web import paths

    def on(enabled: bool) -> None:
        paths._confirmed.usable = enabled

    return on


def metrics_switch(site, root):  # type: ignore[no-untyped-def]
    """on(True/False): the request path's metrics as they are, or their calls made no-ops (what is
    left with them off: one ``perf_counter`` call, the kind attribute and the per-country dict
    update, ~0.2 us together)."""

    def on(enabled: bool) -> None:
        if enabled:
            site.__dict__.pop("log", None)
            root.__dict__.pop("_count_redirect", None)
        else:
            site.log = lambda request: None
            root._count_redirect = lambda mirror, size: None

    return on


def lane_switch(proto):  # type: ignore[no-untyped-def]
    """on(True/False): requests answered by the lean lane (no twisted ``Request``) or all of them
    through twisted.web's ``Request`` as before the lane."""

    def on(enabled: bool) -> None:
        proto.fast_lane = enabled

    return on


def write_family_states(r: object) -> None:
    """Per-family states as a monitor with ``SelectByIPFamily`` leaves them: every third mirror
    has no IPv6 address, every fifth a dead one, the others answer over both families."""
    for mid in r.hkeys("MIRRORS"):  # type: ignore[attr-defined]
        n = int(mid)
        v6 = "none" if n % 3 == 0 else "0" if n % 5 == 0 else "1"
        fields = {"httpUpIPv4": "1", "httpUpIPv6": v6, "httpsUpIPv4": "1", "httpsUpIPv6": v6,
                  "httpDownReasonIPv6": "Unreachable" if v6 == "0" else ""}
        r.hset(f"MIRROR_{mid}", mapping=fields)  # type: ignore[attr-defined]


def family_switch(holder):  # type: ignore[no-untyped-def]
    """on(True/False): the same config with ``SelectByIPFamily`` on or off (swapped as a reload)."""
    base = holder.current

    def on(enabled: bool) -> None:
        holder.swap(base.replace(SelectByIPFamily=enabled))

    return on


async def run(args: argparse.Namespace, conf: str) -> None:
    from twisted.internet import reactor, task
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from mirrorbits.app import Mirrorbits
    from mirrorbits.config import ConfigHolder, load_config
    from mirrorbits.service import RedisService
    from mirrorbits.web.site import make_site

    holder = ConfigHolder(load_config(conf), conf)
    app = Mirrorbits(holder, reactor, monitor=False)
    parts = [RedisService(app), app.get_redirector()]
    if not args.no_stats:
        parts.append(app.get_download_stats())
    for p in parts:
        p.startService()
    await app.get_redis().when_ready()
    await app.get_cache().warm()
    site = make_site(app)
    proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    proto.makeConnection(transport)
    reqs = requests(args.world, args.requests + args.warmup)

    async def drive(batch: list[bytes]) -> float:
        """CPU seconds for ``batch``, yielding to the reactor every 100 requests (timers run)."""
        cpu = 0.0
        for start in range(0, len(batch), 100):
            t0 = time.process_time()
            for raw in batch[start:start + 100]:
                proto.dataReceived(raw)
            cpu += time.process_time() - t0
            if not transport.value().startswith(b"HTTP/1.1 302"):
                raise RuntimeError(f"unexpected answer: {transport.value()[:200]!r}")
            transport.clear()
            t0 = time.process_time()
            await task.deferLater(reactor, 0, lambda: None)
            cpu += time.process_time() - t0  # the stats flush and other timers count too
        return cpu

    await drive(reqs[:args.warmup])
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    measured = reqs[args.warmup:]
    size = max(1, len(measured) // args.rounds)
    per_round = []
    if args.metrics_ab or args.family_ab or args.lane_ab or args.watch_ab:
        if args.family_ab:
            label, switch = "SelectByIPFamily", family_switch(holder)
        elif args.lane_ab:
            label, switch = "lean lane", lane_switch(proto)
        elif args.watch_ab:
            label, switch = "watched paths", watch_switch()
        else:
            label, switch = "metrics", metrics_switch(site, app.get_web_root())
        by_state: dict[bool, list[float]] = {True: [], False: []}
        for i, start in enumerate(range(0, size * args.rounds, size)):
            for state in ((True, False) if i % 2 else (False, True)):
                switch(state)
                by_state[state].append(await drive(measured[start:start + size]) * 1e6 / size)
        switch(True)
        for state in (False, True):
            r = sorted(by_state[state])
            print(f"{label} {'on ' if state else 'off'}: min {r[0]:.1f}, median {r[len(r) // 2]:.1f} "
                  f"us CPU per request ({len(r)} rounds of {size})", flush=True)
        off, on = sorted(by_state[False]), sorted(by_state[True])
        print(f"{label} cost: {100 * (on[0] / off[0] - 1):+.1f}% (min), "
              f"{100 * (on[len(on) // 2] / off[len(off) // 2] - 1):+.1f}% (median)", flush=True)
        per_round = by_state[True]
    else:
        for start in range(0, size * args.rounds, size):
            per_round.append(await drive(measured[start:start + size]) * 1e6 / size)
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile_lines)
    per_round.sort()
    # The lowest rounds are the ones least disturbed by other processes (CPU time still grows when
    # the machine is busy: shared caches and SMT siblings).
    print(f"{size * args.rounds} requests in {args.rounds} rounds: min {per_round[0]:.1f}, "
          f"median {per_round[len(per_round) // 2]:.1f} us CPU per request "
          f"(in-process, no sockets; stats {'off' if args.no_stats else 'on'})", flush=True)
    from mirrorbits.web import paths
    print("watched paths:", len(paths._confirmed._paths), "kept,", len(paths._confirmed._dirs), "directories,",
          paths._confirmed.resets, "resets")
    for p in reversed(parts):
        await p.stopService()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, help="world dir (built by bench/redirector.py --world)")
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--warmup", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-stats", action="store_true")
    ap.add_argument("--metrics-ab", action="store_true",
                    help="alternate rounds with the request path's metrics on and made no-ops")
    ap.add_argument("--family-ab", action="store_true",
                    help="write per-family mirror states, alternate rounds with SelectByIPFamily on and off")
    ap.add_argument("--lane-ab", action="store_true",
                    help="alternate rounds with the lean lane on and off (every request through a twisted Request)")
    ap.add_argument("--watch-ab", action="store_true",
                    help="alternate rounds with path sanitisation's watched paths and its lstat walk")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-lines", type=int, default=40)
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.world, "dump.rdb")):
        sys.exit("no world there yet: run bench/redirector.py --world DIR once")
    tmp = tempfile.mkdtemp(prefix="mirrorbits-reqpath-")
    redis = RedisServer()
    shutil.copy(os.path.join(args.world, "dump.rdb"), os.path.join(redis.dir, "dump.rdb"))
    redis.start()
    if args.family_ab:
        write_family_states(redis.client())
    try:
        conf = redirector.write_config(tmp, os.path.join(args.world, "repo"), redis.address, 1, 1)
        from twisted.internet import defer, reactor

        def go() -> None:
            d = defer.Deferred.fromCoroutine(run(args, conf))
            d.addErrback(lambda f: f.printTraceback())
            d.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(go)
        reactor.run()
    finally:
        redis.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    _ = world  # the world module is what wrote the data
    main()
