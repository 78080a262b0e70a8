"""Build a million-file Mirrorbits world straight into Redis, in the Go layout, in minutes.

What ``world.py`` writes for 5,000 files, at the scale of a large distribution: 1,000,000 files
(``FILE_*``, ``FILES``), 100 mirrors (``MIRROR_*``, ``MIRRORS``, ``LAST_MID``), 30 of them partial
(each carries a random 20-90% of the files); for every file a mirror carries
``FILEINFO_<id>_<path>`` and the member in ``FILEMIRRORS_<path>`` (with ``--indexes`` also in the
mirror's ``MIRRORFILES_<id>`` and ``HANDLEDFILES_<id>``, what a Go scan leaves behind; no redirect
reads them); the repository tree of empty files the daemon ``lstat``s before every redirect; the
Zipf-ranked path list and the client IP list ``load.lua`` reads.

Memory decides the rest.  The issue's world, 70 complete mirrors, is ~87 million (file, mirror)
records: ~33 GB of Redis 6.2 (libc malloc) with the scan-side sets, ~18 GB without (385 and 212
bytes per record, measured on 100,000 files), beyond the ~10 GiB a shared 24 GiB machine can give.
So by default each of the 70 other mirrors carries one of the four top-level trees completely
(``--full-trees 4``: the issue's world), 34.6 mirrors per file on average: 7.6 GB of Redis.

Why a Lua script instead of one command per key: tens of millions of records.  Python composing
one command per key would take most of an hour; here Python sends each path once (with its size,
its tree and which partial mirrors carry it) and one script call per batch expands it into every key
inside Redis, which costs Redis ~1-2 us per write (~4 minutes for the million files).

    python bench/million.py --out /tmp/million                 # build (once): world.rdb, repo/, *.txt
    python bench/million.py --out /tmp/m100k --files 100000     # a tenth, to size Redis' memory first
    python bench/million.py --out /tmp/million --serve         # start a redis-server on the saved RDB

The built world is saved as ``<out>/world.rdb`` (``SAVE``, no fork) and reused by
``bench/million_load.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import world  # noqa: E402

from mirrorbits.gocompat import format_gts  # noqa: E402
from mirrorbits.redis import schema  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402

N_FILES = 1_000_000
N_MIRRORS = 100
PARTIAL_FRACTION = 0.3
#: Files per script call: ~85 mirrors x 4 writes per file, so ~70,000 writes (~0.1 s of Redis).
BATCH = 200
RDB_NAME = "world.rdb"
#: The top-level trees; file i lies in tree i % 4.
TREES = ("releases", "pool", "updates", "isos")

#: One batch of files.  ARGV: modTime, JSON list (one per top-level tree) of the lists of the
#: complete mirrors' ids, JSON list of the partial mirrors' ids, then (path, size, sha256, tree,
#: mask) per file, where tree (1-based) says which list of complete mirrors carries it and mask has
#: one "1"/"0" per partial mirror (in the order of the list) saying whether it carries the file.
#: Keys are the Go schema's.
_BUILD_SCRIPT = """
local mod = ARGV[1]
local trees = cjson.decode(ARGV[2])
local partial = cjson.decode(ARGV[3])
for i = 4, #ARGV, 5 do
  local p, size, sha, tree, mask = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  redis.call('HSET', '@FILE@' .. p, 'size', size, 'modTime', mod, 'sha1', '', 'sha256', sha, 'md5', '')
  redis.call('SADD', '@FILES@', p)
  local ids = {}
  local full = trees[tonumber(tree)]
  for k = 1, #full do ids[k] = full[k] end
  for k = 1, #partial do
    if string.byte(mask, k) == 49 then ids[#ids + 1] = partial[k] end
  end
  redis.call('SADD', '@FILEMIRRORS@' .. p, unpack(ids))
  for _, id in ipairs(ids) do
    redis.call('HSET', '@FILEINFO@' .. id .. '_' .. p, 'size', size, 'modTime', mod)
    if indexes then
      redis.call('SADD', '@MIRRORFILES@' .. id, p)
      redis.call('SADD', '@HANDLED@' .. id, p)
    end
  end
end
return #ARGV
"""


def build_script(indexes: bool) -> str:
    return (_BUILD_SCRIPT.replace("@FILE@", schema.file_key(""))
            .replace("@FILES@", schema.FILES)
            .replace("@FILEMIRRORS@", schema.file_mirrors_key(""))
            .replace("@FILEINFO@", schema.file_info_key("", "")[:-1])
            .replace("@MIRRORFILES@", schema.mirror_files_key(""))
            .replace("@HANDLED@", schema.handled_files_key(""))
            .replace("if indexes then", "if true then" if indexes else "if false then"))


def file_paths(n: int) -> list[str]:
    """``world.file_paths`` at this scale: 4 trees x 40 directories, ~6,250 files per directory."""
    rng = random.Random(1)
    out = []
    for i in range(n):
        ext = (".iso", ".tar.xz", ".deb", ".rpm", ".zip")[i % 5]
        out.append(f"/{TREES[i % 4]}/{rng.randrange(40):02d}/package-{i:07d}{ext}")
    return out


def fill(r: object, paths: list[str], n_mirrors: int, partial_fraction: float,
         share: tuple[float, float], full_trees: int, indexes: bool, seed: int = 4) -> dict[str, int]:
    """Write the world; ``paths[i]`` lies in tree ``i % 4`` (see :func:`file_paths`).

    Each complete (not partial) mirror carries ``full_trees`` of the four top-level trees entirely
    (4: the whole repository), the trees taken in turn; each partial mirror a random share in
    ``share`` of every file."""
    import redis as redis_py

    assert isinstance(r, redis_py.Redis)
    r.flushdb()
    r.set(schema.DB_VERSION_KEY, str(schema.DB_VERSION))
    rng = random.Random(seed)
    mirrors = world.build_mirrors(n_mirrors)
    for m in mirrors:
        r.hset(schema.mirror_key(m.id), mapping=dict(m.to_redis()))
        r.hset(schema.MIRRORS, str(m.id), m.name)
    r.set(schema.LAST_MID, str(n_mirrors))
    n_partial = round(n_mirrors * partial_fraction)
    partial = sorted(rng.sample([m.id for m in mirrors], n_partial))
    complete = [m.id for m in mirrors if m.id not in set(partial)]
    by_tree: list[list[str]] = [[] for _ in TREES]
    for k, mirror_id in enumerate(complete):
        for t in range(full_trees):
            by_tree[(k + t) % len(TREES)].append(str(mirror_id))
    shares = [rng.uniform(*share) for _ in partial]
    mod = format_gts(world.MODTIME_NS, "UTC")
    sha = r.script_load(build_script(indexes))
    head = [mod, json.dumps(by_tree), json.dumps([str(i) for i in partial])]
    pairs = 0
    pipe = r.pipeline(transaction=False)
    t0 = time.monotonic()
    for start in range(0, len(paths), BATCH):
        args = list(head)
        for i, p in enumerate(paths[start:start + BATCH], start):
            mask = "".join("1" if rng.random() < s else "0" for s in shares)
            tree = i % len(TREES)
            pairs += len(by_tree[tree]) + mask.count("1")
            args += [p, str(1000 + rng.randrange(50_000_000)),
                     hashlib.sha256(p.encode()).hexdigest(), str(tree + 1), mask]
        pipe.evalsha(sha, 0, *args)
        if len(pipe) >= 8:
            pipe.execute()
        if start % 100_000 == 0 and start:
            print(f"  {start} files, {time.monotonic() - t0:.0f} s", flush=True)
    pipe.execute()
    return {"files": len(paths), "mirrors": n_mirrors, "partial": n_partial,
            "complete_trees_per_mirror": full_trees, "pairs": pairs,
            "mirrors_per_file": round(pairs / max(1, len(paths)), 1)}


def make_tree(repo: str, paths: list[str]) -> float:
    """The repository of empty files (the redirector lstat's every component of a path)."""
    t0 = time.monotonic()
    done = os.path.join(repo, ".complete")
    if os.path.exists(done):
        return 0.0
    dirs = {p.rsplit("/", 1)[0] for p in paths}
    for d in dirs:
        os.makedirs(repo + d, exist_ok=True)
    flags = os.O_CREAT | os.O_WRONLY
    for p in paths:
        os.close(os.open(repo + p, flags, 0o644))
    open(done, "w").close()
    return time.monotonic() - t0


def serve(out: str, extra: list[str] | None = None) -> RedisServer:
    """A private redis-server that loads ``<out>/world.rdb`` (and never writes it back)."""
    import redis as redis_py

    server = RedisServer(extra_args=["--dir", out, "--dbfilename", RDB_NAME, *(extra or [])])
    try:
        server.start()
    except redis_py.exceptions.BusyLoadingError:
        # Several GB of RDB take longer than the fixture's 10 s to load.
        while True:
            try:
                server.client().ping()
                break
            except redis_py.exceptions.BusyLoadingError:
                time.sleep(0.5)
    return server


def memory(r: object) -> dict[str, str]:
    import redis as redis_py

    assert isinstance(r, redis_py.Redis)
    info = r.info("memory")
    keys = r.dbsize()
    return {"used_memory_human": str(info["used_memory_human"]),
            "used_memory": str(info["used_memory"]), "used_memory_rss": str(info["used_memory_rss"]),
            "keys": str(keys)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for world.rdb, repo/, paths.txt, ips.txt")
    ap.add_argument("--files", type=int, default=N_FILES)
    ap.add_argument("--mirrors", type=int, default=N_MIRRORS)
    ap.add_argument("--partial", type=float, default=PARTIAL_FRACTION, help="fraction of partial mirrors")
    ap.add_argument("--share", default="0.2,0.9",
                    help="a partial mirror carries a uniform share in this range of the files")
    ap.add_argument("--full-trees", type=int, default=1,
                    help="top-level trees (of 4) each complete mirror carries; 4: all (the issue's "
                         "world, ~31 GB of Redis, see the module docstring)")
    ap.add_argument("--indexes", action="store_true",
                    help="also write the scan-side MIRRORFILES_<id> and HANDLEDFILES_<id> sets "
                         "(~170 bytes of Redis per (file, mirror); no redirect reads them)")
    ap.add_argument("--no-tree", action="store_true", help="do not create the repository tree")
    ap.add_argument("--serve", action="store_true", help="only start a redis-server on the saved world")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.serve:
        server = serve(args.out)
        print(f"redis-server pid {server.proc.pid if server.proc else '?'} on {server.address}: "
              f"{json.dumps(memory(server.client(decode=False)))}", flush=True)
        return
    paths = file_paths(args.files)
    with open(os.path.join(args.out, "ips.txt"), "w") as f:
        f.write("\n".join(world.client_ips()) + "\n")
    ranked = list(paths)
    random.Random(5).shuffle(ranked)  # Zipf rank order: popular files spread over the tree
    with open(os.path.join(args.out, "paths.txt"), "w") as f:
        f.write("\n".join(ranked) + "\n")
    if not args.no_tree:
        print(f"tree: {make_tree(os.path.join(args.out, 'repo'), paths):.1f} s", flush=True)
    server = RedisServer(extra_args=["--dir", args.out, "--dbfilename", RDB_NAME])
    server.start()
    try:
        r = server.client(decode=False)
        r_long = type(r)(host="127.0.0.1", port=server.port, socket_timeout=600)
        t0 = time.monotonic()
        lo, hi = (float(x) for x in args.share.split(","))
        counts = fill(r_long, paths, args.mirrors, args.partial, (lo, hi), args.full_trees, args.indexes)
        built = time.monotonic() - t0
        mem = memory(r_long)
        print(f"world: {json.dumps(counts)} in {built:.0f} s; Redis {json.dumps(mem)}", flush=True)
        t0 = time.monotonic()
        r_long.save()
        print(f"saved {os.path.join(args.out, RDB_NAME)} in {time.monotonic() - t0:.0f} s", flush=True)
        with open(os.path.join(args.out, "world.json"), "w") as f:
            json.dump({**counts, "build_seconds": round(built), **mem}, f)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
