"""The world the crash-consistency tests kill daemons in, and the invariants they check.

One real ``redis-server`` with ``appendonly yes`` and ``appendfsync always`` (a write it answered is
on disk, so a restart from the AOF holds every acknowledged write), a local repository in two
versions, two mirrors of it (one over rsync, one over FTP; each has a module or server per
version, so switching a mirror to the other listing is one ``HSET``), an HTTP server per mirror
for the health checks, and the daemons, each ``python -m mirrorbits daemon`` in its own process
group.  The fault hook (:mod:`mirrorbits.faults`) is armed through the daemon's environment.

The base state the tests start every kill from is built by a clean daemon (index of version 1, both
mirrors scanned and checked) and restored with ``DUMP``/``RESTORE``.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrorbits.faults import ENV as FAULT_ENV
from mirrorbits.redis import schema
from tests.fixtures import processes
from tests.fixtures.filemirror import FileMirror
from tests.fixtures.ftpd import FtpServer, start_ftpd
from tests.fixtures.redis import RedisServer
from tests.fixtures.rsyncd import RsyncDaemon, start_rsyncd
from tests.fixtures.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "crash"
RSYNC_ID, FTP_ID = 1, 2
FALLBACK = "http://127.0.0.1:9/fallback/"

#: Version 1: 400 files.  Version 2: 30 removed, 30 resized, 50 added (420 files).  Sizes of more than
#: one batch everywhere: the local commit writes 200 paths per batch, a mirror commit 250.
V1 = {f"/pub/d{i // 100:02d}/f{i:04d}.bin": 10 + i % 7 for i in range(400)}
V2 = {p: s for p, s in V1.items() if int(p[-8:-4]) >= 30}
V2.update({f"/pub/d{i // 100:02d}/f{i:04d}.bin": 20 + i % 5 for i in range(30, 60)})
V2.update({f"/pub/d{i // 100:02d}/f{i:04d}.bin": 10 + i % 3 for i in range(400, 450)})
#: A file both versions hold, same size: what the "does it serve" request asks for.
PROBE = "/pub/d02/f0250.bin"

#: Keys that only exist for a while: each must carry a TTL (or be gone), whatever was killed when.
TEMPORARY_PATTERNS = ("MIRRORSCANTMP_*", "HANDLEDFILESTMP_*", "MIRRORFILESTMP_*", "MIRRORSCANCOMMIT_*",
                      "SCANNING_*", "SOURCE_REPO_SYNC", "LOCK_*", "DOWNLOADED_*")


def content(path: str, size: int) -> bytes:
    return (path.encode() * (size // len(path) + 1))[:size]


def build_tree(root: Path, files: dict[str, int]) -> None:
    for path, size in files.items():
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content(path, size))


def wait_until(check: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out ({timeout:.0f} s) waiting for {what}")
        time.sleep(step)


class Daemon:
    """One daemon process; ``fault`` arms :mod:`mirrorbits.faults` in it."""

    def __init__(self, world: World, name: str, *, repo: Path, monitor: bool, fault: str | None) -> None:
        self.world = world
        self.dir = world.tmp / name
        self.dir.mkdir(exist_ok=True)
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.fault = fault
        self.conf = self.dir / "mirrorbits.conf"
        self.conf.write_text(
            f"Repository: {repo}\nRedisAddress: {world.redis.address}\nDataDir: {self.dir / 'data'}\n"
            f"ListenAddress: 127.0.0.1:{self.http_port}\nRPCListenAddress: 127.0.0.1:{self.rpc_port}\n"
            f"RPCPassword: {PASSWORD}\nGeoipDatabasePath: {self.dir / 'nogeoip'}\n"
            f"CheckInterval: 1\nScanInterval: 30\nRepositoryScanInterval: 0\n"
            f"Fallbacks:\n    - URL: {FALLBACK}\n")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop(FAULT_ENV, None)
        env.pop("MIRRORBITS_CONFIG", None)
        if fault:
            env[FAULT_ENV] = fault
        self.env = env
        self.log_path = self.dir / "daemon.log"
        with open(self.log_path, "ab") as out:
            out.write(f"--- start, fault {fault}\n".encode())
            out.flush()
            args = [sys.executable, "-m", "mirrorbits", "daemon", "-config", str(self.conf),
                    "-p", str(self.dir / "mirrorbits.pid")]
            args.append("-debug") if os.environ.get("CRASH_DEBUG") else None
            if not monitor:
                args.append("-monitor=false")
            self.proc = processes.spawn(args, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started = time.monotonic()

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def killed_by_fault(self) -> bool:
        """True when the process died of its own armed fault point."""
        return self.proc.poll() == -signal.SIGKILL and f"fault point {self.fault} reached" in self.log()

    def wait_listening(self, timeout: float = 40) -> None:
        def up() -> bool:
            assert self.alive(), self.log()
            try:
                wait_for_port("127.0.0.1", self.http_port, timeout=0.2)
            except TimeoutError:
                return False
            return True

        wait_until(up, timeout, "the daemon's HTTP listener")

    def wait_dead(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        processes.kill(self.proc)  # reaps the group (a worker or an rsync child would linger)
        return True

    def stop(self) -> None:
        processes.stop(self.proc, grace=15)

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("Location") or ""
        finally:
            conn.close()

    def cli(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The real console script against this daemon's admin channel."""
        base = [sys.executable, "-m", "mirrorbits", "-h", "127.0.0.1", "-p", str(self.rpc_port),
                "-P", PASSWORD]
        cli_env = dict(self.env, **(env or {}))
        cli_env.pop(FAULT_ENV, None)
        return subprocess.run(base + list(argv), capture_output=True, text=True, cwd=self.dir,
                              env=cli_env, timeout=timeout, stdin=subprocess.DEVNULL)


@dataclass
class Outcome:
    """What one kill point gave."""

    point: str
    reached: bool
    redis_killed: bool
    violations: list[str] = field(default_factory=list)
    notes: dict[str, float] = field(default_factory=dict)


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo_v1, self.repo_v2 = tmp / "repo1", tmp / "repo2"
        build_tree(self.repo_v1, V1)
        build_tree(self.repo_v2, V2)
        self.redis = RedisServer(["--appendonly", "yes", "--appendfsync", "always"]).start()
        self.rsyncd: RsyncDaemon = start_rsyncd(tmp / "rsyncd", {
            "v1": {"path": str(self.repo_v1)}, "v2": {"path": str(self.repo_v2)}})
        self.ftp_v1: FtpServer = start_ftpd(self.repo_v1)
        self.ftp_v2: FtpServer = start_ftpd(self.repo_v2)
        self.web = {RSYNC_ID: FileMirror({p: content(p, s) for p, s in V1.items()}),
                    FTP_ID: FileMirror({p: content(p, s) for p, s in V1.items()})}
        for m in self.web.values():  # the health checks may sample a file of either version
            m.files.update({p: content(p, s) for p, s in V2.items()})
        self.daemons: list[Daemon] = []
        self.snapshot: dict[str, tuple[bytes, int]] = {}
        self.outcomes: list[Outcome] = []

    # -- set-up ------------------------------------------------------------------------------

    def listing_url(self, mirror_id: int, version: int) -> tuple[str, str]:
        if mirror_id == RSYNC_ID:
            return "rsync", self.rsyncd.url(f"v{version}")
        return "ftp", (self.ftp_v1 if version == 1 else self.ftp_v2).url("/")

    def build_base(self) -> None:
        """Version 1 indexed, both mirrors scanned (listing 1) and up, by a clean daemon."""
        r = self.client()
        r.flushall()
        r.set(schema.DB_VERSION_KEY, "2")
        for mirror_id, name in ((RSYNC_ID, "rs"), (FTP_ID, "ftp")):
            key, url = self.listing_url(mirror_id, 1)
            r.hset(schema.MIRRORS, str(mirror_id), name)
            r.hset(schema.mirror_key(mirror_id), mapping={
                "ID": str(mirror_id), "name": name, "http": self.web[mirror_id].url.rstrip("/"),
                key: url, "enabled": "1", "score": "0"})
        r.set(schema.LAST_MID, "2")
        d = self.start(repo=self.repo_v1, monitor=True)

        def ready() -> bool:
            assert d.alive(), d.log()
            if r.scard(schema.FILES) != len(V1):
                return False
            for m in (RSYNC_ID, FTP_ID):
                h = r.hgetall(schema.mirror_key(m))
                if r.scard(schema.mirror_files_key(m)) != len(V1) or "lastSuccessfulSync" not in h \
                        or h.get("httpUp") != "1":
                    return False
            return True

        try:
            wait_until(ready, 90, "the base index")
        except AssertionError:
            state = {m: r.hgetall(schema.mirror_key(m)) for m in (RSYNC_ID, FTP_ID)}
            raise AssertionError(f"no base index: FILES {r.scard(schema.FILES)}, {state}\n{d.log()}") from None
        d.stop()
        self.daemons.remove(d)
        r.delete(*r.keys("SCANNING_*"), "SOURCE_REPO_SYNC")
        self.snapshot = {k: (r.dump(k), r.pttl(k)) for k in self.raw_client().keys("*")}

    def restore_base(self) -> None:
        r = self.raw_client()
        r.flushall()
        pipe = r.pipeline(transaction=False)
        for k, (blob, ttl) in self.snapshot.items():
            pipe.restore(k, max(ttl, 0), blob)
        pipe.execute()

    def client(self) -> Any:
        return self.redis.client()

    def raw_client(self) -> Any:
        return self.redis.client(decode=False)

    def start(self, *, repo: Path | None = None, monitor: bool = True, fault: str | None = None,
              name: str | None = None) -> Daemon:
        d = Daemon(self, name or f"d{len(self.daemons)}-{time.monotonic_ns()}", repo=repo or self.repo_v1,
                   monitor=monitor, fault=fault)
        self.daemons.append(d)
        return d

    def restart_redis(self) -> None:
        """SIGKILL Redis and start it again on the same port from its AOF."""
        self.redis.kill()
        again = RedisServer(self.redis.extra_args, port=self.redis.port)
        shutil.rmtree(again.dir, ignore_errors=True)
        again.dir = self.redis.dir
        self.redis = again.start()

    def close(self) -> None:
        for d in self.daemons:
            processes.kill(d.proc)
        for m in self.web.values():
            m.close()
        self.ftp_v1.stop()
        self.ftp_v2.stop()
        self.rsyncd.stop()
        self.redis.cleanup()

    # -- invariants ----------------------------------------------------------------------------

    def keys(self, pattern: str) -> list[str]:
        return [k for k in self.client().scan_iter(match=pattern, count=1000)]

    def temporary_keys_without_ttl(self) -> list[str]:
        r = self.client()
        return [k for p in TEMPORARY_PATTERNS for k in self.keys(p) if r.ttl(k) == -1]

    def orphan_records(self) -> list[str]:
        """``FILE_*`` records whose path ``FILES`` does not list: no scan would ever remove them."""
        files = self.client().smembers(schema.FILES)
        return [k for k in self.keys("FILE_*") if k[len("FILE_"):] not in files]

    def local_index(self) -> tuple[set[str], dict[str, int]]:
        r = self.client()
        records = {k[len("FILE_"):]: int(r.hget(k, "size") or -1) for k in self.keys("FILE_*")}
        return set(r.smembers(schema.FILES)), records

    def mirror_index_problems(self, listings: dict[int, Iterable[dict[str, int]]]) -> list[str]:
        """Each mirror's index must be exactly one listing it was given, seen the same way by every
        key that holds it: ``MIRRORFILES_<id>``, the paths whose ``FILEMIRRORS_<path>`` holds the id,
        the paths that have a ``FILEINFO_<id>_<path>`` (with that listing's size), and
        ``HANDLEDFILES_<id>`` = ``MIRRORFILES_<id>`` ∩ ``FILES`` (``FILES`` of either version: a local scan
        does not update it, the next mirror scan does).  Nothing may name a mirror that
        ``MIRRORS`` does not list."""
        r = self.client()
        problems: list[str] = []
        mirrors = {int(k) for k in r.hkeys(schema.MIRRORS)}
        by_mirror: dict[int, set[str]] = {}
        for k in self.keys("FILEMIRRORS_*"):
            for m in r.smembers(k):
                by_mirror.setdefault(int(m), set()).add(k[len("FILEMIRRORS_"):])
        infos: dict[int, dict[str, int]] = {}
        for k in self.keys("FILEINFO_*"):
            mid, _, path = k[len("FILEINFO_"):].partition("_")
            infos.setdefault(int(mid), {})[path] = int(r.hget(k, "size") or -1)
        hashes = {int(k[len("MIRROR_"):]) for k in self.keys("MIRROR_*") if k[len("MIRROR_"):].isdigit()}
        if hashes != mirrors:
            problems.append(f"MIRRORS lists {sorted(mirrors)} but MIRROR_* hashes are {sorted(hashes)}")
        for mid in sorted(set(by_mirror) | set(infos) | {int(k.rsplit('_', 1)[1]) for k in self.keys("MIRRORFILES_*")}):
            if mid not in mirrors:
                problems.append(f"mirror {mid} is gone but its index is still in Redis")
        files = r.smembers(schema.FILES)
        for mid in sorted(mirrors):
            mf = set(r.smembers(schema.mirror_files_key(mid)))
            fm = by_mirror.get(mid, set())
            fi = infos.get(mid, {})
            allowed = [dict(x) for x in listings.get(mid, [])]
            if mf != fm or mf != set(fi):
                problems.append(f"mirror {mid}: MIRRORFILES {len(mf)}, FILEMIRRORS {len(fm)}, FILEINFO "
                                f"{len(fi)} paths disagree ({len(mf ^ fm)} / {len(mf ^ set(fi))} differ)")
            elif allowed and not any(fi == a for a in allowed):
                problems.append(f"mirror {mid}: its index ({len(mf)} paths) is none of the listings "
                                f"({', '.join(str(len(a)) for a in allowed)} paths): a mix")
            # FILES as it was when the mirror was committed (a local scan since does not touch it).
            handled = set(r.smembers(schema.handled_files_key(mid)))
            if all(handled != mf & set(version) for version in (files, V1, V2)):
                problems.append(f"mirror {mid}: HANDLEDFILES ({len(handled)}) is not MIRRORFILES ∩ FILES "
                                f"({len(mf & files)})")
        return problems

    def stats_total(self) -> int:
        return int(self.client().get(schema.STATS_TOTAL) or 0)
