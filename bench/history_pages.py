"""Benchmark of the statistics pages on a year of data: ``?mirrorstats`` (with its sparklines) and
``?mirrorstats=history``, over loopback HTTP against the real resource, on a private redis-server.

The data: ``--mirrors`` mirrors and ``--files`` files; each of the last 365 days, ``--daily-files``
distinct files were downloaded (so the month hashes hold most files and the year hash all of them),
written as the Go original's ``STATS_*`` keys.  Each figure is the best and the median of
``--repeat`` requests (wall time, client included), after one warm-up request.

    python bench/history_pages.py
    python bench/history_pages.py --files 20000 --mirrors 10 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.web.client import Agent, readBody  # noqa: E402

from mirrorbits.app import Mirrorbits  # noqa: E402
from mirrorbits.config import Config, ConfigHolder  # noqa: E402
from mirrorbits.redis import schema  # noqa: E402
from mirrorbits.web.site import make_site  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402


def fill(server: RedisServer, today: date, files: int, mirrors: int, daily_files: int) -> int:
    """A year of Go-shaped statistics; returns the number of hash fields written."""
    r = server.client()
    rng = random.Random(16)
    paths = [f"/dir{f // 1000}/file{f}.iso" for f in range(files)]
    pipe = r.pipeline(transaction=False)
    for m in range(1, mirrors + 1):
        pipe.hset(schema.mirror_key(m), mapping={
            "ID": str(m), "name": f"mirror{m}", "http": f"http://m{m}.example/", "enabled": "true",
            "httpUp": "true", "countryCodes": ["FR", "DE", "US", "JP", "BR"][m % 5]})
        pipe.hset(schema.MIRRORS, str(m), f"mirror{m}")
    pipe.execute()
    months: dict[str, Counter[str]] = {}
    year_files: dict[int, Counter[str]] = {}
    mirror_keys: dict[str, Counter[str]] = {}
    fields = 0
    for back in range(365):
        day = today - timedelta(days=back)
        counts = Counter({p: rng.randint(1, 50) for p in rng.sample(paths, daily_files)})
        per_mirror = Counter({str(m): rng.randint(100, 10_000) for m in range(1, mirrors + 1)})
        sizes = Counter({k: v * 1_000_000 for k, v in per_mirror.items()})
        d, mo, y = f"_{day:%Y_%m_%d}", f"_{day:%Y_%m}", f"_{day:%Y}"
        pipe.hset("STATS_FILE" + d, mapping=dict(counts))
        fields += len(counts)
        months.setdefault(mo, Counter()).update(counts)
        year_files.setdefault(day.year, Counter()).update(counts)
        for suffix in (d, mo, y, ""):
            mirror_keys.setdefault("STATS_MIRROR" + suffix, Counter()).update(per_mirror)
            mirror_keys.setdefault("STATS_MIRROR_BYTES" + suffix, Counter()).update(sizes)
        if back % 20 == 19:
            pipe.execute()
    for mo, counts in months.items():
        pipe.hset("STATS_FILE" + mo, mapping=dict(counts))
        fields += len(counts)
        pipe.execute()
    total: Counter[str] = Counter()
    for y, counts in year_files.items():
        pipe.hset(f"STATS_FILE_{y}", mapping=dict(counts))
        total.update(counts)
        fields += len(counts)
        pipe.execute()
    pipe.hset("STATS_FILE", mapping=dict(total))
    for key, counts in mirror_keys.items():
        pipe.hset(key, mapping=dict(counts))
    pipe.set("STATS_TOTAL", sum(total.values()))
    pipe.execute()
    return fields + len(total)


async def timed(agent: Agent, url: str, repeat: int) -> tuple[float, float, int]:
    await readBody(await agent.request(b"GET", url.encode()))  # warm-up
    walls = []
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = await agent.request(b"GET", url.encode())
        body = await readBody(response)
        walls.append(time.perf_counter() - start)
        assert response.code == 200, (url, response.code, body[:200])
        size = len(body)
    return min(walls), statistics.median(walls), size


async def main(args: argparse.Namespace) -> None:
    server = RedisServer().start()
    repo = tempfile.mkdtemp(prefix="mirrorbits-bench-")
    try:
        today = datetime.now(UTC).date()
        start = time.perf_counter()
        fields = fill(server, today, args.files, args.mirrors, args.daily_files)
        print(f"seeded {fields} per-file hash fields, {args.mirrors} mirrors, 365 days "
              f"in {time.perf_counter() - start:.1f} s; Redis used_memory "
              f"{server.client().info('memory')['used_memory_human']}")
        config = Config(Repository=repo, RedisAddress=server.address,
                        GeoipDatabasePath=os.path.join(repo, "no-geoip"))
        app = Mirrorbits(ConfigHolder(config), reactor, monitor=False)
        client = app.get_redis()
        client.start()
        client.set_ready()
        port = reactor.listenTCP(0, make_site(app), interface="127.0.0.1")
        base = f"http://127.0.0.1:{port.getHost().port}"
        agent = Agent(reactor)
        last_year = today.year - 1 if today.month < 12 else today.year
        pages = [
            ("?mirrorstats (today + 30-day and 12-month sparklines)", "/?mirrorstats"),
            (f"?mirrorstats&period={today.year} (a year)", f"/?mirrorstats&period={today.year}"),
            ("?mirrorstats=history (this month: top files of its hash)", "/?mirrorstats=history"),
            (f"?mirrorstats=history&period={last_year} (a year: top files of {args.files} fields)",
             f"/?mirrorstats=history&period={last_year}"),
            (f"?mirrorstats=history&period={today:%Y-%m-%d} (a day)", f"/?mirrorstats=history&period={today:%Y-%m-%d}"),
        ]
        for label, path in pages:
            best, median, size = await timed(agent, base + path, args.repeat)
            print(f"{label}: best {best * 1000:.0f} ms, median {median * 1000:.0f} ms ({size} bytes)")
        await port.stopListening()
        await client.stop()
    finally:
        server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--mirrors", type=int, default=60)
    parser.add_argument("--daily-files", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=10)
    task.react(lambda _reactor: defer.Deferred.fromCoroutine(main(parser.parse_args())))
