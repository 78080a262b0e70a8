"""Benchmark of the Redis client's reply path and of the redirector view's bulk load (loopback only).

Starts a private redis-server, fills it, and times through :class:`mirrorbits.redis.connection.RedisClient`:

* ``SMEMBERS`` of a 100,000-member set (one reply of 100,000 bulk strings);
* ``HGETALL`` of a 50,000-field hash;
* a pipeline of 20,000 ``GET`` commands (one write, 20,000 replies);
* the view's warm-up (:meth:`mirrorbits.cache.MirrorView.warm`) of ``--files`` paths with
  ``--mirrors`` mirrors each, i.e. the bulk reads a redirector does at start and after a reconnect.

Each figure is the best of ``--repeat`` runs: wall time, and the CPU time of this process.

    python bench/redis_client.py
    python bench/redis_client.py --files 20000 --mirrors 5 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Awaitable, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import defer, reactor, task  # noqa: E402

from mirrorbits.cache import MirrorView  # noqa: E402
from mirrorbits.redis import schema  # noqa: E402
from mirrorbits.redis.connection import RedisClient, RedisSettings  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402

MODTIME = "2025-06-01 06:00:00.123456789 +0200 CEST"


def fill(server: RedisServer, files: int, mirrors: int) -> None:
    r = server.client()
    pipe = r.pipeline(transaction=False)
    pipe.sadd("bench:set", *[f"member-{i:06d}" for i in range(100_000)])
    pipe.hset("bench:hash", mapping={f"field-{i:06d}": f"value-{i}" for i in range(50_000)})
    for i in range(20_000):
        pipe.set(f"bench:k{i}", str(i))
    pipe.execute()
    for m in range(1, mirrors + 1):
        pipe.hset(schema.mirror_key(m), mapping={
            "ID": str(m), "name": f"m{m}", "http": f"http://m{m}.example/", "enabled": "true",
            "httpUp": "true", "httpsUp": "false", "latitude": "48.0", "longitude": str(m),
            "countryCodes": "FR", "asnum": "1"})
        pipe.hset(schema.MIRRORS, str(m), f"m{m}")
    for f in range(files):
        path = f"/dir{f // 1000}/file{f}.iso"
        pipe.sadd(schema.FILES, path)
        pipe.hset(schema.file_key(path), mapping={"size": "1234", "modTime": MODTIME, "sha256": "x"})
        for m in range(1, mirrors + 1):
            pipe.sadd(schema.file_mirrors_key(path), str(m))
            pipe.hset(schema.file_info_key(m, path), mapping={"size": "1234", "modTime": MODTIME})
        if f % 1000 == 999:
            pipe.execute()
    pipe.execute()


async def best(repeat: int, run: Callable[[], Awaitable[object]]) -> str:
    """Best wall time and best CPU time of this process over ``repeat`` runs (the CPU time is the
    steadier figure on a shared machine)."""
    walls, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        await run()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return f"{min(walls):.3f} s (CPU {min(cpus):.3f} s)"


async def main(args: argparse.Namespace) -> None:
    server = RedisServer().start()
    try:
        fill(server, args.files, args.mirrors)
        client = RedisClient(lambda: RedisSettings(address=server.address), reactor)
        client.start()
        client.set_ready()
        await client.execute("PING")

        async def smembers() -> None:
            assert len(await client.execute("SMEMBERS", "bench:set")) == 100_000

        async def hgetall() -> None:
            assert len(await client.execute("HGETALL", "bench:hash")) == 100_000

        async def pipeline() -> None:
            assert len(await client.pipeline([("GET", f"bench:k{i}") for i in range(20_000)])) == 20_000

        async def warm() -> None:
            view = MirrorView(client, reactor, warm_limit=None)
            await view.warm()
            assert len(view) == args.files, len(view)
            view.stop()

        print(f"SMEMBERS 100k members:       {await best(args.repeat, smembers)}")
        print(f"HGETALL 50k fields:          {await best(args.repeat, hgetall)}")
        print(f"pipeline of 20k GET:         {await best(args.repeat, pipeline)}")
        print(f"view warm-up {args.files} files x {args.mirrors} mirrors: "
              f"{await best(args.repeat, warm)}")
        await client.stop()
    finally:
        server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--mirrors", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    task.react(lambda _reactor: defer.Deferred.fromCoroutine(main(parser.parse_args())))
