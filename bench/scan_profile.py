"""Where a daemon's CPU goes during an unchanged ``mirrorbits scan -all`` over rsync.

The bench world (:mod:`bench.world`: 5,000 files, 60 mirrors) in a private ``redis-server``; one
real ``rsync --daemon`` module serving the repository tree, set as every mirror's rsync URL; a
``mirrorbits daemon -monitor=false``.  A first ``scan -all`` brings every mirror to the full
5,000 files; then ``scan -all`` runs again with nothing changed, twice: once bare, for the daemon's
CPU time (``/proc/<pid>/stat``) and Redis' (``INFO cpu``), once under ``py-spy record`` (attached to
the daemon from outside, ``--idle`` off), whose stacks are then sorted into the scan's stages.

    python bench/scan_profile.py [--rate 250] [--keep-profile /tmp/scan.txt] [--no-profile]
                                 [--changed 1]

``--changed P`` adds, after the unchanged rescans, one ``scan -all`` after P% of the repository's
files got a new modification time (every mirror lists them all, so P% of each listing changed).
Each rescan also reports the redirector view's work during it (``mirrorbits_view_refreshes`` and
``mirrorbits_view_paths_refreshed`` from the daemon's ``/metrics``).

Needs ``py-spy`` (PyPI) on PATH or beside this interpreter.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import world  # noqa: E402
from bench.mirror_scan import PASSWORD  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402
from tests.fixtures.rsyncd import start_rsyncd  # noqa: E402
from tests.fixtures.servers import free_port, wait_for_port  # noqa: E402

#: Stages a sample is charged to: the first (in this order) with a matching frame anywhere in its
#: stack, so the modTime parsing the view does for a refreshed path counts as the view's.
STAGES: list[tuple[str, re.Pattern[str]]] = [
    ("view: refresh (load script reply, JSON, records)", re.compile(
        r"(_fetch|_refresh|_apply_path|_apply_mirror|_mirror_file) \(mirrorbits/cache\.py")),
    ("view: pub/sub message handling", re.compile(r"(handle_message|_flush|_schedule) \(mirrorbits/cache\.py")),
    ("pub/sub client", re.compile(r"mirrorbits/redis/pubsub|Subscri")),
    ("listing parse (rsync output)", re.compile(r"mirrorbits/scan/rsync\.py")),
    ("staging and commit (records, RPUSH, Lua calls)", re.compile(r"mirrorbits/scan/commit\.py")),
    ("Redis client (encode, reply parse)", re.compile(r"mirrorbits/redis/|txredisapi")),
    ("reactor (poll, socket reads/writes)", re.compile(r"twisted/")),
]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(client: object) -> float:
    info = client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def classify(stack: str) -> str:
    for name, pattern in STAGES:
        if pattern.search(stack):
            return name
    return "other"


def analyse(raw: Path) -> tuple[int, collections.Counter[str], collections.Counter[str], collections.Counter[str]]:
    """(samples, per stage, per leaf function, per innermost mirrorbits frame)."""
    stages: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        n = int(count_text)
        total += n
        stages[classify(stack)] += n
        frames = stack.split(";")
        leaves[re.sub(r":\d+\)", ")", frames[-1])] += n
        mine = [f for f in frames if "mirrorbits/" in f]
        ours[re.sub(r":\d+\)", ")", mine[-1]) if mine else "(no mirrorbits frame)"] += n
    return total, stages, leaves, ours


def report(raw: Path, cpu: float, entries: int) -> None:
    total, stages, leaves, ours = analyse(raw)
    print(f"\n{total} samples (active only); per stage:")
    for name, n in stages.most_common():
        print(f"  {100 * n / total:5.1f}%  {cpu * n / total / entries * 1e6:5.1f} us/entry  {name}")
    print("\ninnermost mirrorbits frame:")
    for name, n in ours.most_common(25):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nleaf functions:")
    for name, n in leaves.most_common(25):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--keep-profile", help="copy py-spy's collapsed stacks here")
    ap.add_argument("--no-profile", action="store_true", help="skip the third scan (under py-spy)")
    ap.add_argument("--changed", type=float, default=0.0,
                    help="then rescan once more after this percentage of the files changed")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="mb-scanprof-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    redis = RedisServer().start()
    rsyncd = daemon = None
    try:
        repo = workdir / "repo"
        counts = world.fill(redis.address, str(repo), None)
        rsyncd = start_rsyncd(workdir / "rsyncd", {"repo": {"path": str(repo)}})
        r = redis.client()
        for mid in r.hkeys("MIRRORS"):
            r.hset(f"MIRROR_{mid}", "rsync", rsyncd.url("repo"))
        rpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
        conf = workdir / "mirrorbits.conf"
        conf.write_text(
            f"Repository: {repo}\nRedisAddress: {redis.address}\nDataDir: {workdir / 'data'}\n"
            f"ListenAddress: 127.0.0.1:{http_port}\nRPCListenAddress: 127.0.0.1:{rpc_port}\n"
            f"RPCPassword: {PASSWORD}\nGeoipDatabasePath: {workdir / 'nogeoip'}\n"
            f"RepositoryScanInterval: 0\nMetricsListenAddress: 127.0.0.1:{metrics_port}\n")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("MIRRORBITS_CONFIG", None)
        log = open(workdir / "daemon.log", "ab")
        daemon = subprocess.Popen([sys.executable, "-m", "mirrorbits", "daemon", "-monitor=false",
                                   "-config", str(conf), "-p", str(workdir / "pid")],
                                  cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for_port("127.0.0.1", rpc_port, timeout=120)
        time.sleep(3)

        def view_work() -> tuple[float, float]:
            """(refreshes, paths reloaded) by the daemon's view so far."""
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read().decode()
            values = dict(re.findall(r"^(mirrorbits_view_(?:refreshes|paths_refreshed)_total) (\S+)$",
                                     text, re.MULTILINE))
            return (float(values.get("mirrorbits_view_refreshes_total", "nan")),
                    float(values.get("mirrorbits_view_paths_refreshed_total", "nan")))

        def scan_all() -> tuple[float, float, float, str]:
            assert daemon is not None
            v0 = view_work()
            c0, r0, t0 = cpu_seconds(daemon.pid), redis_cpu(r), time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "mirrorbits", "-h", "127.0.0.1", "-p", str(rpc_port),
                                  "-P", PASSWORD, "scan", "-all", "-rsync"],
                                 capture_output=True, text=True, env=env, timeout=1800)
            wall = time.perf_counter() - t0
            if out.returncode:
                raise RuntimeError(out.stdout + out.stderr)
            cpu, rcpu = cpu_seconds(daemon.pid) - c0, redis_cpu(r) - r0
            time.sleep(1)  # the view's refreshes follow the messages by a few hundred ms
            v1 = view_work()
            print(f"  view during the scan: {v1[0] - v0[0]:.0f} refreshes, {v1[1] - v0[1]:.0f} paths "
                  "reloaded", flush=True)
            return cpu, rcpu, wall, out.stdout

        print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()}; world {counts}", flush=True)
        cpu, rcpu, wall, out = scan_all()
        print(f"first scan -all: daemon CPU {cpu:.2f} s, Redis CPU {rcpu:.2f} s, wall {wall:.1f} s", flush=True)
        entries = sum(int(m) for m in re.findall(r"(\d+) files indexed", out)) or \
            sum(int(m) for m in re.findall(r"(\d+) files", out))
        cpu, rcpu, wall, out = scan_all()
        print(f"unchanged scan -all ({entries} listed files): daemon CPU {cpu:.2f} s "
              f"({cpu / entries * 1e6:.1f} us/entry), Redis CPU {rcpu:.2f} s, wall {wall:.1f} s, "
              f"load {os.getloadavg()}", flush=True)
        if args.changed:
            files = sorted(p for p in repo.rglob("*") if p.is_file())
            step = max(1, round(100 / args.changed))
            touched = files[::step]
            for f in touched:
                st = f.stat()
                os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 60 * 10**9))
            cpu, rcpu, wall, out = scan_all()
            print(f"{args.changed:g}%-changed scan -all ({len(touched)} of {len(files)} files changed, "
                  f"{entries} listed files): daemon CPU {cpu:.2f} s ({cpu / entries * 1e6:.1f} us/entry), "
                  f"Redis CPU {rcpu:.2f} s, wall {wall:.1f} s, load {os.getloadavg()}", flush=True)
        if args.no_profile:
            return
        raw = workdir / "profile.txt"
        spy = subprocess.Popen([pyspy, "record", "--pid", str(daemon.pid), "--rate", str(args.rate),
                                "--format", "raw", "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        cpu, rcpu, wall, out = scan_all()
        spy.send_signal(2)
        spy.wait(60)
        print(f"unchanged scan -all under py-spy: daemon CPU {cpu:.2f} s, wall {wall:.1f} s", flush=True)
        if args.keep_profile:
            shutil.copy(raw, args.keep_profile)
        report(raw, cpu, entries)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(30)
        if rsyncd is not None:
            rsyncd.stop()
        redis.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
