"""The bench world with its repository tree served to scans: a private ``redis-server`` filled by
:mod:`bench.world`, one real ``rsync --daemon`` module over the tree and, if asked, a real FTP server
(pyftpdlib, MLSD without MDTM).  Shared by the scan benchmarks, torn down on exit."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import world
from mirrorbits.redis import schema
from tests.fixtures.ftpd import start_ftpd
from tests.fixtures.redis import RedisServer
from tests.fixtures.rsyncd import start_rsyncd


@dataclass
class ScanWorld:
    workdir: Path
    repo: Path
    redis: RedisServer
    counts: dict[str, int]
    #: (mirror id, protocol, URL) of every mirror, in id order: the first ``ftp`` ones over FTP.
    targets: list[tuple[int, str, str]]


@contextmanager
def scan_world(prefix: str, ftp: int = 0, ips: bool = False) -> Iterator[ScanWorld]:
    """The world, with each mirror's ``rsync`` (or, for the first ``ftp`` mirrors, ``ftp`` only)
    field pointing at the local servers."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    redis = RedisServer().start()
    rsyncd = ftpd = None
    try:
        repo = workdir / "repo"
        counts = world.fill(redis.address, str(repo), str(workdir / "ips.txt") if ips else None)
        # The files' sizes (sparse) and mtimes are what the FILE_ records hold (mtimes to the
        # second rsync lists), so that once scanned the mirrors carry the local version and the
        # redirector sends clients to them (with empty files of the tree's creation time every
        # mirror would carry another version and every answer would be a fallback).
        r = redis.client()
        for path in world.file_paths():
            f = repo / path.lstrip("/")
            os.truncate(f, int(r.hget(schema.file_key(path), "size") or 0))
            os.utime(f, ns=(world.MODTIME_NS, world.MODTIME_NS))
        rsyncd = start_rsyncd(workdir / "rsyncd", {"repo": {"path": str(repo)}})
        ftpd = start_ftpd(repo, mdtm=False) if ftp else None
        r = redis.client()
        targets = []
        for i, mid in enumerate(sorted(int(m) for m in r.hkeys(schema.MIRRORS))):
            if ftpd is not None and i < ftp:
                r.hset(schema.mirror_key(mid), mapping={"rsync": "", "ftp": ftpd.url("/")})
                targets.append((mid, "ftp", ftpd.url("/")))
            else:
                r.hset(schema.mirror_key(mid), "rsync", rsyncd.url("repo"))
                targets.append((mid, "rsync", rsyncd.url("repo")))
        yield ScanWorld(workdir, repo, redis, counts, targets)
    finally:
        if ftpd is not None:
            ftpd.stop()
        if rsyncd is not None:
            rsyncd.stop()
        redis.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
