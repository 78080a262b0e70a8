"""Fill a Redis with a realistic Mirrorbits world, exactly as Go nodes write it, for benchmarks.

5,000 files (``FILE_*``, ``FILES``), 60 mirrors around the globe with coordinates, countries and
ASNs (``MIRROR_*``, ``MIRRORS``), 25 of them partial; ``FILEMIRRORS_*`` and ``FILEINFO_*`` for every
file a mirror carries; and the repository tree of empty files on disk.  Also writes the client IP
list for ``load.lua``: IPs that the GeoLite2 *test* databases map to a country.

    python bench/world.py --redis 127.0.0.1:6379 --repo /tmp/world/repo --ips /tmp/world/ips.txt
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mirrorbits.gocompat import format_gts  # noqa: E402
from mirrorbits.model import Mirror  # noqa: E402
from mirrorbits.redis import schema  # noqa: E402

GEOIP_DIR = str(Path(__file__).resolve().parents[1] / "tests" / "data" / "geoip")

#: (city, country, continent, latitude, longitude): where the mirrors are.
SITES = [
    ("Paris", "FR", "EU", 48.8567, 2.3508), ("Berlin", "DE", "EU", 52.5167, 13.3833),
    ("London", "GB", "EU", 51.5072, -0.1275), ("Madrid", "ES", "EU", 40.4168, -3.7038),
    ("Rome", "IT", "EU", 41.9028, 12.4964), ("Amsterdam", "NL", "EU", 52.3676, 4.9041),
    ("Stockholm", "SE", "EU", 59.3293, 18.0686), ("Oslo", "NO", "EU", 59.9139, 10.7522),
    ("Helsinki", "FI", "EU", 60.1699, 24.9384), ("Warsaw", "PL", "EU", 52.2297, 21.0122),
    ("Prague", "CZ", "EU", 50.0755, 14.4378), ("Vienna", "AT", "EU", 48.2082, 16.3738),
    ("Zurich", "CH", "EU", 47.3769, 8.5417), ("Brussels", "BE", "EU", 50.8503, 4.3517),
    ("Dublin", "IE", "EU", 53.3498, -6.2603), ("Kyiv", "UA", "EU", 50.4501, 30.5234),
    ("Moscow", "RU", "EU", 55.7558, 37.6173), ("Bucharest", "RO", "EU", 44.4268, 26.1025),
    ("Budapest", "HU", "EU", 47.4979, 19.0402), ("Sofia", "BG", "EU", 42.6977, 23.3219),
    ("New York", "US", "NA", 40.7127, -74.0059), ("San Francisco", "US", "NA", 37.7749, -122.4194),
    ("Chicago", "US", "NA", 41.8781, -87.6298), ("Dallas", "US", "NA", 32.7767, -96.797),
    ("Toronto", "CA", "NA", 43.6532, -79.3832), ("Mexico City", "MX", "NA", 19.4326, -99.1332),
    ("Sao Paulo", "BR", "SA", -23.5505, -46.6333), ("Buenos Aires", "AR", "SA", -34.6037, -58.3816),
    ("Santiago", "CL", "SA", -33.4489, -70.6693), ("Bogota", "CO", "SA", 4.711, -74.0721),
    ("Tokyo", "JP", "AS", 35.6762, 139.6503), ("Osaka", "JP", "AS", 34.6937, 135.5023),
    ("Seoul", "KR", "AS", 37.5665, 126.978), ("Beijing", "CN", "AS", 39.9042, 116.4074),
    ("Hong Kong", "HK", "AS", 22.3193, 114.1694), ("Taipei", "TW", "AS", 25.033, 121.5654),
    ("Singapore", "SG", "AS", 1.3521, 103.8198), ("Mumbai", "IN", "AS", 19.076, 72.8777),
    ("Manila", "PH", "AS", 14.5995, 120.9842), ("Tel Aviv", "IL", "AS", 32.0853, 34.7818),
    ("Dubai", "AE", "AS", 25.2048, 55.2708), ("Riyadh", "SA", "AS", 24.7136, 46.6753),
    ("Istanbul", "TR", "AS", 41.0082, 28.9784), ("Tehran", "IR", "AS", 35.6892, 51.389),
    ("Sydney", "AU", "OC", -33.8688, 151.2093), ("Melbourne", "AU", "OC", -37.8136, 144.9631),
    ("Auckland", "NZ", "OC", -36.8485, 174.7633), ("Johannesburg", "ZA", "AF", -26.2041, 28.0473),
    ("Cairo", "EG", "AF", 30.0444, 31.2357), ("Nairobi", "KE", "AF", -1.2921, 36.8219),
    ("Lagos", "NG", "AF", 6.5244, 3.3792), ("Lyon", "FR", "EU", 45.764, 4.8357),
    ("Munich", "DE", "EU", 48.1351, 11.582), ("Manchester", "GB", "EU", 53.4808, -2.2426),
    ("Copenhagen", "DK", "EU", 55.6761, 12.5683), ("Athens", "GR", "EU", 37.9838, 23.7275),
    ("Lisbon", "PT", "EU", 38.7223, -9.1393), ("Seattle", "US", "NA", 47.6062, -122.3321),
    ("Vancouver", "CA", "NA", 49.2827, -123.1207), ("Jakarta", "ID", "AS", -6.2088, 106.8456),
]
ASNS = [15169, 1221, 7018, 3320, 3215, 2856, 1299, 6939, 174, 3356, 13335, 16509, 20940, 4766]

N_FILES = 5000
N_MIRRORS = 60
N_PARTIAL = 25
MODTIME_NS = 1_748_757_600_123_456_789  # 2025-06-01 06:00:00.123456789 UTC


def file_paths(n: int = N_FILES) -> list[str]:
    """Deterministic repository paths: a few release trees, ISO images and packages."""
    rng = random.Random(1)
    out = []
    for i in range(n):
        tree = ("releases", "pool", "updates", "isos")[i % 4]
        sub = f"{rng.randrange(40):02d}"
        ext = (".iso", ".tar.xz", ".deb", ".rpm", ".zip")[i % 5]
        out.append(f"/{tree}/{sub}/package-{i:05d}{ext}")
    return out


def build_mirrors(n: int = N_MIRRORS) -> list[Mirror]:
    rng = random.Random(2)
    mirrors = []
    for i in range(n):
        city, cc, cont, lat, lon = SITES[i % len(SITES)]
        extra = rng.choice(["", "", "", " " + rng.choice([s[1] for s in SITES])])
        scheme = ("http://", "https://", "")[i % 3]
        mirrors.append(Mirror(
            id=i + 1, name=f"mirror-{i + 1:02d}-{city.lower().replace(' ', '-')}",
            http_url=f"{scheme}mirror{i + 1}.example.net/pub/", rsync_url=f"rsync://mirror{i + 1}.example.net/pub/",
            sponsor_name=f"Sponsor {i + 1}", score=rng.choice([0, 0, 0, 10, -10, 50]),
            latitude=lat, longitude=lon, continent_code=cont, country_codes=cc + extra,
            asnum=rng.choice(ASNS), enabled=True, http_up=True, https_up=True,
            state_since=1_748_700_000, last_sync=1_748_750_000, last_successful_sync=1_748_750_000,
            last_mod_time=1_748_750_000,
        ))
    return mirrors


def client_ips(n: int = 5000, geoip_dir: str = GEOIP_DIR) -> list[str]:
    """IPs inside the networks the City *test* database maps to a country, spread over countries."""
    with open(os.path.join(geoip_dir, "GeoLite2-City-Test.json")) as f:
        data = json.load(f)
    by_country: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
    for entry in data:
        for net, rec in entry.items():
            cc = (rec.get("country") or {}).get("iso_code")
            if cc:
                by_country.setdefault(cc, []).append(ipaddress.ip_network(net))
    rng = random.Random(3)
    countries = sorted(by_country)
    ips: set[str] = set()
    while len(ips) < n:
        for cc in countries:
            net = rng.choice(by_country[cc])
            host = net.network_address + rng.randrange(net.num_addresses)
            ips.add(str(host))
            if len(ips) >= n:
                break
    return sorted(ips)


def fill(redis_address: str, repo: str, ips_path: str | None, seed: int = 4) -> dict[str, int]:
    import redis as redis_py

    host, port = redis_address.rsplit(":", 1)
    r = redis_py.Redis(host=host, port=int(port), decode_responses=True)
    r.flushdb()
    r.set(schema.DB_VERSION_KEY, str(schema.DB_VERSION))
    rng = random.Random(seed)
    paths = file_paths()
    mirrors = build_mirrors()
    mod = format_gts(MODTIME_NS, "UTC")
    sizes = {p: 1000 + rng.randrange(50_000_000) for p in paths}
    pipe = r.pipeline(transaction=False)
    for p in paths:
        pipe.hset(schema.file_key(p), mapping={"size": str(sizes[p]), "modTime": mod, "sha1": "",
                                                "sha256": f"{abs(hash(p)):064x}"[:64], "md5": ""})
        pipe.sadd(schema.FILES, p)
    for m in mirrors:
        pipe.hset(schema.mirror_key(m.id), mapping=dict(m.to_redis()))
        pipe.hset(schema.MIRRORS, str(m.id), m.name)
    pipe.execute()
    partial = set(rng.sample([m.id for m in mirrors], N_PARTIAL))
    n_fileinfo = 0
    for m in mirrors:
        share = rng.uniform(0.2, 0.9) if m.id in partial else 1.0
        carried = [p for p in paths if rng.random() < share]
        pipe = r.pipeline(transaction=False)
        for p in carried:
            pipe.sadd(schema.file_mirrors_key(p), str(m.id))
            pipe.hset(schema.file_info_key(m.id, p), mapping={"size": str(sizes[p]), "modTime": mod})
            pipe.sadd(schema.mirror_files_key(m.id), p)
        pipe.execute()
        n_fileinfo += len(carried)
    for p in paths:
        full = repo + p
        os.makedirs(os.path.dirname(full), exist_ok=True)
        open(full, "wb").close()
    if ips_path:
        with open(ips_path, "w") as f:
            f.write("\n".join(client_ips()) + "\n")
    return {"files": len(paths), "mirrors": len(mirrors), "partial": len(partial), "fileinfo": n_fileinfo}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis", required=True, help="host:port (loopback)")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--ips", help="where to write the client IP list")
    args = ap.parse_args()
    print(json.dumps(fill(args.redis, args.repo, args.ips)))


if __name__ == "__main__":
    main()
