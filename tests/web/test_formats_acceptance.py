"""Download formats with a real client: ``aria2c`` against a real ``mirrorbits daemon`` on a real
redis-server, the mirrors being real HTTP servers on loopback (127.0.0.2-4).  With torrents on, the index and the
piece hashes come from the daemon's own local scan (``mirrorbits refresh``)."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mirrorbits import gocompat
from mirrorbits.redis import schema
from tests.fixtures.filemirror import FileMirror
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port
from tests.test_daemon import ROOT, Daemon

PATH = "/pub/file.bin"
CONTENT = random.Random(13).randbytes(8 * 1024 * 1024 + 12345)
MTIME_NS = 1_750_000_000 * 1_000_000_000
PIECE = 256 * 1024


@dataclass
class World:
    server: RedisServer
    tmp: Path
    conf: Path
    port: int
    rpc_port: int
    mirrors: list[FileMirror]
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Daemon:
        d = Daemon([sys.executable, "-m", "mirrorbits", "daemon", "-config", str(self.conf),
                    "-monitor=false", "-p", str(self.tmp / "mirrorbits.pid")], self.port, self.tmp)
        self.daemons.append(d)
        d.wait_http()
        wait(lambda: status(self.port, "/") != 0, d.output)
        return d

    def refresh(self) -> None:
        """The local scan, as an operator runs it."""
        p = subprocess.run([sys.executable, "-m", "mirrorbits", "-h", "127.0.0.1", "-p", str(self.rpc_port),
                            "refresh"], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert p.returncode == 0, p.stdout + p.stderr

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def aria2(self, url: str, *args: str) -> tuple[int, Path, str]:
        out = self.tmp / f"dl-{time.monotonic_ns()}"
        out.mkdir()
        p = subprocess.run(["aria2c", "--no-conf", "--console-log-level=notice", "--summary-interval=0",
                            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
                            "--enable-peer-exchange=false", "--disable-ipv6=true", "--max-tries=5",
                            "--retry-wait=0", "--connect-timeout=5", "--timeout=10",
                            "-d", str(out), *args, *([url] if url else [])],
                           capture_output=True, text=True, timeout=120)
        return p.returncode, out, p.stdout + p.stderr


def wait(predicate: Callable[[], bool], output: Callable[[], str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, output()
        time.sleep(0.1)


def status(port: int, path: str) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("HEAD", path)
            return conn.getresponse().status
        finally:
            conn.close()
    except OSError:
        return 0


def write_file_record(r: object, sha256: str) -> None:
    """``FILE_`` as the Go local scan writes it."""
    r.hset(schema.file_key(PATH), mapping={  # type: ignore[attr-defined]
        "size": str(len(CONTENT)), "modTime": gocompat.format_gts(MTIME_NS, "local"),
        "sha1": hashlib.sha1(CONTENT).hexdigest(), "sha256": sha256,
        "md5": hashlib.md5(CONTENT).hexdigest()})


def make_world(tmp: Path, *, torrent: bool, corrupt_first: int = 0) -> World:
    server = RedisServer().start()
    # Each mirror on its own loopback address (aria2 opens one connection per host).  The first
    # ``corrupt_first`` bytes of every answer of mirror 1 are flipped: one bad piece in whatever
    # range it serves.
    # Each answer waits 0.3 s, so that aria2 opens its three connections before one mirror has
    # sent the whole file.
    mirrors = [FileMirror({PATH: CONTENT}, corrupt_head=corrupt_first if i == 0 else 0, host=f"127.0.0.{i + 2}",
                          delay=0.3) for i in range(3)]
    repo = tmp / "repo"
    (repo / "pub").mkdir(parents=True)
    local = repo / "pub" / "file.bin"
    local.write_bytes(CONTENT)
    os.utime(local, ns=(MTIME_NS, MTIME_NS))
    r = server.client()
    r.set("MIRRORBITS_DB_VERSION", "2")
    if not torrent:  # the Go node's index; with torrents the daemon's scan writes it
        write_file_record(r, hashlib.sha256(CONTENT).hexdigest())
        r.sadd(schema.FILES, PATH)
    now = int(time.time())
    for mid, m in enumerate(mirrors, 1):
        r.hset(schema.mirror_key(mid), mapping={
            "ID": str(mid), "name": f"m{mid}", "http": m.url, "enabled": "1", "httpUp": "1",
            "httpsUp": "0", "score": "0", "countryCodes": "", "stateSince": str(now - 3600),
            "lastSuccessfulSync": str(now - 60)})
        r.hset(schema.MIRRORS, str(mid), f"m{mid}")
        r.sadd(schema.file_mirrors_key(PATH), str(mid))
        r.hset(schema.file_info_key(mid, PATH), mapping={
            "size": str(len(CONTENT)), "modTime": gocompat.format_gts(MTIME_NS, "local")})
    port, rpc_port = free_port(), free_port()
    conf = tmp / "mirrorbits.conf"
    text = (f"Repository: {repo}\nRedisAddress: {server.address}\nDataDir: {tmp / 'data'}\n"
            f"ListenAddress: 127.0.0.1:{port}\nRPCListenAddress: 127.0.0.1:{rpc_port}\n"
            f"GeoipDatabasePath: {tmp / 'nogeoip'}\nOutputMode: redirect\n"
            f"Hashes:\n    SHA1: true\n    SHA256: true\n    MD5: true\n")
    if torrent:
        text += f"Torrent:\n    Enabled: true\n    PieceLength: {PIECE}\n"
        # Once the local file changes, the mirrors are outdated until their next scan: the
        # fallback then stands in for them.
        text += f"Fallbacks:\n    - URL: {mirrors[1].url}\n"
    conf.write_text(text)
    return World(server, tmp, conf, port, rpc_port, mirrors)


@pytest.fixture
def worlds() -> Iterator[list[World]]:
    made: list[World] = []
    yield made
    for w in made:
        for d in w.daemons:
            if d.proc.poll() is None:
                d.stop()
        for m in w.mirrors:
            m.close()
        w.server.cleanup()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


GOOD = hashlib.sha256(CONTENT).hexdigest()


def test_aria2_plain_url_verifies_digest(tmp_path: Path, worlds: list[World]) -> None:
    w = make_world(tmp_path, torrent=False)
    worlds.append(w)
    w.start()
    wait(lambda: status(w.port, PATH) == 302, w.daemons[0].output)
    code, out, log = w.aria2(w.base + PATH)
    assert code == 0, log
    assert sha256_of(out / "file.bin") == GOOD
    # The Digest header is what aria2 checks: a wrong one in the index fails the download.
    r = w.server.client()
    write_file_record(r, "00" * 32)
    r.publish(schema.CHANNEL_FILE_UPDATE, PATH)
    time.sleep(0.5)
    code, out, log = w.aria2(w.base + PATH)
    assert code != 0, log
    assert "checksum" in log.lower(), log


@pytest.mark.parametrize("suffix", [".meta4", ".metalink"])
def test_aria2_metalink_from_three_mirrors(tmp_path: Path, worlds: list[World], suffix: str) -> None:
    w = make_world(tmp_path, torrent=False)
    worlds.append(w)
    w.start()
    wait(lambda: status(w.port, PATH) == 302, w.daemons[0].output)
    code, out, log = w.aria2(w.base + PATH + suffix, "--split=3", "--min-split-size=1M")
    assert code == 0, log
    assert sha256_of(out / "file.bin") == GOOD
    assert all(m.requests for m in w.mirrors), [m.requests for m in w.mirrors]


def test_torrents_from_the_local_scan(tmp_path: Path, worlds: list[World]) -> None:
    w = make_world(tmp_path, torrent=True, corrupt_first=1000)
    worlds.append(w)
    d = w.start()
    assert w.get(PATH + ".torrent") == (404, b"Not Found\n")  # not hashed yet
    w.refresh()
    wait(lambda: status(w.port, PATH + ".torrent") == 200, d.output)

    # The .meta4 as served: its <metaurl> makes aria2 fetch the .torrent and download as
    # BitTorrent with the document's mirrors and the torrent's url-list as web seeds, every piece
    # checked against the torrent's SHA-1.  Mirror 1 corrupts the first bytes of each answer:
    # aria2 rejects that piece, asks again (up to --max-tries times per mirror) and gets it from
    # another mirror.  --split=3 opens a connection to each mirror; --seed-time=0 stops aria2 once
    # the file is complete (with a torrent, aria2 otherwise seeds until --seed-ratio, 1.0 by
    # default, which no peer ever lets it reach here).
    code_, meta4 = w.get(PATH + ".meta4")
    assert code_ == 200 and b"<pieces length=\"262144\" type=\"sha-256\">" in meta4
    assert b'<metaurl mediatype="torrent">' + w.base.encode() + PATH.encode() + b".torrent</metaurl>" in meta4
    doc = tmp_path / "file.bin.meta4"
    doc.write_bytes(meta4)
    # The Metalink 3 document has SHA-1 piece hashes and no torrent: aria2 downloads it over HTTP
    # alone, checking the same pieces.
    for source in (w.base + PATH + ".meta4", "-M", w.base + PATH + ".metalink"):
        # aria2 nearly always opens its three connections at once (each mirror waits 0.3 s before
        # answering); should it not reach the corrupting mirror, the download, right anyway, is
        # done again.
        for attempt in range(4):
            served = len(w.mirrors[0].requests)
            alog = tmp_path / f"aria2-{len(source)}-{source[-4:]}-{attempt}.log"
            args = ["-M", str(doc)] if source == "-M" else []
            code, out, log = w.aria2("" if args else source, *args, "--split=3", "--min-split-size=1M",
                                     "--seed-time=0", f"--log={alog}", "--log-level=info")
            assert code == 0, log
            assert sha256_of(out / "file.bin") == GOOD
            if len(w.mirrors[0].requests) > served:
                break
        assert len(w.mirrors[0].requests) > served, source  # the corrupting mirror served a piece
        text = alog.read_text(errors="replace")
        assert "Chunk checksum validation failed" in text, source  # ... which aria2 rejected
        # Through the torrent of the <metaurl> for the .meta4, over HTTP alone for the .metalink.
        assert ("Dependency resolved" in text) == (not source.endswith(".metalink")), source

    # The .torrent, with DHT and trackers off: the web seeds alone, every piece verified.
    status_code, body = w.get(PATH + ".torrent")
    assert status_code == 200 and body.startswith(b"d")
    tfile = tmp_path / "file.bin.torrent"
    tfile.write_bytes(body)
    code, out, log = w.aria2(str(tfile), "--seed-time=0", "--bt-tracker-connect-timeout=1",
                             "--follow-torrent=true")
    assert code == 0, log
    assert sha256_of(out / "file.bin") == GOOD

    # The info-hash: the same for every client and after a restart, and after a Go node rewrote
    # the unchanged file's record; another one once the file changed and was rescanned.
    btih = w.get(PATH + ".btih")[1]
    assert len(btih) == 41 and btih.endswith(b"\n")
    assert w.get(PATH + ".btih", {"X-Forwarded-For": "192.0.2.7"})[1] == btih
    magnet = w.get(PATH + "?magnet")[1].decode()
    assert magnet.startswith("magnet:?xt=urn:btih:" + btih.decode().strip() + "&dn=file.bin&xl=")
    assert magnet.count("&ws=") == 3
    d.stop()
    d = w.start()
    wait(lambda: w.get(PATH + ".btih")[0] == 200, d.output)  # once the schema check let it serve
    assert w.get(PATH + ".btih")[1] == btih
    r = w.server.client()
    write_file_record(r, GOOD)  # what a Go node's rescan writes for the unchanged file
    r.publish(schema.CHANNEL_FILE_UPDATE, PATH)
    time.sleep(0.5)
    assert w.get(PATH + ".btih")[1] == btih
    w.refresh()
    assert w.get(PATH + ".btih")[1] == btih
    changed = CONTENT[:-1] + bytes([CONTENT[-1] ^ 1])
    local = tmp_path / "repo" / "pub" / "file.bin"
    local.write_bytes(changed)
    os.utime(local, ns=(MTIME_NS + 10**9, MTIME_NS + 10**9))
    w.refresh()
    wait(lambda: w.get(PATH + ".btih")[0] == 200 and w.get(PATH + ".btih")[1] != btih, d.output)


#: (name, country, latitude, longitude) of the mirrors of the order test; two of them in London.
SITES = [("gb1", "GB", 51.5, -0.1), ("fr", "FR", 48.85, 2.35), ("de", "DE", 52.5, 13.4),
         ("us", "US", 40.7, -74.0), ("jp", "JP", 35.7, 139.7), ("se", "SE", 59.3, 18.0),
         ("gb2", "GB", 51.51, -0.12)]
#: Clients the MaxMind test City database locates: London, Linköping, near Seattle, Jilin.
LONDON, SWEDEN, SEATTLE, JILIN = "81.2.69.142", "89.160.20.113", "216.160.83.57", "175.16.199.1"


def order_world(tmp: Path) -> World:
    """A Go node's index of one file carried by mirrors over the globe, and GeoIP databases."""
    server = RedisServer().start()
    r = server.client()
    r.set("MIRRORBITS_DB_VERSION", "2")
    write_file_record(r, GOOD)
    r.sadd(schema.FILES, PATH)
    now = int(time.time())
    for mid, (name, cc, lat, lon) in enumerate(SITES, 1):
        r.hset(schema.mirror_key(mid), mapping={
            "ID": str(mid), "name": name, "http": f"http://{name}.mirror/", "enabled": "1", "httpUp": "1",
            "httpsUp": "0", "countryCodes": cc, "latitude": str(lat), "longitude": str(lon),
            "stateSince": str(now - 3600), "lastSuccessfulSync": str(now - 60)})
        r.hset(schema.MIRRORS, str(mid), name)
        r.sadd(schema.file_mirrors_key(PATH), str(mid))
        r.hset(schema.file_info_key(mid, PATH), mapping={
            "size": str(len(CONTENT)), "modTime": gocompat.format_gts(MTIME_NS, "local")})
    geoip = tmp / "geoip"
    geoip.mkdir()
    data = Path(__file__).resolve().parents[1] / "data" / "geoip"
    for db in ("GeoLite2-City", "GeoLite2-ASN"):
        (geoip / f"{db}.mmdb").write_bytes((data / f"{db}-Test.mmdb").read_bytes())
    (tmp / "repo" / "pub").mkdir(parents=True)
    (tmp / "repo" / "pub" / "file.bin").write_bytes(b"")
    port, rpc_port = free_port(), free_port()
    conf = tmp / "mirrorbits.conf"
    conf.write_text(f"Repository: {tmp / 'repo'}\nRedisAddress: {server.address}\nDataDir: {tmp / 'data'}\n"
                    f"ListenAddress: 127.0.0.1:{port}\nRPCListenAddress: 127.0.0.1:{rpc_port}\n"
                    f"GeoipDatabasePath: {geoip}\nOutputMode: redirect\n")
    return World(server, tmp, conf, port, rpc_port, [])


def redirect_list(w: World, client: str) -> list[str]:
    """The redirect's mirrors for ``client``: ``Location``, then the ``rel=duplicate`` links."""
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
    try:
        conn.request("GET", PATH, headers={"X-Forwarded-For": client})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 302, resp.status
        links = [v.split(">")[0].lstrip("<") for k, v in resp.getheaders() if k.lower() == "link"]
        return [resp.getheader("Location") or "", *links]
    finally:
        conn.close()


def document_lists(w: World, client: str) -> tuple[list[str], list[str]]:
    """The mirror URLs of the ``.meta4`` (by priority) and the ``.metalink`` (by preference) for
    ``client``."""
    ns4, ns3 = "{urn:ietf:params:xml:ns:metalink}", "{http://www.metalinker.org/}"
    status4, meta4 = w.get(PATH + ".meta4", {"X-Forwarded-For": client})
    status3, meta3 = w.get(PATH + ".metalink", {"X-Forwarded-For": client})
    assert (status4, status3) == (200, 200)
    urls4 = sorted(ET.fromstring(meta4).iter(f"{ns4}url"), key=lambda u: int(u.get("priority", "0")))
    urls3 = sorted(ET.fromstring(meta3).iter(f"{ns3}url"), key=lambda u: -int(u.get("preference", "0")))
    return [u.text or "" for u in urls4], [u.text or "" for u in urls3]


def test_documents_list_mirrors_in_the_redirects_order(tmp_path: Path, worlds: list[World]) -> None:
    """Against a real daemon with GeoIP: each client's documents start with what its redirect
    chooses, in the same order (priority 1 = the redirect's mirror)."""
    w = order_world(tmp_path)
    worlds.append(w)
    w.start()
    wait(lambda: status(w.port, PATH) == 302, w.daemons[0].output)
    every = {f"http://{name}.mirror{PATH}" for name, *_ in SITES}
    # Only one mirror gets a weight for these clients: the redirect's list is the sorted list,
    # the same at every request, and the documents list exactly it.
    for client in (SWEDEN, SEATTLE, JILIN):
        redirect = redirect_list(w, client)
        assert set(redirect) == every, (client, redirect)
        assert redirect_list(w, client) == redirect
        meta4, metalink = document_lists(w, client)
        assert meta4 == redirect, (client, meta4, redirect)
        assert metalink == redirect, client
    assert redirect_list(w, SWEDEN)[0] == f"http://se.mirror{PATH}"
    assert redirect_list(w, SEATTLE)[0] == f"http://us.mirror{PATH}"
    # In London five mirrors share the weight: each redirect is a weighted draw of all five.
    # Every document draws the same way, then lists the other two in the mirror list's order.
    pool = set(redirect_list(w, LONDON))
    assert len(pool) == 5 and {f"http://gb1.mirror{PATH}", f"http://gb2.mirror{PATH}"} <= pool
    n = 300
    firsts: dict[str, dict[str, int]] = {"redirect": dict.fromkeys(pool, 0), "meta4": dict.fromkeys(pool, 0)}
    tails = set()
    for _ in range(n):
        redirect = redirect_list(w, LONDON)
        assert set(redirect) == pool
        firsts["redirect"][redirect[0]] += 1
        meta4, _ = document_lists(w, LONDON)
        assert set(meta4[:5]) == pool and set(meta4) == every, meta4
        firsts["meta4"][meta4[0]] += 1
        tails.add(tuple(meta4[5:]))
    assert tails == {(f"http://us.mirror{PATH}", f"http://jp.mirror{PATH}")}, tails
    assert sum(1 for k in firsts["meta4"].values() if k) >= 3, firsts  # a draw, not a fixed order
    for url in pool:  # the same draw: the same frequencies, within 4.4 standard deviations
        assert abs(firsts["redirect"][url] - firsts["meta4"][url]) / n < 0.18, firsts
