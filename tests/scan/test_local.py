"""The local repository index against a real redis-server and a real file tree: walk order, hashing
rules, the FILES/FILE_ records Go writes, locking and the commit."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from mirrorbits import gocompat
from mirrorbits.config import Config, ConfigHolder, Hashes
from mirrorbits.redis.connection import RedisClient
from mirrorbits.scan import local
from mirrorbits.scan.local import LocalScanner, ScanInProgress, WalkedFile, format_local_gts, walk_chunks
from mirrorbits.scan.source_service import SourceScanService
from tests.fixtures.redis import RedisServer
from tests.fixtures.trial import RedisClassTestCase

CHANNEL = "_mirrorbits_file_update"


def run(coro: Any) -> defer.Deferred[Any]:
    return defer.Deferred.fromCoroutine(coro)


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


def write(path: str | bytes, data: bytes = b"0123456789") -> None:
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def tz(zone: str) -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


class Collector:
    """Messages of the file-update channel and keyspace events, on a redis-py thread."""

    def __init__(self, server: RedisServer, patterns: tuple[str, ...] = ()) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.pubsub = server.client(decode=False).pubsub()
        self.pubsub.subscribe(CHANNEL)
        if patterns:
            self.pubsub.psubscribe(*patterns)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            m = self.pubsub.get_message(timeout=0.05)
            if m and m["type"] in ("message", "pmessage"):
                self.messages.append((m["channel"], m["data"]))

    def channel(self, name: bytes) -> list[bytes]:
        return [data for ch, data in self.messages if ch == name]

    def close(self) -> None:
        self.stopped = True
        self.thread.join()
        self.pubsub.close()


class LogCapture:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)

    def texts(self, level: Any = None) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if level is None or e.get("log_level") == level]

    def close(self) -> None:
        globalLogPublisher.removeObserver(self.events.append)


class ScanTestBase(RedisClassTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.redis = self.server.client(decode=False)
        self.tmp = tempfile.mkdtemp(prefix="mirrorbits-local-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.repo = os.path.join(self.tmp, "repo")
        os.makedirs(self.repo)
        self.config = Config(Repository=self.repo)
        self.client = self.new_client()
        self.logs = LogCapture()
        self.addCleanup(self.logs.close)

    def scanner(self, client: RedisClient | None = None, **kw: Any) -> LocalScanner:
        return LocalScanner(client or self.client, lambda: self.config, **kw)

    def collector(self, *patterns: str) -> Collector:
        c = Collector(self.server, patterns)
        self.addCleanup(c.close)
        time.sleep(0.1)  # let the subscription settle
        return c

    def files(self) -> set[bytes]:
        return set(self.redis.smembers("FILES"))


class IndexTests(ScanTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.old_tz = os.environ.get("TZ")
        os.environ["TZ"] = "Europe/Paris"  # a zone with a name and DST: the bytes must match Go's
        time.tzset()
        self.addCleanup(self._restore_tz)

    def _restore_tz(self) -> None:
        if self.old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = self.old_tz
        time.tzset()

    @defer.inlineCallbacks
    def test_keys_field_by_field(self) -> Any:
        """FILES, FILE_<path> with exactly the five fields and their encodings, and one
        file update."""
        path = os.path.join(self.repo, "a", "b.iso")
        write(path)
        os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
        updates = self.collector()
        result = yield run(self.scanner().scan())
        self.assertEqual(self.files(), {b"/a/b.iso"})
        record = self.redis.hgetall("FILE_/a/b.iso")
        self.assertEqual(set(record), {b"size", b"modTime", b"sha1", b"sha256", b"md5"})
        self.assertEqual(record[b"size"], b"10")
        self.assertEqual(record[b"modTime"], b"2023-11-14 23:13:20.123456789 +0100 CET")
        self.assertEqual(record[b"modTime"].decode(),
                         gocompat.format_gts(os.lstat(path).st_mtime_ns, "local"))
        self.assertEqual(record[b"sha1"], b"")
        self.assertEqual(record[b"sha256"], hashlib.sha256(b"0123456789").hexdigest().encode())
        self.assertEqual(record[b"md5"], b"")
        self.assertEqual(result.indexed, 1)
        yield sleep(0.2)
        self.assertEqual(updates.channel(CHANNEL.encode()), [b"/a/b.iso"])
        self.assertIn("[source] Indexed 1 files, 0 removed", self.logs.texts())
        self.assertFalse(self.redis.exists("FILES_TMP"))
        self.assertFalse(self.redis.exists("SOURCE_REPO_SYNC"))

    @defer.inlineCallbacks
    def test_all_hashes_and_summer_time(self) -> Any:
        self.config = self.config.replace(Hashes=Hashes(SHA1=True, SHA256=True, MD5=True))
        path = os.path.join(self.repo, "x")
        data = os.urandom(3 * local.READ_SIZE + 17)  # several reads feed every algorithm
        write(path, data)
        os.utime(path, ns=(1_690_000_000_000_000_000, 1_690_000_000_000_000_000))
        yield run(self.scanner().scan())
        record = self.redis.hgetall("FILE_/x")
        self.assertEqual(record[b"modTime"], b"2023-07-22 06:26:40 +0200 CEST")
        self.assertEqual(record[b"size"], str(len(data)).encode())
        self.assertEqual(record[b"sha1"], hashlib.sha1(data).hexdigest().encode())
        self.assertEqual(record[b"sha256"], hashlib.sha256(data).hexdigest().encode())
        self.assertEqual(record[b"md5"], hashlib.md5(data).hexdigest().encode())

    @defer.inlineCallbacks
    def test_go_record_of_unchanged_file_is_not_rewritten(self) -> Any:
        """A rescan, with the deliberate deviation: Go rewrites and republishes every record; an
        identical record is left alone here (no write, no publish), and the file is not reopened."""
        path = os.path.join(self.repo, "a", "b.iso")
        write(path)
        go_record = {"size": "10", "modTime": gocompat.format_gts(os.lstat(path).st_mtime_ns, "local"),
                     "sha1": "", "sha256": hashlib.sha256(b"0123456789").hexdigest(), "md5": ""}
        self.redis.hset("FILE_/a/b.iso", mapping=go_record)
        self.redis.sadd("FILES", "/a/b.iso")
        self.redis.config_set("notify-keyspace-events", "KA")
        self.addCleanup(self.redis.config_set, "notify-keyspace-events", "")
        events = self.collector("__keyspace@0__:FILE_*")
        os.chmod(path, 0)  # (as root this does not stop a read; the hash count below does)
        result = yield run(self.scanner().scan())
        yield sleep(0.2)
        self.assertEqual(result.hashed, 0)
        self.assertEqual(result.written, 0)
        self.assertEqual(events.messages, [])
        self.assertEqual(self.redis.hgetall("FILE_/a/b.iso"),
                         {k.encode(): v.encode() for k, v in go_record.items()})
        self.assertEqual(self.files(), {b"/a/b.iso"})

    @defer.inlineCallbacks
    def test_rehash_rules(self) -> Any:
        """Enabling SHA1 rehashes; a forced refresh rehashes; a changed size or
        mtime rehashes; a disabled hash's stored value is kept while the file is unchanged."""
        write(os.path.join(self.repo, "a"))
        write(os.path.join(self.repo, "b"))
        scanner = self.scanner()
        r = yield run(scanner.scan())
        self.assertEqual(r.hashed, 2)
        r = yield run(scanner.scan())
        self.assertEqual((r.hashed, r.written), (0, 0))
        self.config = self.config.replace(Hashes=Hashes(SHA1=True, SHA256=True, MD5=False))
        r = yield run(scanner.scan())
        self.assertEqual((r.hashed, r.written), (2, 2))
        self.assertEqual(self.redis.hget("FILE_/a", "sha1"), hashlib.sha1(b"0123456789").hexdigest().encode())
        # SHA1 off again: not rehashed, the stored sha1 stays
        self.config = self.config.replace(Hashes=Hashes())
        r = yield run(scanner.scan())
        self.assertEqual(r.hashed, 0)
        self.assertNotEqual(self.redis.hget("FILE_/a", "sha1"), b"")
        # forced: rehashed, and the disabled sha1 is cleared
        r = yield run(scanner.scan(rehash=True))
        self.assertEqual(r.hashed, 2)
        self.assertEqual(self.redis.hget("FILE_/a", "sha1"), b"")
        # an mtime change alone rehashes that file only
        st = os.stat(os.path.join(self.repo, "b"))
        os.utime(os.path.join(self.repo, "b"), ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        r = yield run(scanner.scan())
        self.assertEqual((r.hashed, r.written), (1, 1))
        # an unparseable stored modTime counts as different
        self.redis.hset("FILE_/a", "modTime", "garbage")
        r = yield run(scanner.scan())
        self.assertEqual(r.hashed, 1)
        self.assertNotEqual(self.redis.hget("FILE_/a", "modTime"), b"garbage")

    @defer.inlineCallbacks
    def test_removed_files(self) -> Any:
        """A removed file leaves the index."""
        write(os.path.join(self.repo, "a", "b.iso"))
        self.redis.sadd("FILES", "/a/b.iso", "/old")
        self.redis.hset("FILE_/old", mapping={"size": "1", "modTime": "x"})
        updates = self.collector()
        r = yield run(self.scanner().scan())
        yield sleep(0.2)
        self.assertEqual(r.removed, 1)
        self.assertFalse(self.redis.exists("FILE_/old"))
        self.assertEqual(self.files(), {b"/a/b.iso"})
        self.assertEqual(sorted(updates.channel(CHANNEL.encode())), [b"/a/b.iso", b"/old"])
        self.assertIn("[source] Indexed 1 files, 1 removed", self.logs.texts())

    @defer.inlineCallbacks
    def test_zero_files_empties_files(self) -> Any:
        """Go quirk fixed: with 0 files FILES is emptied too (Go leaves it stale)."""
        self.redis.sadd("FILES", "/gone")
        self.redis.hset("FILE_/gone", "size", "1")
        r = yield run(self.scanner().scan())
        self.assertEqual((r.indexed, r.removed), (0, 1))
        self.assertFalse(self.redis.exists("FILES"))
        self.assertFalse(self.redis.exists("FILE_/gone"))

    @defer.inlineCallbacks
    def test_symlinks_fifo_and_odd_names(self) -> Any:
        """FIFOs (Go blocks on them), names with spaces, newlines and non-UTF-8 bytes."""
        write(os.path.join(self.repo, "a", "b.iso"))
        os.symlink("a/b.iso", os.path.join(self.repo, "latest"))
        os.symlink("a", os.path.join(self.repo, "dirlink"))
        os.symlink("/nonexistent", os.path.join(self.repo, "dangling"))
        os.mkfifo(os.path.join(self.repo, "fifo"))
        raw = os.fsencode(self.repo)
        odd = [b"/with space.txt", b"/new\nline", b"/latin1-\xe9t\xe9", b"/d\xff/x y"]
        for name in odd:
            write(raw + name, b"odd")
        r = yield run(self.scanner().scan())
        self.assertEqual(self.files(), {b"/a/b.iso", *odd})
        self.assertEqual(r.skipped, 1)  # the FIFO
        for name in odd:
            record = self.redis.hgetall(b"FILE_" + name)
            self.assertEqual(record[b"sha256"], hashlib.sha256(b"odd").hexdigest().encode())
        # and a rescan sees them as unchanged (the names round-trip byte for byte)
        r = yield run(self.scanner().scan())
        self.assertEqual((r.hashed, r.written, r.removed), (0, 0, 0))

    @defer.inlineCallbacks
    def test_repository_symlink_is_followed(self) -> Any:
        """Deviation from Go (0 files, which would wipe the index): a symlinked root is followed."""
        write(os.path.join(self.repo, "f"))
        link = os.path.join(self.tmp, "link")
        os.symlink(self.repo, link)
        self.config = self.config.replace(Repository=link)
        yield run(self.scanner().scan())
        self.assertEqual(self.files(), {b"/f"})

    @defer.inlineCallbacks
    def test_file_deleted_mid_scan(self) -> Any:
        """Deleted after the walk, just before its hashing: dropped from the index, its record
        removed."""
        write(os.path.join(self.repo, "keep"))
        write(os.path.join(self.repo, "vanish"), b"v1")
        scanner = self.scanner()
        yield run(scanner.scan())
        write(os.path.join(self.repo, "vanish"), b"version 2")  # changed: will be rehashed
        about_to_hash: list[list[bytes]] = []

        def delete(paths: list[bytes]) -> None:
            about_to_hash.append(paths)
            os.unlink(os.path.join(self.repo, "vanish"))

        scanner.before_hash = delete
        r = yield run(scanner.scan())
        self.assertEqual(about_to_hash, [[b"/vanish"]])
        self.assertEqual((r.vanished, r.removed), (1, 1))
        self.assertEqual(self.files(), {b"/keep"})
        self.assertFalse(self.redis.exists("FILE_/vanish"))

    @defer.inlineCallbacks
    def test_missing_repository(self) -> Any:
        self.config = self.config.replace(Repository=os.path.join(self.tmp, "nope"))
        self.redis.sadd("FILES", "/x")
        with self.assertRaises(local.RepositoryMissing) as cm:
            yield run(self.scanner().scan())
        self.assertEqual(str(cm.exception), os.path.join(self.tmp, "nope") + ": No such file or directory")
        self.assertEqual(self.files(), {b"/x"})  # nothing touched

    def test_walk_order_is_go_lexical(self) -> None:
        """Per directory, by name bytes, depth first: "a/z" comes before "a.txt" (Go Walk)."""
        for p in ("a.txt", "a/z", "B", "a/b/c", "a-", "\u00e9", "z"):
            write(os.path.join(self.repo, p))
        found: list[WalkedFile] = []
        walk_chunks(self.repo, 3, found.extend)
        paths = [f[0] for f in found]
        self.assertEqual(paths, [b"/B", b"/a/b/c", b"/a/z", b"/a-", b"/a.txt", b"/z", "/\u00e9".encode()])

    def test_unreadable_file_and_directory(self) -> None:
        """An unreadable file is indexed with empty hashes and logged; an unreadable directory is
        skipped.  Run in a child process as 'nobody' when we are root (root reads everything)."""
        write(os.path.join(self.repo, "ok"))
        write(os.path.join(self.repo, "secret"))
        write(os.path.join(self.repo, "closed", "inside"))
        os.chmod(os.path.join(self.repo, "secret"), 0)
        os.chmod(os.path.join(self.repo, "closed"), 0)
        for d in (self.tmp, self.repo):
            os.chmod(d, 0o755)
        code = f"""
import json, sys
sys.path.insert(0, {os.getcwd()!r})
from twisted.internet import defer, task
from twisted.internet import reactor  # installed before the privileges drop, like every import here
from twisted.logger import globalLogPublisher, formatEvent
from mirrorbits.config import Config
from mirrorbits.redis.connection import RedisClient, RedisSettings
from mirrorbits.scan.local import LocalScanner
import os
if os.geteuid() == 0:  # drop root only now: /root (where Python lives) is closed to nobody
    os.setgid(65534)
    os.setuid(65534)
lines = []
globalLogPublisher.addObserver(lambda e: lines.append(formatEvent(e)))
async def main(reactor):
    c = RedisClient(lambda: RedisSettings(address={self.server.address!r})); c.start(); c.set_ready()
    cfg = Config(Repository={self.repo!r})
    r = await LocalScanner(c, lambda: cfg).scan()
    print(json.dumps({{"failed": r.failed, "indexed": r.indexed, "logs": lines}}))
    await c.stop()
task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                             timeout=30, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        report = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertEqual(report["failed"], 1)
        self.assertEqual(self.files(), {b"/ok", b"/secret"})
        self.assertEqual(self.redis.hget("FILE_/secret", "sha256"), b"")
        self.assertEqual(self.redis.hget("FILE_/secret", "size"), b"10")
        self.assertIn(f"/secret: hashing failed: open {self.repo}/secret: permission denied", report["logs"])


class CommitTests(ScanTestBase):
    """Bounded transactions, the SOURCE_REPO_SYNC lock, and two scanners on one Redis."""

    def monitor(self) -> tuple[list[dict[str, Any]], Callable[[], None]]:
        """MONITOR on a redis-py thread; ``finish()`` returns once every command sent before it has
        been seen (the thread may lag behind Redis: it stops at an ECHO of a marker, not at
        whatever command it happens to read when asked to stop)."""
        seen: list[dict[str, Any]] = []
        ready = threading.Event()
        marker = f"end-of-monitor-{os.getpid()}-{time.monotonic_ns()}"

        def loop() -> None:
            with self.server.client().monitor() as m:
                ready.set()
                for cmd in m.listen():
                    if marker in cmd["command"]:
                        break
                    seen.append(cmd)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        ready.wait(5)
        time.sleep(0.1)

        def finish() -> None:
            self.server.client().echo(marker)
            t.join(10)
            self.assertFalse(t.is_alive(), "MONITOR never saw the end marker")

        return seen, finish

    @defer.inlineCallbacks
    def test_bounded_commits(self) -> Any:
        for i in range(230):
            write(os.path.join(self.repo, f"d{i % 3}", f"f{i:03d}"), b"%d" % i)
        self.redis.sadd("FILES", *[f"/old{i}" for i in range(70)])
        seen, finish = self.monitor()
        r = yield run(self.scanner(commit_batch=50, read_batch=40).scan())
        finish()
        self.assertEqual((r.indexed, r.removed), (230, 70))
        writes = [c["command"] for c in seen if c["command"].startswith(("EVAL", "SADD", "MULTI", "EXEC", "DEL"))]
        self.assertTrue(writes)
        in_multi = 0
        biggest_multi = 0
        for c in writes:
            if c.startswith("MULTI"):
                in_multi = 0
            elif c.startswith("EXEC"):
                biggest_multi = max(biggest_multi, in_multi)
            elif c.startswith("DEL FILE_"):
                in_multi += 1
        self.assertGreater(biggest_multi, 0)
        self.assertLessEqual(biggest_multi, 50)
        write_scripts = [c for c in writes if c.startswith("EVAL") and "HMSET" in c]
        self.assertEqual(len(write_scripts), 5)  # 230 records in batches of 50
        sadds = [c for c in writes if c.startswith("SADD FILES_TMP")]
        self.assertEqual(len(sadds), 5)
        self.assertEqual(self.redis.scard("FILES"), 230)

    @defer.inlineCallbacks
    def test_lock_held_elsewhere(self) -> Any:
        write(os.path.join(self.repo, "f"))
        self.redis.set("SOURCE_REPO_SYNC", "1", ex=10)
        t0 = time.monotonic()
        with self.assertRaises(ScanInProgress) as cm:
            yield run(self.scanner(lock_attempts=3, lock_retry_delay=0.1).scan())
        self.assertEqual(str(cm.exception), "scan already in progress")
        self.assertGreaterEqual(time.monotonic() - t0, 0.2)
        self.assertEqual(self.redis.get("SOURCE_REPO_SYNC"), b"1")  # not released: not ours
        self.assertFalse(self.redis.exists("FILES"))
        self.assertEqual((local.LOCK_ATTEMPTS, local.LOCK_RETRY_DELAY), (10, 1.0))

    @defer.inlineCallbacks
    def test_two_scanners_commit_one_after_the_other(self) -> Any:
        for i in range(300):
            write(os.path.join(self.repo, f"f{i:03d}"), b"%d" % i)
        a_client, b_client = self.client, self.new_client()
        yield run(a_client.execute("PING"))
        yield run(b_client.execute("PING"))
        ports = {a_client._conn.transport.getHost().port: "A",
                 b_client._conn.transport.getHost().port: "B"}
        seen, finish = self.monitor()
        a = self.scanner(a_client, commit_batch=20, lock_retry_delay=0.05)
        b = self.scanner(b_client, commit_batch=20, lock_retry_delay=0.05)
        ra, rb = yield defer.gatherResults([run(a.scan()), run(b.scan())])
        finish()
        self.assertEqual((ra.indexed, rb.indexed), (300, 300))
        who = [(ports.get(int(c["client_port"]) if c.get("client_port") else -1), c["command"])
               for c in seen]
        # Each scanner's commit runs from its SET SOURCE_REPO_SYNC ... NX (success) to its DEL
        # SOURCE_REPO_SYNC; no write of the other one may fall in between.
        writes = ("SADD", "EVAL", "MULTI", "EXEC", "UNLINK", "DEL", "RENAME", "HMSET")
        holder = None
        order = []
        for name, cmd in who:
            if name is None:
                continue
            if cmd.startswith("DEL SOURCE_REPO_SYNC"):
                self.assertEqual(holder, name)
                holder = None
                continue
            if cmd.startswith(writes) and not cmd.startswith("EVAL \nlocal out"):
                if "cjson.encode" in cmd:
                    continue  # the read script (runs before the lock)
                if holder is None:
                    holder = name
                    order.append(name)
                self.assertEqual(holder, name, f"{name} wrote while {holder} held the lock: {cmd[:60]}")
        self.assertEqual(sorted(order), ["A", "B"])
        self.assertEqual(self.redis.scard("FILES"), 300)


class FormatTests(unittest.SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.integers(min_value=-2_000_000_000 * 10**9, max_value=4_000_000_000 * 10**9),
           st.sampled_from(["UTC", "Europe/Paris", "America/St_Johns", "Asia/Kathmandu",
                            "America/Sao_Paulo", "Australia/Lord_Howe"]))
    def test_fast_gts_matches_gocompat(self, ns: int, zone: str) -> None:
        with tz(zone):
            self.assertEqual(format_local_gts(ns), gocompat.format_gts(ns, "local"))

    @settings(max_examples=150, deadline=None)
    @given(st.integers(min_value=-2_500_000_000 * 10**9, max_value=4_000_000_000 * 10**9),
           st.lists(st.integers(min_value=0, max_value=3 * 86_400 * 10**9), min_size=1, max_size=40),
           st.sampled_from(["UTC", "Europe/Paris", "Europe/Amsterdam", "America/St_Johns",
                            "Asia/Kolkata", "Australia/Lord_Howe", "Africa/Monrovia", "Pacific/Apia"]))
    def test_day_cache_matches_gocompat(self, base: int, deltas: list[int], zone: str) -> None:
        """The per-walk formatter computes the wall clock of a cached day by arithmetic: files close
        in time (within three days, so across DST changes, odd historic offsets, a skipped day and
        day edges) give the same bytes as gocompat, each one twice (the second time cached)."""
        with tz(zone):
            fmt = local.gts_formatter()
            for ns in [base + d for d in deltas] * 2:
                self.assertEqual(fmt(ns), gocompat.format_gts(ns, "local"))

    def test_day_cache_across_offset_changes(self) -> None:
        """Every 7 minutes through days with an offset change (DST both ways, Lord Howe's half
        hour, Samoa skipping 2011-12-30): those days are formatted the plain way, their
        neighbours by arithmetic, all byte-identical to gocompat."""
        for zone, day in (("Europe/Paris", "2023-03-26"), ("Europe/Paris", "2023-10-29"),
                          ("Australia/Lord_Howe", "2023-04-02"), ("America/St_Johns", "2023-11-05"),
                          ("Pacific/Apia", "2011-12-30")):
            start = int(time.mktime(time.strptime(day, "%Y-%m-%d"))) - 2 * 86400
            with tz(zone):
                fmt = local.gts_formatter()
                for i in range(0, 5 * 86400, 7 * 60):
                    ns = (start + i) * 10**9 + 5
                    self.assertEqual(fmt(ns), gocompat.format_gts(ns, "local"), (zone, day, i))

    def test_day_cache_in_a_leap_second_zone(self) -> None:
        """A "right/" zone counts leap seconds: its days are never computed by arithmetic."""
        if not os.path.exists("/usr/share/zoneinfo/right/Europe/Paris"):
            print("SKIPPED-CHECK: no right/ zones installed; nothing to compare")
            return
        with tz("right/Europe/Paris"):
            fmt = local.gts_formatter()
            for ns in [1_700_000_000_000_000_000 + i * 3_600_000_000_123 for i in range(200)] * 2:
                self.assertEqual(fmt(ns), format_local_gts(ns))
            self.assertNotEqual(format_local_gts(1_700_000_000 * 10**9)[17:19], "20")  # 27 s shift

    def test_pack(self) -> None:
        self.assertEqual(local.pack([b"ab", b"", b"\xff:"]), b"2:ab0:2:\xff:")


class ServiceTests(ScanTestBase):
    def service(self, clock: Any = None, monitor: bool = True) -> tuple[SourceScanService, ConfigHolder]:
        holder = ConfigHolder(self.config)
        scanner = LocalScanner(self.client, lambda: holder.current)
        svc = SourceScanService(scanner, holder, self.client, clock or reactor, monitor=monitor,
                                startup_retry=0.05)
        return svc, holder

    @defer.inlineCallbacks
    def test_startup_refresh_and_stop(self) -> Any:
        write(os.path.join(self.repo, "f"))
        svc, _ = self.service()
        svc.startService()
        yield svc.when_indexed()
        self.assertEqual(self.files(), {b"/f"})
        r = yield run(svc.refresh(rehash=True))
        self.assertEqual(r.hashed, 1)
        # two refreshes at once run one after the other in this process
        r1, r2 = yield defer.gatherResults([run(svc.refresh()), run(svc.refresh())])
        self.assertEqual((r1.indexed, r2.indexed), (1, 1))
        yield svc.stopService()
        with self.assertRaises(local.ScanAborted):
            yield run(svc.scanner.scan())

    @defer.inlineCallbacks
    def test_missing_repository_retries_until_it_appears(self) -> Any:
        from twisted.logger import LogLevel

        def failures() -> list[str]:
            return [t for t in self.logs.texts(LogLevel.error) if t.startswith("Scanning source failed")]

        clock = task.Clock()
        self.config = self.config.replace(Repository=os.path.join(self.tmp, "later"))
        svc, _ = self.service(clock)
        svc.startService()
        while not failures():
            yield sleep(0.01)
        for _ in range(5):  # five more attempts, one per startup_retry: the failure is logged once
            clock.advance(svc.startup_retry)
            yield sleep(0.02)
        self.assertFalse(svc.indexed)
        self.assertEqual(failures(), [f"Scanning source failed: {self.tmp}/later: No such file or directory"])
        write(os.path.join(self.tmp, "later", "f"))
        yield sleep(0.1)
        self.assertFalse(svc.indexed)  # not before the next attempt
        clock.advance(svc.startup_retry)
        yield svc.when_indexed()
        self.assertEqual(self.files(), {b"/f"})
        yield svc.stopService()

    @defer.inlineCallbacks
    def test_periodic_scan_and_reload(self) -> Any:
        clock = task.Clock()
        write(os.path.join(self.repo, "f"))
        self.config = self.config.replace(RepositoryScanInterval=2)
        svc, holder = self.service(clock)
        svc.startService()
        yield svc.when_indexed()
        write(os.path.join(self.repo, "g"))
        clock.advance(119)
        yield sleep(0.2)
        self.assertEqual(self.files(), {b"/f"})
        clock.advance(1)
        for _ in range(100):
            if self.files() == {b"/f", b"/g"}:
                break
            yield sleep(0.05)
        self.assertEqual(self.files(), {b"/f", b"/g"})
        holder.swap(holder.current.replace(RepositoryScanInterval=0))  # disables the timer
        write(os.path.join(self.repo, "h"))
        clock.advance(600)
        yield sleep(0.3)
        self.assertEqual(self.files(), {b"/f", b"/g"})
        yield svc.stopService()

    @defer.inlineCallbacks
    def test_no_monitor_no_startup_scan(self) -> Any:
        write(os.path.join(self.repo, "f"))
        clock = task.Clock()
        svc, _ = self.service(clock, monitor=False)
        svc.startService()
        for _ in range(3):
            clock.advance(3600)
            yield sleep(0.02)
        self.assertFalse(self.redis.exists("FILES"))
        yield run(svc.refresh())
        self.assertEqual(self.files(), {b"/f"})
        yield svc.stopService()
