"""Benchmark of a mirror scan over rsync: a real daemon scans a 200,000-file rsync module.

Everything is real: a private redis-server, ``rsync --daemon`` serving a generated tree of empty
files, a ``mirrorbits daemon`` process (monitor on, its Repository being the same tree so the
scan's files are known and ``HANDLEDFILES`` is as big as it gets), and the scan started the way an
admin does, with ``mirrorbits scan -rsync``.  While each scan runs, this script samples the
daemon's RSS from ``/proc`` (plus its peak, ``VmHWM``, reset just before), and a separate process
PINGs Redis every 5 ms; Redis' SLOWLOG gives the longest command.

Two scans: the first (every file new) and a rescan after 1% of the files were deleted from the
module (so the removal phase has work).  Printed per scan: wall time, files indexed, the daemon's
RSS growth (peak minus the idle RSS before the scan), the worst PING round trip, and the longest
Redis command.

    python bench/mirror_scan.py                    # 200,000 files (tree in /dev/shm if it exists)
    python bench/mirror_scan.py --files 20000

The acceptance test tests/scan/test_scan_acceptance.py runs :func:`run` with 20,000 files.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.redis import RedisServer  # noqa: E402
from tests.fixtures.rsyncd import start_rsyncd  # noqa: E402
from tests.fixtures.servers import free_port, wait_for_port  # noqa: E402

PER_DIR = 1000
PASSWORD = "bench"

PING_PROC = r"""
import os, socket, sys, time
if sys.argv[2] == "rt":
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
while True:
    t = time.monotonic()  # one clock for every process of the machine: loops can be compared
    s.sendall(b"PING\r\n")
    if not f.readline():
        break
    sys.stdout.write("%f %f\n" % (t, time.monotonic()))
    sys.stdout.flush()
    time.sleep(PERIOD)
"""
#: The PING loop's pause between a reply and the next PING.
PING_PERIOD = 0.005
PING_PROC = f"PERIOD = {PING_PERIOD}\n" + PING_PROC


@dataclass
class ScanFigures:
    label: str
    files: int
    wall_s: float
    files_indexed: int
    rss_before_mb: float
    rss_peak_mb: float
    ping_worst_ms: float
    pings: int
    slowlog_max_ms: float
    slowlog_command: str
    cli_output: str
    #: Worst PING of an idle control redis-server on the same machine, during the same scan, and
    #: how far apart (s) the two worst PINGs happened: a machine-wide hiccup shows in both.
    control_worst_ms: float = 0.0
    worst_apart_s: float = 0.0
    #: The scan's own part of the worst PING: each PING's round trip minus the longest delay the
    #: control loop met at the same moment (see :func:`scan_stall_ms`).
    ping_stall_ms: float = 0.0

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb

    def line(self) -> str:
        return (f"{self.label:<22} {self.files_indexed:>8} files  {self.wall_s:6.1f} s  "
                f"RSS {self.rss_before_mb:6.1f} -> {self.rss_peak_mb:6.1f} MB "
                f"(+{self.rss_growth_mb:5.1f})  worst PING {self.ping_worst_ms:6.1f} ms "
                f"({self.pings} pings; idle control Redis {self.control_worst_ms:.1f} ms, "
                f"{self.worst_apart_s:.2f} s apart; beyond it {self.ping_stall_ms:.1f} ms)  longest Redis command {self.slowlog_max_ms:5.1f} ms "
                f"{self.slowlog_command}")


def build_tree(root: Path, n: int) -> list[str]:
    """``n`` empty files, 1,000 per directory, with Debian-like names; returns the paths."""
    paths = []
    for i in range(n):
        d = root / "pool" / "main" / f"d{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        name = f"package-{i:07d}_1.0-1_amd64.deb"
        (d / name).touch()
        paths.append(f"/pool/main/d{i // PER_DIR:04d}/{name}")
    return paths


def _status(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` size field (VmRSS, VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


class RssSampler:
    """Samples a process' RSS every 20 ms from another thread (sees it even when its reactor is
    busy), and uses the kernel's peak (VmHWM, reset through clear_refs) when that is allowed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> float:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.hwm_reset = True
        except OSError:
            pass
        before = _status(self.pid, "VmRSS")
        self.peak = before
        self._thread.start()
        return before

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, _status(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            try:
                self.peak = max(self.peak, _status(self.pid, "VmHWM"))
            except (OSError, KeyError):
                pass
        return self.peak


class PingLoop:
    """A separate process PINGing Redis every 5 ms; it sees Redis stalls, not our own."""

    def __init__(self, port: int, realtime: bool = False) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PING_PROC, str(port), "rt" if realtime else "-"],
                                     stdout=subprocess.PIPE, text=True)
        self.worst = 0.0
        self.when = 0.0
        #: Every PING's (sent, answered), on the machine's monotonic clock.
        self.samples: list[tuple[float, float]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        return len(self.samples)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            sent, answered = (float(x) for x in line.split())
            if answered - sent > self.worst:
                self.worst, self.when = answered - sent, sent
            self.samples.append((sent, answered))

    def wait_started(self) -> None:
        deadline = time.monotonic() + 10
        while self.count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> tuple[float, int]:
        self.proc.terminate()
        self.proc.wait()
        self._thread.join(5)
        return self.worst * 1000, self.count


class Daemon:
    """``mirrorbits daemon`` on a Redis, with its Repository and an rsync module on one tree."""

    def __init__(self, workdir: Path, repo: Path, redis: RedisServer) -> None:
        self.workdir = workdir
        self.rpc_port = free_port()
        self.http_port = free_port()
        self.conf = workdir / "mirrorbits.conf"
        self.conf.write_text(
            f"Repository: {repo}\nRedisAddress: {redis.address}\nDataDir: {workdir / 'data'}\n"
            f"ListenAddress: 127.0.0.1:{self.http_port}\n"
            f"RPCListenAddress: 127.0.0.1:{self.rpc_port}\nRPCPassword: {PASSWORD}\n"
            f"GeoipDatabasePath: {workdir / 'nogeoip'}\nRepositoryScanInterval: 0\n")
        self.log_path = workdir / "daemon.log"
        self.env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.env.pop("MIRRORBITS_CONFIG", None)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mirrorbits", "daemon", "-config", str(self.conf),
                 "-p", str(workdir / "mirrorbits.pid")],
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=self.env)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_indexed(self, timeout: float) -> None:
        """Until the start-up scan of the repository has been committed."""
        wait_for_port("127.0.0.1", self.rpc_port, timeout=60)
        deadline = time.monotonic() + timeout
        while not re.search(r"\[source\] Indexed \d+ files", self.output()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon did not index its repository:\n" + self.output()[-4000:])
            time.sleep(0.1)

    def cli(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mirrorbits", "-h", "127.0.0.1", "-p", str(self.rpc_port),
             "-P", PASSWORD, *argv], capture_output=True, text=True, env=self.env, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def scan_stall_ms(scanned: list[tuple[float, float]], control: list[tuple[float, float]],
                  threshold: float = 0.010) -> float:
    """The worst PING delay of the scanned Redis that the machine does not explain.

    On a loaded machine a PING also waits for a CPU: the PING process, redis-server or the kernel
    are off the CPU for a while, which has nothing to do with the scan. The control loop runs the
    same way against an idle redis-server at the same time, so whatever delay it met at a moment
    (a PING of its own that took long, or a pause between two PINGs longer than the loop's 5 ms
    sleep: the control process itself kept off the CPU) is the machine's, not the scan's. A stall
    that the scan causes (Redis busy with our commands) shows in the scanned loop alone. Returns
    the worst round trip (ms) minus the longest control delay overlapping it; round trips under
    ``threshold`` are not examined (they cannot matter against a 50 ms bound).
    """
    delays = [(sent, answered, answered - sent) for sent, answered in control]
    delays += [(answered, sent_next, sent_next - answered - PING_PERIOD)
               for (_, answered), (sent_next, _) in zip(control, control[1:], strict=False)]
    worst = 0.0
    for sent, answered in scanned:
        took = answered - sent
        if took < threshold:
            continue
        noise = max((d for start, end, d in delays if start < answered and end > sent), default=0.0)
        worst = max(worst, took - noise)
    return worst * 1000


def _slowlog_max(client: Any) -> tuple[float, str]:
    worst, what = 0.0, ""
    for entry in client.slowlog_get(128):
        ms = entry["duration"] / 1000
        if ms > worst:
            cmd = entry["command"]
            text = cmd.decode(errors="replace") if isinstance(cmd, bytes) else str(cmd)
            worst, what = ms, " ".join(text.split())[:40]
    return worst, f"({what})" if what else ""


def realtime_possible() -> bool:
    """Whether this process may give Redis and the PING loop SCHED_FIFO priority (root)."""
    return hasattr(os, "sched_setscheduler") and os.geteuid() == 0


def idle_ping(redis: RedisServer, seconds: float, realtime: bool) -> float:
    """Worst PING round trip (ms) with no scan running: the machine's own noise floor."""
    ping = PingLoop(redis.port, realtime)
    ping.wait_started()
    time.sleep(seconds)
    return ping.stop()[0]


def measure_scan(label: str, files: int, daemon: Daemon, redis: RedisServer, mirror: str,
                 realtime: bool = False, control: RedisServer | None = None) -> ScanFigures:
    """One ``mirrorbits scan -rsync <mirror>`` with the RSS sampler and the PING loops around it."""
    client = redis.client()
    client.slowlog_reset()
    ping = PingLoop(redis.port, realtime)
    ping.wait_started()
    control_ping = PingLoop(control.port, realtime) if control is not None else None
    if control_ping is not None:
        control_ping.wait_started()
    sampler = RssSampler(daemon.proc.pid)
    before = sampler.start()
    t = time.perf_counter()
    result = daemon.cli("scan", "-rsync", mirror)
    wall = time.perf_counter() - t
    peak = sampler.stop()
    worst_ping, pings = ping.stop()
    control_worst, apart, stall = 0.0, 0.0, worst_ping
    if control_ping is not None:
        control_worst = control_ping.stop()[0]
        apart = abs(control_ping.when - ping.when)
        stall = scan_stall_ms(ping.samples, control_ping.samples)
    slow_ms, slow_cmd = _slowlog_max(client)
    if result.returncode != 0:
        raise RuntimeError(f"scan failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                           + daemon.output()[-4000:])
    m = re.search(r"(\d+) files", result.stdout + result.stderr)
    indexed = int(m.group(1)) if m else -1
    return ScanFigures(label, files, wall, indexed, before, peak, worst_ping, pings, slow_ms, slow_cmd,
                       (result.stdout + result.stderr).strip(), control_worst, apart, stall)


def run(files: int, workdir: Path, *, remove_percent: float = 1.0, verbose: bool = True,
        realtime: bool = False) -> list[ScanFigures]:
    """Build the world in ``workdir``, scan twice, and return the figures of both scans.

    ``realtime`` runs redis-server and the PING loop at SCHED_FIFO priority, so that the worst
    PING measures Redis being busy with our commands rather than CPU contention on a loaded
    machine (the daemon, rsync and whatever else runs compete for the same cores).
    """
    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    tree = workdir / "tree"
    t = time.perf_counter()
    paths = build_tree(tree, files)
    say(f"built {files} files in {time.perf_counter() - t:.1f} s")
    redis = RedisServer(["--slowlog-log-slower-than", "5000", "--slowlog-max-len", "128"]).start()
    control = RedisServer().start()
    rsyncd = None
    daemon = None
    try:
        if realtime:
            for server in (redis, control):
                assert server.proc is not None
                os.sched_setscheduler(server.proc.pid, os.SCHED_FIFO, os.sched_param(1))
        rsyncd = start_rsyncd(workdir / "rsyncd", {"mirror": {"path": str(tree)}})
        r = redis.client()
        r.set("MIRRORBITS_DB_VERSION", "2")
        # A disabled mirror: the monitor leaves it alone, the admin scan does not care.
        r.hset("MIRRORS", "1", "bench")
        r.hset("MIRROR_1", mapping={"ID": "1", "name": "bench", "enabled": "0",
                                    "http": "http://127.0.0.1:1/", "rsync": rsyncd.url("mirror")})
        daemon = Daemon(workdir, tree, redis)
        t = time.perf_counter()
        daemon.wait_indexed(timeout=max(120.0, files / 500))
        say(f"daemon up, repository indexed in {time.perf_counter() - t:.1f} s")
        time.sleep(1.0)  # let the start-up settle before taking the idle RSS
        say(f"worst PING over 3 s with no scan running: {idle_ping(redis, 3.0, realtime):.1f} ms")
        figures = [measure_scan("first scan", files, daemon, redis, "bench", realtime, control)]
        say(figures[-1].line())
        gone = paths[:: max(1, int(100 / remove_percent))] if remove_percent > 0 else []
        for p in gone:
            (tree / p[1:]).unlink()
        figures.append(measure_scan(f"rescan, {len(gone)} removed", files, daemon, redis, "bench",
                                    realtime, control))
        say(figures[-1].line())
        say("daemon log: " + ("pub/sub disconnected during the scan"
                              if "Pubsub disconnected" in daemon.output() else "no pub/sub disconnection"))
        if r.scard("MIRRORFILES_1") != files - len(gone):
            raise RuntimeError(f"MIRRORFILES_1 has {r.scard('MIRRORFILES_1')} members, "
                               f"expected {files - len(gone)}")
        return figures
    finally:
        if daemon is not None:
            daemon.stop()
        if rsyncd is not None:
            rsyncd.stop()
        redis.cleanup()
        control.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where to build the tree (default /dev/shm)")
    parser.add_argument("--no-rt", action="store_true",
                        help="leave redis-server and the PING loop at normal priority")
    args = parser.parse_args()
    realtime = realtime_possible() and not args.no_rt
    workdir = Path(tempfile.mkdtemp(prefix="mb-mirror-scan-", dir=args.dir))
    try:
        print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}; "
              f"rsync {subprocess.run(['rsync', '--version'], capture_output=True, text=True).stdout.split()[2]}; "
              f"redis-server and PING loop {'SCHED_FIFO' if realtime else 'normal priority'}")
        figures = run(args.files, workdir, realtime=realtime)
        ok = all(f.rss_growth_mb < 100 and f.ping_stall_ms < 50 and f.slowlog_max_ms < 50 for f in figures)
        print("acceptance (RSS growth < 100 MB, no Redis stall >= 50 ms):", "met" if ok else "NOT met")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
