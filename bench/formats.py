"""CPU per answer of the download formats against a plain redirect, on a real daemon.

Starts a private ``redis-server``, a repository with one 64 MiB file (``--size``) indexed by the
daemon's own local scan with torrents on (so the ``.meta4`` carries 256 piece hashes and the
``.torrent`` exists), ``--mirrors`` mirror records that all carry the file (spread over Europe),
MaxMind's GeoIP test databases, and ``mirrorbits daemon``.  Then, for each kind of request, it
sends ``--requests`` GETs over one keep-alive connection, as a client located in London
(``X-Forwarded-For``, so the redirect takes its cached fast path, as for real clients), and reads
the daemon's CPU time (user + system, from /proc) before and after: the figure is the daemon's CPU
per answer, and its ratio to the plain redirect's.  ``--no-geoip`` measures an unlocated client.

    python bench/formats.py
    python bench/formats.py --requests 5000 --mirrors 50
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mirrorbits import gocompat  # noqa: E402
from mirrorbits.redis import schema  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402
from tests.fixtures.servers import free_port, wait_for_port  # noqa: E402

PATH = "/pub/file.iso"
KINDS = [
    ("redirect", PATH, {}),
    ("redirect + Want-Digest", PATH, {"Want-Digest": "SHA-512;q=1, SHA-256;q=1, SHA;q=0.1"}),
    (".meta4", PATH + ".meta4", {}),
    (".metalink", PATH + ".metalink", {}),
    (".torrent", PATH + ".torrent", {}),
    (".magnet", PATH + ".magnet", {}),
    (".btih", PATH + ".btih", {}),
]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: A client the test City database places in London.
CLIENT = "81.2.69.142"
GEOIP = os.path.join(ROOT, "tests", "data", "geoip")


def run_kind(port: int, path: str, headers: dict[str, str], n: int, pid: int) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status = 0
    for _ in range(min(200, n)):  # warm-up: caches filled, code paths hot
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
    before = cpu_seconds(pid)
    for _ in range(n):
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    after = cpu_seconds(pid)
    conn.close()
    return (after - before) / n, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--mirrors", type=int, default=20)
    ap.add_argument("--size", type=int, default=64 * 1024 * 1024)
    ap.add_argument("--no-geoip", action="store_true", help="no GeoIP database: unlocated clients")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mirrorbits-bench-formats-")
    server = RedisServer().start()
    proc = None
    try:
        repo = os.path.join(tmp, "repo")
        os.makedirs(os.path.join(repo, "pub"))
        local = os.path.join(repo, "pub", "file.iso")
        with open(local, "wb") as f:
            f.write(os.urandom(args.size))
        mtime = os.stat(local).st_mtime_ns
        r = server.client()
        r.set("MIRRORBITS_DB_VERSION", "2")
        now = int(time.time())
        spread = random.Random(5)
        for mid in range(1, args.mirrors + 1):
            r.hset(schema.mirror_key(mid), mapping={
                "ID": str(mid), "name": f"m{mid}", "http": f"http://m{mid}.example/pub/", "enabled": "1",
                "httpUp": "1", "httpsUp": "0", "countryCodes": "FR" if mid % 2 else "DE",
                "continentCode": "EU", "latitude": f"{spread.uniform(40, 58):.4f}",
                "longitude": f"{spread.uniform(-5, 20):.4f}",
                "stateSince": str(now - 3600), "lastSuccessfulSync": str(now - 60)})
            r.hset(schema.MIRRORS, str(mid), f"m{mid}")
            r.sadd(schema.file_mirrors_key(PATH), str(mid))
            r.hset(schema.file_info_key(mid, PATH), mapping={
                "size": str(args.size), "modTime": gocompat.format_gts(mtime, "local")})
        geoip = os.path.join(tmp, "geoip")
        os.makedirs(geoip)
        if not args.no_geoip:
            for name in ("GeoLite2-City", "GeoLite2-ASN"):
                shutil.copy(os.path.join(GEOIP, f"{name}-Test.mmdb"), os.path.join(geoip, f"{name}.mmdb"))
        port, rpc = free_port(), free_port()
        conf = os.path.join(tmp, "mirrorbits.conf")
        with open(conf, "w") as f:
            f.write(f"Repository: {repo}\nRedisAddress: {server.address}\nDataDir: {tmp}/data\n"
                    f"ListenAddress: 127.0.0.1:{port}\nRPCListenAddress: 127.0.0.1:{rpc}\n"
                    f"GeoipDatabasePath: {geoip}\nOutputMode: redirect\n"
                    f"Torrent:\n    Enabled: true\n")
        env = dict(os.environ, PYTHONPATH=ROOT)
        log = open(os.path.join(tmp, "daemon.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "mirrorbits", "daemon", "-config", conf,
                                 "-monitor=false", "-p", os.path.join(tmp, "pid")],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for_port("127.0.0.1", port, timeout=30)
        subprocess.run([sys.executable, "-m", "mirrorbits", "-h", "127.0.0.1", "-p", str(rpc), "refresh"],
                       check=True, env=env, capture_output=True, timeout=300)
        deadline = time.monotonic() + 30
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", PATH + ".btih")
            if conn.getresponse().status == 200:
                break
            assert time.monotonic() < deadline, "the daemon never served the torrent"
            time.sleep(0.2)
        print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs; {args.mirrors} mirrors, "
              f"{args.size >> 20} MiB file, {args.requests} requests per kind, "
              f"{'unlocated client' if args.no_geoip else 'client located by GeoIP'}", flush=True)
        urls = {}
        for name, path, _ in KINDS:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path, headers={"X-Forwarded-For": CLIENT})
            body = conn.getresponse().read()
            urls[name] = max(body.count(b"<url"), body.count(b"http://m"), body.count(b"&ws="))
        print("mirror URLs per answer:", urls)
        base = None
        print(f"{'answer':<26}{'status':>7}{'CPU per answer':>17}{'x redirect':>12}")
        for name, path, headers in KINDS:
            per, status = run_kind(port, path, {**headers, "X-Forwarded-For": CLIENT}, args.requests, proc.pid)
            base = base or per
            print(f"{name:<26}{status:>7}{per * 1e6:>14.0f} us{per / base:>11.2f}x", flush=True)
        print(f"load average after: {os.getloadavg()}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
