"""A mirror scan's own CPU per listed entry and the longest reactor stall it causes, in process.

The bench world (:mod:`bench.world`: 5,000 files, 60 mirrors) in a private ``redis-server``, its
repository tree served by one real ``rsync --daemon`` module (every mirror's rsync URL) and by a
real FTP server (pyftpdlib, MLSD without MDTM, for ``--ftp`` mirrors' FTP URL).  This process runs
:class:`mirrorbits.scan.mirror.MirrorScanner` on its own reactor, one mirror after the other as
``mirrorbits scan -all`` does, and measures its own CPU time (``time.process_time``: rsync, the FTP
server and Redis are other processes) per listed entry for:

* the first scan (every mirror's index differs from the listing: every file is written);
* an unchanged rescan;
* a 1%-changed rescan (the mtime of 1% of the repository's files moved, so every mirror lists them
  changed).

Each rescan runs twice: once bare for the CPU figure, once with a timer every millisecond
recording how late it fires (the reactor's longest stall, i.e. the longest stretch of scan work
between two returns to the reactor; the timer's own cost is why it is off for the CPU figure).
The redirector's view is not in this process: its reaction to the messages of a changed rescan
is measured with the real daemon (``serving_while_scanning.py``).

    python bench/scan_slices.py [--mirrors 60] [--ftp 0] [--profile /tmp/scan.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twisted.internet import defer, task  # noqa: E402

from bench import world  # noqa: E402
from bench.scan_profile import redis_cpu  # noqa: E402
from bench.scan_world import scan_world  # noqa: E402
from mirrorbits.config import Config  # noqa: E402
from mirrorbits.httpclient import HttpClient  # noqa: E402
from mirrorbits.redis.connection import RedisClient, RedisSettings  # noqa: E402
from mirrorbits.scan.mirror import MirrorScanner  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402


class StallMeter:
    """A timer every ``interval`` seconds; records how late each one fires."""

    def __init__(self, reactor: object, interval: float = 0.001) -> None:
        self.reactor = reactor
        self.interval = interval
        self.lateness: list[float] = []
        #: CPU time this thread spent between a timer and the next: on a shared machine a late timer
        #: may only mean the process was not scheduled; this is the work the reactor did meanwhile.
        self.busy: list[float] = []
        self._due = 0.0
        self._cpu = 0.0
        self._call: object = None

    def start(self) -> None:
        self._due = time.perf_counter() + self.interval
        self._cpu = time.thread_time()
        self._call = self.reactor.callLater(self.interval, self._tick)  # type: ignore[attr-defined]

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.lateness.append(now - self._due)
        self.busy.append(cpu - self._cpu)
        self._due, self._cpu = now + self.interval, cpu
        self._call = self.reactor.callLater(self.interval, self._tick)  # type: ignore[attr-defined]

    def stop(self) -> str:
        if self._call is not None and self._call.active():  # type: ignore[attr-defined]
            self._call.cancel()  # type: ignore[attr-defined]
        late = sorted(self.lateness)
        if not late:
            return "no samples"
        busy = sorted(self.busy)
        over5 = sum(1 for x in busy if x > 0.005)
        return (f"timers late by at most {late[-1] * 1e3:.1f} ms (p99.9 {late[int(len(late) * 0.999)] * 1e3:.1f} ms); "
                f"reactor busy between two timers at most {busy[-1] * 1e3:.1f} ms of CPU "
                f"(p99.9 {busy[int(len(busy) * 0.999)] * 1e3:.1f} ms, {over5} of {len(busy)} over 5 ms)")


def touch_share(repo: Path, share: float, seed: int) -> int:
    """Move the mtime of ``share`` of the repository's files: every mirror then lists them changed."""
    files = sorted(p for p in repo.rglob("*") if p.is_file())
    rng = random.Random(seed)
    chosen = rng.sample(files, max(1, int(len(files) * share)))
    stamp = time.time() - rng.randrange(1, 10**6)
    for p in chosen:
        os.utime(p, (stamp, stamp))
    return len(chosen)


async def scan_all(scanner: MirrorScanner, targets: list[tuple[int, str, str]]) -> int:
    entries = 0
    for mirror_id, protocol, url in targets:
        result = await scanner.scan(mirror_id, protocol, url)
        entries += result.files_indexed
    return entries


async def run(reactor: object, args: argparse.Namespace, redis: RedisServer, repo: Path,
              targets: list[tuple[int, str, str]]) -> None:
    settings = RedisSettings(address=redis.address)
    client = RedisClient(lambda: settings)
    client.start()
    client.set_ready()
    http = HttpClient(reactor, timeout=3)  # type: ignore[arg-type]
    config = Config(Repository=str(repo))
    scanner = MirrorScanner(client, lambda: config, http)
    r = redis.client()

    async def measured(label: str, meter: bool = False, profile: str | None = None) -> None:
        stall = StallMeter(reactor) if meter else None
        prof = cProfile.Profile(time.process_time) if profile else None  # CPU, not waits
        c0, r0, t0 = time.process_time(), redis_cpu(r), time.perf_counter()
        if stall:
            stall.start()
        if prof:
            prof.enable()
        entries = await scan_all(scanner, targets)
        if prof:
            prof.disable()
        cpu, rcpu, wall = time.process_time() - c0, redis_cpu(r) - r0, time.perf_counter() - t0
        extra = f"; {stall.stop()}" if stall else ""
        print(f"{label}: {entries} listed entries, scanner CPU {cpu:.2f} s ({cpu / entries * 1e6:.1f} us/entry), "
              f"Redis CPU {rcpu:.2f} s, wall {wall:.1f} s, load {os.getloadavg()[0]:.1f}{extra}", flush=True)
        if prof and profile:
            prof.dump_stats(profile)
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)

    try:
        await measured("first scan (every file written)")
        for i in range(args.rounds):
            await measured(f"unchanged rescan #{i + 1}")
            await measured(f"unchanged rescan #{i + 1} with the stall timer", meter=True)
            n = touch_share(repo, 0.01, seed=i)
            await measured(f"1%-changed rescan #{i + 1} ({n} files moved)")
            n = touch_share(repo, 0.01, seed=100 + i)
            await measured(f"1%-changed rescan #{i + 1} ({n} files moved) with the stall timer", meter=True)
        if args.profile:
            await measured("unchanged rescan under cProfile", profile=args.profile)
    finally:
        await scanner.stop()
        await client.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mirrors", type=int, default=world.N_MIRRORS, help="mirrors scanned (of the 60)")
    ap.add_argument("--ftp", type=int, default=0, help="how many of them are scanned over FTP")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--profile", help="also profile an unchanged rescan with cProfile into this file")
    args = ap.parse_args()
    with scan_world("mb-scanslices-", ftp=args.ftp) as w:
        targets = w.targets[: args.mirrors]
        ftp = sum(1 for t in targets if t[1] == "ftp")
        print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()}; world {w.counts}; "
              f"{len(targets) - ftp} mirrors over rsync, {ftp} over FTP", flush=True)
        task.react(lambda reactor: defer.ensureDeferred(run(reactor, args, w.redis, w.repo, targets)))

if __name__ == "__main__":
    main()
