"""Index the local repository into Redis: walk, hash, commit.

Go and Python nodes read each other's index, so the keys, fields and encodings are the Go ones:
``FILES`` (set of paths, swapped in with ``RENAME FILES_TMP FILES``), ``FILE_<path>`` (hash with
``size``, ``modTime`` as a Go time string in the daemon's local zone, and lowercase hex ``sha1``,
``sha256``, ``md5`` or empty strings), and one ``_mirrorbits_file_update <path>`` per record written
or removed, published inside the atomic step (Lua script or MULTI) that writes it.

Where it differs from the Go original, on purpose:

* **Bounded commits.** Go writes every file in one unbounded ``MULTI`` (on a 500k-file repository
  Redis stalls for seconds, upstream issue #149).  Here no atomic unit carries more than
  :data:`COMMIT_BATCH` files (200), and reads go by :data:`READ_BATCH` (250).  Measured on the
  2-core test VM (Redis 7, one subscriber on the update channel; SLOWLOG, minimum of 7 runs): a
  write batch costs Redis about 11 us per file (100: 1.1 ms, 200: 2.2 ms, 500: 5.4 ms, 1000: ~11 ms)
  and a read batch about 7 us per file (250: 1.6 ms).  Throughput was the same from 100 to 1000
  files per batch (``bench/local_scan.py --sweep``), so the small size costs nothing and keeps each
  Redis stall ~20x below the 50 ms budget even when the machine is overloaded.
* **Only changed records are written and published.**  Go rewrites and republishes every
  ``FILE_*`` on every scan; here a record whose five stored fields are byte-identical to the new
  ones (e.g. one written by a Go node for an unchanged file) is left alone, so a no-change rescan
  writes nothing but ``FILES`` and every HTTP cache keeps its entries.  The write script checks
  again under the lock, so when two nodes scan at once the second commits no duplicate writes.
* **Removed paths** are found a bounded ``SSCAN FILES`` step at a time (checked against
  ``FILES_TMP`` inside a script) instead of one ``SDIFF``, and deleted *before* the ``RENAME``: if
  the process dies in between, ``FILES`` still lists them and the next scan deletes them again,
  instead of leaving ``FILE_*`` orphans that look like live files.
* **0 files** empties ``FILES`` (Go's ``RENAME`` of a missing ``FILES_TMP`` fails and leaves
  ``FILES`` stale).  Old sets are dropped with ``UNLINK`` where Redis has it (>= 4.0), so freeing a
  large set never blocks Redis.
* **Only regular files** are indexed (Go hashes FIFOs and blocks forever); files are opened with
  ``O_NOFOLLOW|O_NONBLOCK`` and checked with ``fstat`` so a file swapped for a FIFO or a symlink
  between the walk and the read is never followed or waited on; directories are entered with
  ``O_NOFOLLOW`` relative to their parent, so one swapped for a symlink is not entered either.  A
  file that vanished between the walk and the hash is dropped from the index (Go indexes it with
  empty hashes).
* If ``Repository`` itself is a symlink, it is followed (Go indexes 0 files and so wipes the whole
  index); symlinks *inside* the repository are skipped as in Go.
* If the ``SOURCE_REPO_SYNC`` lock is lost during the commit, the commit stops ("lock lost") rather
  than interleave with another node, and the key (maybe another node's by now) is not deleted.

**Where the work runs** (the daemon serves HTTP on the same reactor, so nothing may hold it or the
GIL for long).  The scan is a pipeline: the walk runs in a reactor pool thread and hands over a
chunk of :data:`READ_BATCH` files (path bytes, lstat size and mtime, and the ``modTime`` text they
would get) as soon as it has one; the reactor sends the chunk's read script at once (two in flight,
so Redis works while we compare) and compares each stored record with the new one *as text*, a few
microseconds per file (1-4 ms per 250-file batch on the loaded test VM, 1 ms when unchanged); only
the files that need a hash go to a private pool thread.  So a no-change rescan costs about
max(walk, Redis reads) instead of their sum.  No pure-Python loop runs in a second thread (the
comparison used to run in the hashing thread, where it competes with the reactor for the GIL); the
threads left (walk, hashing) make a system call every few microseconds and so hand the GIL back at
once.  The other cause of stalls was the cyclic GC: with one tracked object per walked file living
through the scan, the old code triggered two full collections per scan (100-170 ms each, every
thread stopped); files now travel as tuples of atomic values, which the GC stops tracking, and the
bench sees no full collection during a scan.  Measurements are in ``bench/README.md``.

Bulk reads stay in a Lua script (one ``cjson`` reply per batch) even with the client's fast reply
parser: for 100,000 files a pipeline of plain ``HMGET`` costs ~0.35 s of Redis CPU against ~0.65 s
for the script, but ~3.7 s of our CPU against ~0.3 s (building 100,000 commands and parsing 500,000
bulk strings in Python), and our process is the bottleneck.

A process pool (forkserver) was measured for hashing too: less CPU in this process but 2-3 s of
start-up per scan and no measurable gain in reactor latency, so threads it is.
"""

from __future__ import annotations

import errno
import hashlib
import json
import operator
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, TypeVar

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mirrorbits import faults, gocompat
from mirrorbits.config import Config
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient
from mirrorbits.redis.locks import ClusterLock
from mirrorbits.redis.packing import LUA_UNPACKER as _UNPACKER
from mirrorbits.redis.packing import pack, unpack
from mirrorbits.redis.protocol import Reply
from mirrorbits.redis.replies import as_int, as_str, as_str_list

log = Logger(namespace="mirrorbits.scan.local")

T = TypeVar("T")

#: Most files written (or removed) by one ``MULTI``; see the module docstring for the measurement.
COMMIT_BATCH = 200
#: Files per walk chunk, per ``HMGET`` read script and per hashing task.
READ_BATCH = 250
#: Read scripts (and write scripts) in flight at once: Redis works on the next batch while the
#: reactor handles the reply of the previous one.  Redis runs a client's pipelined commands back
#: to back, so this multiplies the longest stall (~2-3 ms per batch): keep it small.
IN_FLIGHT = 2
#: Paths per ``SSCAN`` reply.
SSCAN_COUNT = 1000
#: Hashing threads.  On small files one thread is as fast as two (the per-file work holds the GIL)
#: and keeps the reactor's GIL waits shorter; on large files one thread hashes at one core's speed
#: and leaves the other core to the HTTP side and Redis.
HASH_WORKERS = 1
#: Hash tasks (of up to READ_BATCH files) queued per hashing thread: one running, one ready.
HASH_QUEUE = 2
#: Read size for hashing (one read per chunk feeds every enabled algorithm).
READ_SIZE = 1 << 20
#: ``SOURCE_REPO_SYNC`` acquisition: 10 attempts, 1 s apart (Go).
LOCK_ATTEMPTS = 10
LOCK_RETRY_DELAY = 1.0

ALGORITHMS = ("sha1", "sha256", "md5")
#: ``schema.file_key("")``: the scripts build ``FILE_<path>`` from it.
FILE_PREFIX = schema.file_key("")
#: ``schema.file_pieces_key("")``: the same for the piece hashes (``Torrent.Enabled``).
PIECES_PREFIX = schema.file_pieces_key("")
#: Automatic piece lengths: the smallest power of two from 256 KiB that gives at most
#: PIECES_TARGET pieces, 16 MiB at most (what BitTorrent tools pick for a single file).
MIN_AUTO_PIECE = 256 * 1024
MAX_AUTO_PIECE = 16 * 1024 * 1024
PIECES_TARGET = 2048


class LocalScanError(Exception):
    """A local scan that did not commit; ``str()`` is the Go error text where one exists."""


class RepositoryMissing(LocalScanError):
    def __init__(self, repository: str) -> None:
        super().__init__(f"{repository}: No such file or directory")


class ScanAborted(LocalScanError):
    def __init__(self) -> None:
        super().__init__("scan aborted")


class ScanInProgress(LocalScanError):
    def __init__(self) -> None:
        super().__init__("scan already in progress")


class LockLost(LocalScanError):
    def __init__(self) -> None:
        super().__init__(f"{schema.SOURCE_REPO_SYNC} lock lost during the commit")


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _encode(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------------
# modTime text


def _zone_suffix(offset: int, name: str | None) -> str:
    minutes = abs(offset) // 60
    num = f"{'-' if offset < 0 else '+'}{minutes // 60:02d}{minutes % 60:02d}"
    return f" {num} {name or num}"


def format_local_gts(mtime_ns: int, _localtime: Callable[[float], time.struct_time] = time.localtime,
                     _strftime: Callable[[str, time.struct_time], str] = time.strftime) -> str:
    """:func:`mirrorbits.gocompat.format_gts` in the local zone, the fast way (one ``localtime`` and
    one C ``strftime``: this runs once per file, ~2x cheaper than f-string formatting).
    Byte-identical to gocompat's, which it falls back to outside years 1000-9999."""
    secs, nsec = divmod(mtime_ns, 1_000_000_000)
    try:
        tm = _localtime(secs)
    except (OverflowError, OSError, ValueError):
        return gocompat.format_gts(mtime_ns, "local")
    if not 1000 <= tm.tm_year <= 9999:
        return gocompat.format_gts(mtime_ns, "local")
    if nsec:
        return (_strftime("%Y-%m-%d %H:%M:%S", tm) + f".{nsec:09d}".rstrip("0")
                + _zone_suffix(tm.tm_gmtoff or 0, tm.tm_zone))
    return _strftime("%Y-%m-%d %H:%M:%S", tm) + _zone_suffix(tm.tm_gmtoff or 0, tm.tm_zone)


#: "HH:" and "MM:SS" texts, so a time of day is two table lookups.
_HOURS = tuple(f"{h:02d}:" for h in range(24))
_MINUTES_SECONDS = tuple(f"{m:02d}:{s:02d}" for m in range(60) for s in range(60))
#: ``date.toordinal()`` of 1970-01-01.
_EPOCH_ORDINAL = 719163


def gts_formatter() -> Callable[[int], str]:
    """A :func:`format_local_gts` for one walk, with the zone looked up once per UTC day instead of
    once per file: within a day without an offset change, the local wall clock is plain
    arithmetic (UTC + offset), and the date text is cached per local day.  Measured ~2x cheaper
    per file than ``localtime`` + ``strftime`` even when every file has its own day.

    A day is used this way only if ``localtime`` agrees with the arithmetic at both of its ends
    (same offset and zone name, same wall clock): not on a day with a DST or other offset change,
    nor in a leap-second ("right/") zone; those files take the plain way."""
    days: dict[int, tuple[int, str] | None] = {}
    dates: dict[int, str] = {}
    zones: dict[tuple[int, str | None], str] = {}
    plain = format_local_gts
    localtime = time.localtime
    hours, minutes_seconds = _HOURS, _MINUTES_SECONDS

    def wall(secs: int) -> tuple[int, int, int, int, int, int]:
        day, tod = divmod(secs, 86400)
        d = date.fromordinal(day + _EPOCH_ORDINAL)
        h, rest = divmod(tod, 3600)
        return (d.year, d.month, d.day, h, *divmod(rest, 60))

    def utc_day(day: int) -> tuple[int, str] | None:
        start = day * 86400
        try:
            a, b = localtime(start), localtime(start + 86399)
            off = a.tm_gmtoff or 0
            if (off != (b.tm_gmtoff or 0) or a.tm_zone != b.tm_zone
                    or a[:6] != wall(start + off) or b[:6] != wall(start + 86399 + off)
                    or not 1000 <= a.tm_year <= 9999 or not 1000 <= b.tm_year <= 9999):
                return None
        except (OverflowError, OSError, ValueError):
            return None
        key = (off, a.tm_zone)
        suffix = zones.get(key)
        if suffix is None:
            suffix = zones[key] = _zone_suffix(*key)
        return off, suffix

    def fmt(mtime_ns: int) -> str:
        secs, nsec = divmod(mtime_ns, 1_000_000_000)
        day = secs // 86400
        try:
            e = days[day]
        except KeyError:
            if len(days) >= 65536:
                days.clear()
                dates.clear()
            e = days[day] = utc_day(day)
        if e is None:
            return plain(mtime_ns)
        off, suffix = e
        local_day, tod = divmod(secs + off, 86400)
        text = dates.get(local_day)
        if text is None:
            d = date.fromordinal(local_day + _EPOCH_ORDINAL)
            text = dates[local_day] = f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
        h, rest = divmod(tod, 3600)
        if nsec:
            return text + hours[h] + minutes_seconds[rest] + f".{nsec:09d}".rstrip("0") + suffix
        return text + hours[h] + minutes_seconds[rest] + suffix

    return fmt


# ---------------------------------------------------------------------------------------------------
# Walk (blocking: runs in a thread)

#: A regular file found by the walk: (repository-relative path as bytes, starting with ``/``; lstat
#: size; lstat mtime in ns; that mtime as the ``modTime`` text).  A plain tuple: one small object
#: per file matters at 100,000 files.
WalkedFile = tuple[bytes, int, int, str]


_FIRST = operator.itemgetter(0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _sorted_entries(fd: int) -> list[tuple[bytes, os.DirEntry[str]]]:
    """(name bytes, entry) of a directory, sorted by name bytes as Go's filepath.Walk does.

    scandir on a directory fd: each entry's lstat is an fstatat() relative to it (no path lookup
    from the root for every file), but the names come as str: ``fsencode`` gives the bytes back.
    scandir() works on a duplicate of ``fd``, which stays ours to close (after the entries' lstat).
    """
    enc = os.fsencode
    with os.scandir(fd) as it:
        entries = [(enc(e.name), e) for e in it]
    entries.sort(key=_FIRST)
    return entries


def walk_chunks(repository: str, chunk_size: int, emit: Callable[[list[WalkedFile]], object],
                stop: threading.Event | None = None) -> list[tuple[str, str]]:
    """Walk ``repository`` depth first in Go's lexical order and hand its regular files to ``emit``
    in chunks of ``chunk_size`` as they are found; returns the skipped entries (path, why).

    Directories and symlinks are not indexed (a symlinked directory is not entered); FIFOs,
    sockets and devices are skipped; unreadable directories and entries that vanish mid-walk are
    skipped.  Raises :class:`RepositoryMissing` and :class:`ScanAborted` (when ``stop`` is set).
    """
    root = _encode(repository)
    try:
        st = os.stat(root)  # follows a symlinked root, see the module docstring
        if not stat.S_ISDIR(st.st_mode):
            raise LocalScanError(f"{repository}: not a directory")
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RepositoryMissing(repository) from None
    except OSError as e:
        raise LocalScanError(f"{repository}: {e.strerror}") from None
    skipped: list[tuple[str, str]] = []
    chunk: list[WalkedFile] = []
    fmt = gts_formatter()
    is_reg, is_dir, is_lnk = stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK
    # (entries iterator, directory fd, path prefix) per open directory
    stack: list[tuple[Iterator[tuple[bytes, os.DirEntry[str]]], int, bytes]] = []
    try:
        try:
            stack.append((iter(_sorted_entries(root_fd)), root_fd, b"/"))
        except OSError as e:
            os.close(root_fd)
            raise LocalScanError(f"{repository}: {e.strerror}") from None
        while stack:
            it, fd, prefix = stack[-1]
            for name, entry in it:
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished between readdir and lstat (Go skips it too)
                mode = est.st_mode
                if is_reg(mode):
                    mtime = est.st_mtime_ns
                    chunk.append((prefix + name, est.st_size, mtime, fmt(mtime)))
                    if len(chunk) >= chunk_size:
                        emit(chunk)
                        chunk = []
                        if stop is not None and stop.is_set():
                            raise ScanAborted()
                elif is_dir(mode):
                    if stop is not None and stop.is_set():
                        raise ScanAborted()
                    path = prefix + name
                    try:
                        sub_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except OSError as e:
                        # Go skips unreadable directories silently; a debug line helps the admin.
                        skipped.append((_decode(path), f"unreadable directory: {e.strerror}"))
                        continue
                    try:
                        sub = _sorted_entries(sub_fd)
                    except OSError as e:
                        os.close(sub_fd)
                        skipped.append((_decode(path), f"unreadable directory: {e.strerror}"))
                        continue
                    stack.append((iter(sub), sub_fd, path + b"/"))
                    break
                elif is_lnk(mode):
                    continue
                else:
                    skipped.append((_decode(prefix + name), "not a regular file"))
            else:
                stack.pop()
                os.close(fd)
    finally:
        for _, fd, _ in stack:
            os.close(fd)
    if chunk:
        emit(chunk)
    return skipped


# ---------------------------------------------------------------------------------------------------
# Hashing (blocking: runs in the worker pool)


def piece_length_for(size: int, configured: int) -> int:
    """Bytes per piece for a file of ``size`` bytes: ``Torrent.PieceLength`` when set, else
    automatic (see :data:`PIECES_TARGET`)."""
    if configured > 0:
        return configured
    length = MIN_AUTO_PIECE
    while length < MAX_AUTO_PIECE and size > length * PIECES_TARGET:
        length *= 2
    return length


def piece_setting(config: Config) -> int | None:
    """None when torrents are off (no piece hashes), else ``Torrent.PieceLength`` (0 = automatic)."""
    return config.Torrent.PieceLength if config.Torrent.Enabled else None


def enabled_algorithms(config: Config) -> tuple[str, ...]:
    """The algorithms switched on in ``Hashes``, in the field order sha1, sha256, md5."""
    h = config.Hashes
    return tuple(a for a, on in zip(ALGORITHMS, (h.SHA1, h.SHA256, h.MD5), strict=True) if on)


class _Hasher(Protocol):
    """What :func:`hash_file` needs of a ``hashlib`` object."""

    def update(self, data: memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


def _md5() -> _Hasher:
    return hashlib.md5(usedforsecurity=False)


def _sha1() -> _Hasher:
    return hashlib.sha1(usedforsecurity=False)


_CONSTRUCTORS: dict[str, Callable[[], _Hasher]] = {"sha1": _sha1, "sha256": hashlib.sha256, "md5": _md5}


class HashFailed(OSError):
    pass


class _PieceHasher:
    """SHA-1 and SHA-256 of each ``length``-byte piece of a stream fed in chunks."""

    __slots__ = ("length", "left", "sha1", "sha256", "h1", "h256")

    def __init__(self, length: int) -> None:
        self.length = length
        self.left = length
        self.sha1: list[str] = []
        self.sha256: list[str] = []
        self.h1 = _sha1()
        self.h256: _Hasher = hashlib.sha256()

    def update(self, chunk: memoryview) -> None:
        while len(chunk) >= self.left:
            part, chunk = chunk[:self.left], chunk[self.left:]
            self.h1.update(part)
            self.h256.update(part)
            self._close()
        if len(chunk):
            self.h1.update(chunk)
            self.h256.update(chunk)
            self.left -= len(chunk)

    def _close(self) -> None:
        self.sha1.append(self.h1.hexdigest())
        self.sha256.append(self.h256.hexdigest())
        self.h1 = _sha1()
        self.h256 = hashlib.sha256()
        self.left = self.length

    def finish(self) -> tuple[str, str]:
        """(SHA-1 hex digests, SHA-256 hex digests), each concatenated in piece order."""
        if self.left != self.length:  # the last, shorter piece
            self._close()
        return "".join(self.sha1), "".join(self.sha256)


#: Keys of :func:`hash_file`'s result that hold piece hashes rather than a file digest.
PIECES_SHA1 = "pieces-sha1"
PIECES_SHA256 = "pieces-sha256"


def hash_file(fspath: bytes, algorithms: Sequence[str], buf: bytearray | None = None,
              piece_length: int = 0) -> tuple[dict[str, str], int, int]:
    """Hash one file in a single pass for every algorithm, and its pieces when ``piece_length``.

    Returns (hex digests by name, size, mtime_ns) where size and mtime come from ``fstat`` of the
    opened file, so they describe the content that was hashed; with ``piece_length`` the digests
    also hold :data:`PIECES_SHA1` and :data:`PIECES_SHA256` (each piece's hex digest, concatenated),
    computed from the same reads.  Never follows a symlink or blocks on a FIFO: anything that is
    not a regular file raises :class:`HashFailed`.
    """
    fd = os.open(fspath, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    pieces = _PieceHasher(piece_length) if piece_length > 0 else None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HashFailed(errno.EINVAL, "not a regular file")
        hashers: list[_Hasher | _PieceHasher] = [_CONSTRUCTORS[a]() for a in algorithms]
        if pieces is not None:
            hashers.append(pieces)
        if hashers:
            if buf is None:
                buf = bytearray(READ_SIZE)
            bufs = [buf]
            view = memoryview(buf)
            while True:
                n = os.readv(fd, bufs)
                if not n:
                    break
                chunk = view[:n]
                for h in hashers:
                    h.update(chunk)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    digests = {a: h.hexdigest() for a, h in zip(algorithms, hashers, strict=False)
               if not isinstance(h, _PieceHasher)}
    if pieces is not None:
        digests[PIECES_SHA1], digests[PIECES_SHA256] = pieces.finish()
    return digests, st.st_size, st.st_mtime_ns


def _go_error(op: str, path: str, e: OSError) -> str:
    """An OSError as Go prints a *PathError: ``open /srv/repo/x: permission denied``."""
    text = e.strerror or str(e)
    return f"{op} {path}: {text[:1].lower()}{text[1:]}"


# Bulk Redis I/O goes through small Lua scripts that take ONE length-prefixed string per batch
# ("<len>:<bytes>" per value, so any byte of a path round-trips) and give one reply per batch:
# txredisapi spends tens of microseconds of reactor time per bulk reply and per encoded argument,
# which for 100k files (5 replies each to read, 12 arguments each to write) is tens of seconds of a
# busy reactor.  A script is atomic like a MULTI, and bounded the same way (COMMIT_BATCH /
# READ_BATCH files).  The FILE_ key names are built inside the scripts from the prefix and the
# packed paths rather than passed as KEYS (Redis Cluster is not supported by Mirrorbits anyway).


#: ``HMGET <ARGV[1]><path> size modTime sha1 sha256 md5`` for every path packed in ARGV[2], as one
#: JSON array (cjson is C, much cheaper than building a string in Lua; the values are ASCII text,
#: and any other byte passes through cjson unchanged).  With ARGV[3] (the piece hashes' key
#: prefix, when torrents are on) each row goes on with ``HMGET <ARGV[3]><path> size modTime
#: length``.
READ_SCRIPT = _UNPACKER + """
local out, nextv = {}, unpacker(ARGV[2])
local p = nextv()
while p do
  local row = redis.call('HMGET', ARGV[1] .. p, 'size', 'modTime', 'sha1', 'sha256', 'md5')
  if ARGV[3] then
    local pc = redis.call('HMGET', ARGV[3] .. p, 'size', 'modTime', 'length')
    row[6], row[7], row[8] = pc[1], pc[2], pc[3]
  end
  out[#out + 1] = row
  p = nextv()
end
return cjson.encode(out)
"""

#: For every (path, size, modTime, sha1, sha256, md5) packed in ARGV[3] whose stored record is not
#: already exactly that: ``HMSET <ARGV[1]><path> size .. modTime .. sha1 .. sha256 .. md5 ..``,
#: ``SADD KEYS[1] <path>`` (``FILES``) then ``PUBLISH <ARGV[2]> <path>``; returns how many were
#: written.  The ``SADD`` (a no-op for a path already listed; the final ``RENAME`` of ``FILES_TMP``
#: lists it anyway) keeps every ``FILE_*`` record in ``FILES`` at every instant: a process killed
#: after writing a new file's record and before the ``RENAME`` must not leave a record that no
#: scan would ever remove (scans remove what ``FILES`` lists and the repository no longer has).  The check is repeated here, under
#: the lock, because the records were compared before it: when two nodes scan at once, the second
#: to commit finds the first one's identical records and neither rewrites nor republishes them
#: (each publish empties a file's entry in every node's cache).
WRITE_SCRIPT = _UNPACKER + """
local nextv, count = unpacker(ARGV[3]), 0
local path = nextv()
while path do
  local size, mt, s1, s256, m5 = nextv(), nextv(), nextv(), nextv(), nextv()
  local key = ARGV[1] .. path
  local cur = redis.call('HMGET', key, 'size', 'modTime', 'sha1', 'sha256', 'md5')
  if cur[1] ~= size or cur[2] ~= mt or cur[3] ~= s1 or cur[4] ~= s256 or cur[5] ~= m5 then
    redis.call('HMSET', key, 'size', size, 'modTime', mt, 'sha1', s1, 'sha256', s256, 'md5', m5)
    redis.call('SADD', KEYS[1], path)
    redis.call('PUBLISH', ARGV[2], path)
    count = count + 1
  end
  path = nextv()
end
return count
"""

#: ``HSET <ARGV[1]><path> size .. modTime .. length .. sha1 .. sha256 ..`` for every (path, size,
#: modTime, length, sha1, sha256) packed in ARGV[2]: the piece hashes, one whole record at once.
PIECES_SCRIPT = _UNPACKER + """
local nextv, count = unpacker(ARGV[2]), 0
local path = nextv()
while path do
  local size, mt, len, s1, s256 = nextv(), nextv(), nextv(), nextv(), nextv()
  redis.call('HSET', ARGV[1] .. path, 'size', size, 'modTime', mt, 'length', len, 'sha1', s1,
             'sha256', s256)
  count = count + 1
  path = nextv()
end
return count
"""

#: ``SADD KEYS[1]`` every path packed in ARGV[1].
ADD_SCRIPT = _UNPACKER + """
local members, nextv = {}, unpacker(ARGV[1])
local p = nextv()
while p do
  members[#members + 1] = p
  p = nextv()
end
return redis.call('SADD', KEYS[1], unpack(members))
"""


#: One SSCAN step over KEYS[1] (FILES), keeping the members missing from KEYS[2] (FILES_TMP):
#: returns {next cursor, packed members}.  Read-only, so SSCAN's nondeterminism is allowed.
REMOVED_SCRIPT = """
local r = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local out = {}
for _, m in ipairs(r[2]) do
  if redis.call('SISMEMBER', KEYS[2], m) == 0 then out[#out + 1] = #m .. ':' .. m end
end
return {r[1], table.concat(out)}
"""


def _unpack_list(blob: str | bytes) -> list[bytes]:
    return unpack(blob if isinstance(blob, bytes) else _encode(blob))


def _record(path: bytes, fields: Sequence[str]) -> bytes:
    """One FILE_ record packed for WRITE_SCRIPT (path, size, modTime, sha1, sha256, md5)."""
    return pack([path, *(_encode(v) for v in fields)])


def needs_rehash(stored: Sequence[str | None], size: int, mtime_ns: int, enabled: Sequence[int],
                 force: bool) -> bool:
    """Whether a file must be hashed again, from its stored record (``HMGET … size modTime sha1
    sha256 md5``, None = missing): forced, an enabled hash (``enabled``: its indexes in the record)
    is empty, the size differs, or the stored modTime is not the same instant (unparseable counts
    as different).  Read as :meth:`mirrorbits.model.FileInfo.from_redis` reads it (an invalid size
    is 0); the cheap tests first, so a file whose size changed costs no modTime parsing."""
    if force:
        return True
    for i in enabled:
        if not stored[i]:
            return True
    size_text = stored[0] or ""
    if size_text != str(size):
        try:
            stored_size = gocompat.parse_go_int(size_text, 64)
        except ValueError:
            stored_size = 0
        if stored_size != size:
            return True
    return gocompat.parse_gts(stored[1] or "") != mtime_ns


_SUM_INDEX = {"sha1": 2, "sha256": 3, "md5": 4}

#: A file that needs hashing: the walked file's four values, then its stored record's five (a str or
#: None each).  One flat tuple of atomic values: the cyclic GC stops tracking those, so a backlog of
#: 100,000 of them neither triggers nor slows full collections (nested lists did: 100-175 ms
#: pauses of every thread, measured).
HashJob = tuple[bytes, int, int, str, *tuple[str | None, ...]]


@dataclass
class BatchOutcome:
    """What one batch contributes to the commit."""

    indexed: list[bytes] = field(default_factory=list)
    #: Packed WRITE_SCRIPT records of the FILE_ hashes to write.
    changed: list[bytes] = field(default_factory=list)
    #: Packed PIECES_SCRIPT records of the piece hashes to write.
    pieces: list[bytes] = field(default_factory=list)
    to_hash: list[HashJob] = field(default_factory=list)
    hashed: int = 0
    failed: int = 0
    vanished: int = 0
    #: (level, format, kwargs) to log on the reactor thread.
    logs: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)


def _pieces_stale(row: Sequence[object], size: int, gts: str, mtime_ns: int, pieces: int) -> bool:
    """Whether the stored piece hashes (``row[5:8]``: size, modTime, length) miss or describe
    other content or another piece length than the file's now."""
    if row[5] != str(size) or row[7] != str(piece_length_for(size, pieces)):
        return True
    if row[6] == gts:
        return False
    return not isinstance(row[6], str) or gocompat.parse_gts(row[6]) != mtime_ns


def compare_batch(files: Sequence[WalkedFile], stored: str | bytes | None, algorithms: Sequence[str],
                  force: bool, pieces: int | None = None) -> BatchOutcome:
    """Decide for each file of a chunk from its stored record (the READ_SCRIPT reply): unchanged,
    a record to rewrite without hashing, or a file to hash.  Runs on the reactor thread (a few
    microseconds per file: the common case is two string comparisons).

    ``pieces`` (:func:`piece_setting`): None when torrents are off; else a file whose piece
    hashes are missing or stale is hashed again too (the same read gives both)."""
    rows = json.loads(stored) if stored else None
    if not isinstance(rows, list) or len(rows) != len(files):
        raise ValueError("malformed FILE_ batch reply")
    out = BatchOutcome()
    indexed, changed = out.indexed, out.changed
    enabled = [_SUM_INDEX[a] for a in algorithms]
    for f, row in zip(files, rows, strict=True):
        path, size, mtime_ns, gts = f
        stale = pieces is not None and _pieces_stale(row, size, gts, mtime_ns, pieces)
        # The common case of a rescan: the same text as we would write, every enabled hash there.
        # (cjson gives a missing field as false.)
        if not force and not stale and row[1] == gts and row[0] == str(size):
            for i in enabled:
                if not row[i]:
                    break
            else:
                indexed.append(path)
                if False in row[:5]:  # a field missing, e.g. a disabled hash: complete the record
                    changed.append(_record(path, [v or "" for v in row[:5]]))
                continue
        reply = tuple([v if isinstance(v, str) else None for v in row[:5]])
        if stale or needs_rehash(reply, size, mtime_ns, enabled, force):
            out.to_hash.append((path, size, mtime_ns, gts, *reply))
            continue
        new = (str(size), gts, *(v or "" for v in reply[2:5]))
        indexed.append(path)
        if reply != new:
            changed.append(_record(path, new))
    return out


def hash_batch(repository: str, jobs: Sequence[HashJob], algorithms: Sequence[str],
               abort: threading.Event | None = None, pieces: int | None = None) -> BatchOutcome:
    """Hash the files of ``jobs`` and build their records, with their piece hashes when
    ``pieces`` is not None (blocking: runs in the hashing pool).  Raises :class:`ScanAborted` as
    soon as ``abort`` is set."""
    out = BatchOutcome()
    root = _encode(repository)
    buf = bytearray(READ_SIZE) if algorithms or pieces is not None else None
    for job in jobs:
        path, size, mtime_ns, gts = job[:4]
        reply = job[4:]
        if abort is not None and abort.is_set():
            raise ScanAborted()
        digests: dict[str, str] = {}
        plen = piece_length_for(size, pieces) if pieces is not None else 0
        try:
            digests, size2, mtime2 = hash_file(root + path, algorithms, buf, plen)
            out.hashed += 1
            if (size2, mtime2) != (size, mtime_ns):  # changed during the scan: describe
                size, mtime_ns = size2, mtime2       # the content that was hashed
                gts = format_local_gts(mtime_ns)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                out.vanished += 1
                out.logs.append(("info", "{path}: vanished during the scan, not indexed",
                                 {"path": _decode(path)}))
                continue
            out.failed += 1
            err = e.strerror if isinstance(e, HashFailed) else _go_error(
                "open", repository + _decode(path), e)
            out.logs.append(("warn", "{path}: hashing failed: {err}", {"path": _decode(path), "err": err}))
        new = (str(size), gts, digests.get("sha1", ""), digests.get("sha256", ""), digests.get("md5", ""))
        if PIECES_SHA1 in digests:
            if plen != piece_length_for(size, pieces or 0):  # the file grew or shrank meanwhile
                plen = 0
            else:
                out.pieces.append(pack([path, *(_encode(v) for v in (
                    str(size), gts, str(plen), digests[PIECES_SHA1], digests[PIECES_SHA256]))]))
        out.indexed.append(path)
        if reply != new:
            out.changed.append(_record(path, new))
    return out


# ---------------------------------------------------------------------------------------------------
# The scan


@dataclass
class ScanResult:
    indexed: int = 0
    removed: int = 0
    written: int = 0
    hashed: int = 0
    failed: int = 0
    vanished: int = 0
    skipped: int = 0
    #: Total size of the files the walk found.
    bytes: int = 0


def _chunks(seq: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


#: Marks the end of the walk in the chunk queue.
_END: list[WalkedFile] = []


class LocalScanner:
    """Scans ``config().Repository`` into Redis.  One scan at a time per object (callers serialise;
    :class:`mirrorbits.scan.source_service.SourceScanService` does)."""

    def __init__(self, client: RedisClient, config: Callable[[], Config],
                 reactor: IDaemonReactor | None = None, *,
                 commit_batch: int = COMMIT_BATCH, read_batch: int = READ_BATCH,
                 hash_workers: int = HASH_WORKERS, lock_attempts: int = LOCK_ATTEMPTS,
                 lock_retry_delay: float = LOCK_RETRY_DELAY) -> None:
        self.client = client
        self.config = config
        self.reactor = reactor if reactor is not None else default_reactor()
        self.commit_batch = commit_batch
        self.read_batch = read_batch
        self.hash_workers = max(1, hash_workers)
        self.lock_attempts = lock_attempts
        self.lock_retry_delay = lock_retry_delay
        self._stop = threading.Event()
        #: Set to stop the threads of the running scan (on stop() or when the scan fails).
        self._abort: threading.Event | None = None
        #: Test hook: awaited with the paths (bytes) of each batch of files about to be hashed
        #: (e.g. to delete a file mid-scan).
        self.before_hash: Callable[[list[bytes]], object] | None = None

    def stop(self) -> None:
        """Abort a running walk/hash phase and refuse new scans until :meth:`resume` (the daemon is
        stopping); a commit in progress finishes, it is bounded and short."""
        self._stop.set()
        if self._abort is not None:
            self._abort.set()

    def resume(self) -> None:
        self._stop.clear()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise ScanAborted()

    async def scan(self, rehash: bool = False) -> ScanResult:
        """One full local scan; raises :class:`LocalScanError` (Go texts) or Redis errors."""
        self._check_stop()
        config = self.config()
        repository = config.Repository
        algorithms = enabled_algorithms(config)
        pieces = piece_setting(config)
        log.info("[source] Scanning the filesystem...")
        pool = ThreadPool(minthreads=0, maxthreads=self.hash_workers, name="mirrorbits-hash")
        pool.start()
        try:
            result, indexed, changed, piece_records = await self._walk_and_compare(
                pool, repository, algorithms, rehash, pieces)
        finally:
            pool.stop()  # joins idle threads only: every task has finished here
        self._check_stop()
        # Go logs every digest at info level; for a large repository that is the whole log, so
        # only the counts are logged here.
        log.info("[source] Indexing the files... ({hashed} hashed, {changed} records to write)",
                 hashed=result.hashed, changed=len(changed))
        result.indexed = len(indexed)
        result.removed, result.written = await self._commit(indexed, changed, piece_records)
        log.info("[source] Indexed {n} files, {k} removed", n=result.indexed, k=result.removed)
        return result

    async def _walk_and_compare(self, pool: ThreadPool, repository: str, algorithms: tuple[str, ...],
                                force: bool, pieces: int | None = None
                                ) -> tuple[ScanResult, list[bytes], list[bytes], list[bytes]]:
        """The pipeline of the module docstring: walk thread -> read scripts -> comparison on the
        reactor -> hashing pool.  Returns the figures, the indexed paths, the records to write and
        the piece hash records to write."""
        reactor = self.reactor
        abort = self._abort = threading.Event()
        if self._stop.is_set():
            abort.set()
        queue: defer.DeferredQueue[list[WalkedFile]] = defer.DeferredQueue()

        def emit(chunk: list[WalkedFile]) -> None:  # walk thread
            reactor.callFromThread(queue.put, chunk)

        walk = threads.deferToThreadPool(reactor, reactor.getThreadPool(), walk_chunks,
                                         repository, self.read_batch, emit, abort)
        walked: list[list[tuple[str, str]] | Failure] = []

        def end(r: list[tuple[str, str]] | Failure) -> None:  # queued after every chunk: callFromThread calls run in order
            walked.append(r)
            queue.put(_END)

        walk.addBoth(end)

        result = ScanResult()
        indexed: list[bytes] = []
        changed: list[bytes] = []
        piece_records: list[bytes] = []
        # Hash tasks handed to the pool, oldest first; at most HASH_QUEUE per thread, so the
        # comparison waits for the hashing rather than piling up tasks (and their Deferreds,
        # which would live long enough to drive full GC collections).
        hashing: deque[defer.Deferred[BatchOutcome]] = deque()
        reads: deque[tuple[list[WalkedFile], defer.Deferred[Reply]]] = deque()

        def merge(o: BatchOutcome) -> None:
            indexed.extend(o.indexed)
            changed.extend(o.changed)
            piece_records.extend(o.pieces)
            result.hashed += o.hashed
            result.failed += o.failed
            result.vanished += o.vanished
            for level, fmt, kw in o.logs:
                getattr(log, level)(fmt, **kw)

        async def compare_oldest() -> None:
            files, d = reads.popleft()
            o = compare_batch(files, as_str(await d), algorithms, force, pieces)
            merge(o)
            if o.to_hash:
                if self.before_hash is not None:
                    await defer.maybeDeferred(self.before_hash, [j[0] for j in o.to_hash])
                hashing.append(threads.deferToThreadPool(
                    reactor, pool, hash_batch, repository, o.to_hash, algorithms, abort, pieces))
                while len(hashing) > HASH_QUEUE * self.hash_workers:
                    merge(await hashing.popleft())

        try:
            while True:
                files = await queue.get()
                if files is _END:
                    break
                self._check_stop()
                result.bytes += sum(f[1] for f in files)
                read_args: tuple[str | bytes, ...] = (FILE_PREFIX, pack([f[0] for f in files]))
                if pieces is not None:
                    read_args += (PIECES_PREFIX,)
                reads.append((files, defer.Deferred.fromCoroutine(self.client.execute(
                    "EVAL", READ_SCRIPT, "0", *read_args))))
                # Compare while the walk goes on; keep IN_FLIGHT reads queued in Redis.
                while reads and (len(reads) >= IN_FLIGHT or not queue.pending):
                    await compare_oldest()
            while reads:
                await compare_oldest()
            if isinstance(walked[0], Failure):
                walked[0].raiseException()
            skipped: list[tuple[str, str]] = walked[0]
            while hashing:
                merge(await hashing.popleft())
        except BaseException:
            # Stop the walk and the hashing, and wait for the hash tasks (the caller stops their
            # pool, which joins its threads) and the reads; the walk thread ends at its next
            # check of ``abort``, nobody needs to wait for it.
            abort.set()
            await defer.DeferredList([d for _, d in reads], consumeErrors=True)
            await defer.DeferredList(list(hashing), consumeErrors=True)
            raise
        finally:
            self._abort = None
        for path, why in skipped:
            log.debug("[source] {path}: skipped ({why})", path=path, why=why)
        result.skipped = len(skipped)
        return result, indexed, changed, piece_records

    async def _acquire_lock(self) -> ClusterLock:
        for attempt in range(self.lock_attempts):
            lock = ClusterLock.source_repo(self.client)
            if await lock.acquire():
                return lock
            if attempt + 1 < self.lock_attempts:
                await task.deferLater(self.reactor, self.lock_retry_delay, lambda: None)
        raise ScanInProgress()

    async def _unlink_command(self) -> str:
        version = self.client.server_version
        if not version:  # Sentinel mode does not read it: ask
            try:
                info = await self.client.execute("INFO", "server")
                for line in str(info).splitlines():
                    if line.startswith("redis_version:"):
                        version = line.split(":", 1)[1].strip()
            except Exception:
                version = ""
        if version and gocompat.redis_version_number(version) >= gocompat.redis_version_number("4.0.0"):
            return "UNLINK"
        return "DEL"

    async def _commit(self, indexed: list[bytes], changed: list[bytes],
                      piece_records: Sequence[bytes] = ()) -> tuple[int, int]:
        """Write the index under ``SOURCE_REPO_SYNC`` in bounded transactions; returns the number of
        paths removed and of records written."""
        lock = await self._acquire_lock()
        try:
            return await self._commit_locked(lock, indexed, changed, piece_records)
        finally:
            if lock.lost:
                # The key expired under us: it may be another node's lock by now, and its value
                # (Go's "1") cannot tell; leave it to expire rather than delete someone else's.
                lock.released = True
            await lock.release()

    async def _run_bounded(self, commands: Iterator[tuple[str | bytes, ...]], check: Callable[[], None]
                           ) -> list[Reply]:
        """Send ``commands`` (each one bounded script) with up to IN_FLIGHT of them queued in Redis,
        so Redis is not idle during each round trip; checks the lock before sending each.  Returns
        the replies."""
        pending: deque[defer.Deferred[Reply]] = deque()
        replies: list[Reply] = []
        try:
            for cmd in commands:
                check()
                pending.append(defer.Deferred.fromCoroutine(self.client.execute(*cmd)))
                if len(pending) >= IN_FLIGHT:
                    replies.append(await pending.popleft())
                    faults.point("local_commit.batch")
            while pending:
                replies.append(await pending.popleft())
                faults.point("local_commit.batch")
        except BaseException:
            await defer.DeferredList(list(pending), consumeErrors=True)
            raise
        return replies

    async def _commit_locked(self, lock: ClusterLock, indexed: list[bytes], changed: list[bytes],
                             piece_records: Sequence[bytes] = ()) -> tuple[int, int]:
        n = self.commit_batch
        unlink = await self._unlink_command()

        def check() -> None:
            if lock.lost:
                raise LockLost()

        # 1. FILES_TMP, built in bounded SADDs (nobody reads it but the lock holder).
        await self.client.execute(unlink, schema.FILES_TMP)
        await self._run_bounded((("EVAL", ADD_SCRIPT, "1", schema.FILES_TMP, pack(chunk))
                                 for chunk in _chunks(indexed, n)), check)
        # 2. Changed records: HMSET + PUBLISH, one atomic script per batch.  One HMSET writes every
        #    field at once, so a reader never sees half a record.  Unchanged records are not
        #    rewritten (Go rewrites all of them; see the module docstring).
        channel = schema.CHANNEL_FILE_UPDATE
        written = sum(as_int(r) for r in await self._run_bounded(
            (("EVAL", WRITE_SCRIPT, "1", schema.FILES, FILE_PREFIX, channel, b"".join(chunk))
             for chunk in _chunks(changed, n)), check))
        #    Piece hashes (torrents on), one whole record per file, in the same bounded batches.
        await self._run_bounded((("EVAL", PIECES_SCRIPT, "0", PIECES_PREFIX, b"".join(chunk))
                                 for chunk in _chunks(piece_records, n)), check)
        # 3. Removed paths: what FILES holds that FILES_TMP does not, a bounded SSCAN step at a
        #    time (Go: one SDIFF).  Consistent: only the lock holder writes FILES.
        removed: set[bytes] = set()
        cursor = "0"
        while True:
            check()
            cursor, blob = as_str_list(await self.client.execute(
                "EVAL", REMOVED_SCRIPT, "2", schema.FILES, schema.FILES_TMP, cursor, str(SSCAN_COUNT)))
            removed.update(_unpack_list(blob))
            if str(cursor) == "0":
                break
        gone = sorted(removed)
        del removed
        for chunk in _chunks(gone, n):
            check()
            cmds: list[tuple[str | bytes, ...]] = []
            for path in chunk:
                cmds.append(("DEL", FILE_PREFIX.encode() + path, PIECES_PREFIX.encode() + path))
                cmds.append(("PUBLISH", channel, path))
            self._raise_errors(await self.client.transaction(cmds))
            faults.point("local_commit.removed")
        # 4. Swap FILES in.  With 0 files FILES_TMP does not exist: empty FILES instead (Go's
        #    RENAME fails there and leaves FILES stale).
        check()
        if indexed:
            final = [(unlink, schema.FILES), ("RENAME", schema.FILES_TMP, schema.FILES)]
        else:
            final = [(unlink, schema.FILES)]
        self._raise_errors(await self.client.transaction(final))
        faults.point("local_commit.swapped")
        return len(gone), written

    @staticmethod
    def _raise_errors(replies: Sequence[object]) -> None:
        for r in replies:
            if isinstance(r, Exception):
                raise r
