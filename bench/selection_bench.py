"""Micro-benchmark of mirrorbits.selection.select_mirrors with 60 candidates.

Usage: python bench/selection_bench.py [--n 20000]

Prints the mean time per call in microseconds for the common request shapes: redirect with a
located client, redirect without GeoIP, and the ?mirrorlist page.  The world is generated from a
fixed seed, so figures are comparable between runs on one machine.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from mirrorbits.model import Mirror  # noqa: E402
from mirrorbits.selection import Candidate, ClientLocation, MirrorFile, Secure, select_mirrors  # noqa: E402

COUNTRIES = [
    ("FR", "EU", 48.86, 2.35), ("DE", "EU", 52.52, 13.40), ("GB", "EU", 51.51, -0.13),
    ("US", "NA", 40.71, -74.01), ("US", "NA", 37.77, -122.42), ("BR", "SA", -23.55, -46.63),
    ("JP", "AS", 35.68, 139.69), ("AU", "OC", -33.86, 151.20), ("ZA", "AF", -26.20, 28.05),
    ("IN", "AS", 19.08, 72.88), ("SE", "EU", 59.33, 18.07), ("CA", "NA", 43.65, -79.38),
]


def build_world(rng: random.Random, n: int = 60) -> list[tuple[Candidate, MirrorFile]]:
    """60 mirrors over the globe; a few disabled, down or restricted, as in a real deployment."""
    out = []
    for i in range(1, n + 1):
        cc, cont, lat, lon = rng.choice(COUNTRIES)
        extra = rng.choice(["", "", " " + rng.choice(COUNTRIES)[0]])
        scheme = rng.choice(["https://", "http://", ""])
        cand = Candidate(Mirror(
            id=i,
            name=f"mirror{i}",
            http_url=f"{scheme}mirror{i}.example.org/pub/",
            enabled=rng.random() > 0.05,
            http_up=rng.random() > 0.05,
            https_up=rng.random() > 0.1,
            score=rng.choice([0, 0, 0, 10, -10, 50]),
            latitude=lat + rng.uniform(-3, 3),
            longitude=lon + rng.uniform(-3, 3),
            continent_code=cont,
            country_codes=cc + extra,
            asnum=rng.randint(1, 200),
            country_only=rng.random() < 0.05,
            last_successful_sync_precision=1_000_000_000,
        ))
        out.append((cand, MirrorFile(1234, 1_700_000_000 * 10**9)))
    return out


def bench(label: str, n: int, fn) -> None:
    """Mean and best-of-5 time per call; the best is the figure least disturbed by other load."""
    fn()  # warm up
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(max(1, n // 5)):
            fn()
        runs.append((time.perf_counter() - t0) / max(1, n // 5))
    mean = sum(runs) / len(runs)
    print(f"{label:<40} {mean * 1e6:8.1f} µs/call mean {min(runs) * 1e6:8.1f} µs best")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="calls per scenario")
    args = ap.parse_args()
    rng = random.Random(12345)
    world = build_world(rng)
    mtime = 1_700_000_000 * 10**9
    clients = [
        ClientLocation(country=cc, continent=cont, asnum=rng.randint(1, 200), latitude=lat + 1, longitude=lon - 1)
        for cc, cont, lat, lon in COUNTRIES
    ]
    nogeo = ClientLocation()
    sel_rng = random.Random(1)
    idx = iter(range(10**12))

    def located() -> None:
        client = clients[next(idx) % len(clients)]
        select_mirrors("/pub/file.iso", 1234, mtime, world, client, secure=Secure.UNDEFINED, rng=sel_rng)

    def located_tls() -> None:
        client = clients[next(idx) % len(clients)]
        select_mirrors("/pub/file.iso", 1234, mtime, world, client, secure=Secure.WITH_TLS, rng=sel_rng)

    def no_geo() -> None:
        select_mirrors("/pub/file.iso", 1234, mtime, world, nogeo, rng=sel_rng)

    def mirrorlist() -> None:
        client = clients[next(idx) % len(clients)]
        select_mirrors("/pub/file.iso", 1234, mtime, world, client, for_mirrorlist=True, rng=sel_rng)

    print(f"select_mirrors, {len(world)} candidates, {args.n} calls each")
    bench("redirect, located client", args.n, located)
    bench("redirect, located client, https only", args.n, located_tls)
    bench("redirect, no GeoIP", args.n, no_geo)
    bench("mirrorlist, located client", max(1, args.n // 4), mirrorlist)


if __name__ == "__main__":
    main()
