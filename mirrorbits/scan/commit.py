"""The Redis side of one mirror scan: lock, attempt mark, staging, commit, success mark
and the mirror log events.

Go queues the whole listing into one ``MULTI`` and ``EXEC``\\ s it at the end: with 200,000 files
that transaction blocks Redis for a long time, and so do its ``SDIFF``, ``RENAME`` over the old set
and ``SINTERSTORE`` (measured: 100–250 ms each on 200,000 paths).  Here every step is bounded:

1. While the listing runs, files are *staged* in batches in a private list
   ``MIRRORSCANTMP_<id>``: one element per batch of up to :data:`BATCH` files, their records
   (``size\\0modTime\\0path\\n``, :func:`~mirrorbits.scan.listing.staged_record`) concatenated,
   so a batch is one argument to encode and one list element, not hundreds (the list expires
   after a day if we die).  Nothing
   the redirector or a Go node reads changes, so a failed or aborted scan leaves the previous index
   intact, as Go's ``DISCARD`` does.
2. Phase 1, in batches of :data:`BATCH` files (one Lua script each, so each batch becomes visible
   at once with its messages): ``SADD MIRRORFILESTMP_<id>``, ``SADD FILEMIRRORS_<path>``,
   ``HMSET FILEINFO_<id>_<path>``, ``PUBLISH _mirrorbits_mirror_file_update "<id> <path>"`` (these
   two only for a file new to the mirror or whose size or modTime changed), and, when ``<path>`` is
   in ``FILES``, ``SADD`` to a private ``HANDLEDFILESTMP_<id>``.
3. Phase 2: ``SSCAN MIRRORFILES_<id>`` in batches; each path not in ``MIRRORFILESTMP_<id>`` is
   removed (``SREM FILEMIRRORS_<path>``, ``DEL FILEINFO_<id>_<path>``, ``PUBLISH``) and taken out
   of the old set, which also makes the ``Removed`` count exact if SSCAN repeats an element.
4. Phase 3: ``UNLINK`` + ``RENAME`` of ``MIRRORFILES_<id>`` and ``HANDLEDFILES_<id>``, the success
   mark and the removal of the staging list in one ``MULTI`` (the old sets are freed in Redis'
   background thread).

**A process killed during the commit** (SIGKILL, OOM, power loss) would leave the index half
written: some additions of phase 1 in ``FILEMIRRORS_*``/``FILEINFO_*``, some removals of phase 2
done, ``MIRRORFILES_<id>`` still the old set.  So the commit is *rolled forward*: before phase 1 a
private marker ``MIRRORSCANCOMMIT_<id>`` (scanner type, precision, time; it expires with the
staging list) records that the complete listing in ``MIRRORSCANTMP_<id>`` is to be committed, and the
phase-3 ``MULTI`` deletes both.  Every phase is idempotent (``SADD``, ``HMSET`` of the same values,
``SREM``), so whoever next holds ``SCANNING_<id>`` with the marker present (the next scan of the
mirror in :meth:`MirrorScanTransaction.begin`, or :func:`finish_interrupted_commit`, which the
monitor runs at start-up for every marked mirror) runs phases 1-3 again from the staging list and
ends with exactly the index an uninterrupted commit would have written.  A marker older than the
mirror's ``lastSuccessfulSync`` (another node, a Go one say, scanned it since) is dropped instead.
Before the marker a kill leaves the previous index untouched; the temporary keys expire.

Measured with 200,000 files (2 cores at load 6, other test suites running): staging + commit
17–23 s, client RSS growth 1.6 MB, Redis time per batch 3–5 ms on average, 40 ms at worst.

The end state is Go's; so are the messages, except that Go announces every listed file and we only
those that changed (a rescan that changes nothing sends none).  The other difference a reader can
see: the additions appear
batch by batch rather than all at once (each file together with its info, so no reader meets a
file without its info), and ``HANDLEDFILES_<id>`` is the intersection with ``FILES`` as it was while each
batch was written rather than at one instant (a local scan renaming ``FILES`` meanwhile can leave
it off by the files that changed, until the next mirror scan, just as Go's is between scans).

A rescan whose listing is proven to be the one last compared (:mod:`mirrorbits.scan.unchanged`)
holds its files in memory instead of staging them (up to :data:`SPECULATIVE_FILES`) and skips
phases 1-3: it only writes the success mark, the time-zone offset and the log events, as Go's scan
does when its rewrite of the index changes no byte.

A listing of **0 files** is treated as a failure that keeps the previous index (Go removes every
``FILEMIRRORS``/``FILEINFO`` entry of the mirror but keeps a stale ``MIRRORFILES``): an empty
rsync module or FTP directory is far more often a broken mirror than an empty one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mirrorbits import faults, gocompat
from mirrorbits.deferutil import follow
from mirrorbits.mirrorlog import append_log
from mirrorbits.model import LOG_ERROR, LOG_SCAN_COMPLETED, LOG_SCAN_STARTED
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient
from mirrorbits.redis.locks import ClusterLock
from mirrorbits.redis.replies import as_int, as_list, hash_dict
from mirrorbits.scan import unchanged
from mirrorbits.scan.listing import PRECISION_S, ListedFile, ScanError, staged_record

log = Logger(namespace="mirrorbits.scan")

#: Files per Redis round trip (staging, phase 1 and phase 2): ~1,250 commands, about a
#: millisecond of Redis time.
BATCH = 250
#: The private staging keys expire after a day, in case this process dies mid-scan.
STAGING_TTL = 86400

#: While a rescan may turn out unchanged, up to this many listed files are held in memory instead of
#: being staged (~120 bytes each); past it, or once the listing is longer than the recorded one, they
#: are staged as usual (the comparison may still be skipped at the end).
SPECULATIVE_FILES = 100_000

ERR_IN_PROGRESS = "scan already in progress"
ERR_NO_FILES = "the mirror listed no files (the previous index is kept)"
ERR_INTERRUPTED = "the commit was interrupted; it is finished by the next scan of this mirror"


def staging_key(mirror_id: int) -> str:
    """Private list of the files listed by the scan in progress (not a Go key)."""
    return f"MIRRORSCANTMP_{mirror_id}"


def handled_tmp_key(mirror_id: int) -> str:
    """Private set where the next ``HANDLEDFILES_<id>`` is built (not a Go key)."""
    return f"HANDLEDFILESTMP_{mirror_id}"


def commit_marker_key(mirror_id: int) -> str:
    """Private hash present while a commit is under way: ``type``, ``precision``, ``files`` and
    ``since`` (Unix time) of the scan whose listing is in the staging list (not a Go key)."""
    return f"MIRRORSCANCOMMIT_{mirror_id}"


class ScanInProgress(ScanError):
    def __init__(self) -> None:
        super().__init__(ERR_IN_PROGRESS)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a successful scan reports (and the admin ``scan`` command prints)."""

    files_indexed: int = 0
    known_indexed: int = 0
    removed: int = 0
    tz_offset_ms: int = 0
    #: Set by the admin command when it enabled the mirror afterwards.
    enabled: bool = False
    #: The listing was proven unchanged (``scan.unchanged``): no comparison, no index write.
    unchanged: bool = False


# The batches run inside Redis, so only a count crosses the wire: reading 200,000 entries back
# through txredisapi's parser costs ~0.2 ms each (measured), writing keys from Lua does not.
# A listed file whose ``FILEINFO`` already holds its size and modTime, and whose ``FILEMIRRORS`` already
# names the mirror, is neither rewritten nor announced: the stored bytes are the same either way, and
# a message for it made every node's view (ours and Go's) reload a path that had not changed, i.e.
# a full rescan that changed nothing reloaded every file every mirror carries.  So a scan that
# changes k files sends k messages (plus those of the removed paths).
# Key names come in as prefixes from mirrorbits.redis.schema.
#
# KEYS: staging list, MIRRORFILESTMP, FILES, HANDLEDFILESTMP.
# ARGV: index of the staged batch, id, FILEMIRRORS_ prefix, FILEINFO_<id>_ prefix, channel, ttl.
# Returns {entries processed, paths new to HANDLEDFILESTMP}; {-1, 0} past the last batch.
_ADD_BATCH = """
local batch = redis.call('lindex', KEYS[1], ARGV[1])
if not batch then
    return {-1, 0}
end
local known = 0
local count = 0
local pos = 1
local len = #batch
while pos <= len do
    local a = string.find(batch, '\\0', pos, true)
    local b = string.find(batch, '\\0', a + 1, true)
    local e = string.find(batch, '\\n', b + 1, true)
    local size, mod = string.sub(batch, pos, a - 1), string.sub(batch, a + 1, b - 1)
    local path = string.sub(batch, b + 1, e - 1)
    pos = e + 1
    count = count + 1
    redis.call('sadd', KEYS[2], path)
    local info = ARGV[4] .. path
    local old = redis.call('hmget', info, 'size', 'modTime')
    if redis.call('sadd', ARGV[3] .. path, ARGV[2]) == 1 or old[1] ~= size or old[2] ~= mod then
        redis.call('hmset', info, 'size', size, 'modTime', mod)
        redis.call('publish', ARGV[5], ARGV[2] .. ' ' .. path)
    end
    if redis.call('sismember', KEYS[3], path) == 1 then
        known = known + redis.call('sadd', KEYS[4], path)
    end
end
redis.call('expire', KEYS[2], ARGV[6])
redis.call('expire', KEYS[4], ARGV[6])
return {count, known}
"""

# KEYS: MIRRORFILES, MIRRORFILESTMP.
# ARGV: cursor, count, id, FILEMIRRORS_ prefix, FILEINFO_<id>_ prefix, channel.
# Returns {next cursor, paths removed}.
_REMOVE_BATCH = """
redis.replicate_commands()
local page = redis.call('sscan', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local removed = 0
for _, path in ipairs(page[2]) do
    if redis.call('sismember', KEYS[2], path) == 0 then
        removed = removed + redis.call('srem', KEYS[1], path)
        redis.call('srem', ARGV[4] .. path, ARGV[3])
        redis.call('del', ARGV[5] .. path)
        redis.call('publish', ARGV[6], ARGV[3] .. ' ' .. path)
    end
end
return {page[1], removed}
"""


class MirrorScanTransaction:
    """One scan attempt of one mirror, from the lock to the completion event.

    Use: :meth:`begin` (raises :class:`ScanInProgress`), :meth:`add` for every file (returns a
    Deferred to wait for when a batch is written), then either :meth:`fail` or :meth:`commit`
    followed by :meth:`complete`.  :meth:`release` is idempotent and always safe.
    """

    def __init__(self, redis: RedisClient, mirror_id: int, name: str, *, batch: int = BATCH,
                 clock: IReactorTime | None = None) -> None:
        self.redis = redis
        self.mirror_id = mirror_id
        self.name = name
        self.batch = batch
        self.lock = ClusterLock.for_mirror(redis, mirror_id, clock=clock)
        self.files = 0
        #: Files written to the staging list so far (``files`` once the commit has flushed).
        self.staged = 0
        self._staging_error: Exception | None = None
        self._buffer: list[bytes] = []
        self._pending: defer.Deferred[None] | None = None
        self._staging = staging_key(mirror_id)
        self._tmp = schema.mirror_files_tmp_key(mirror_id)
        self._handled_tmp = handled_tmp_key(mirror_id)
        self._digest = unchanged.new_digest()
        #: The last full comparison's record, when nobody rewrote the index since (see begin).
        self._candidate: unchanged.Candidate | None = None
        #: Hold the listed files in memory rather than stage them, hoping to skip the comparison.
        self._speculating = False
        self._compared = 0
        self._known = 0
        #: Set once the comparison starts writing the index (a failure after it voids the record).
        self._index_touched = False
        self._marker = commit_marker_key(mirror_id)
        #: True once the marker is written: from then on the staging list must be kept.
        self._decided = False

    # -- start ---------------------------------------------------------------------------------

    async def begin(self, scanner_type: int) -> None:
        """Take ``SCANNING_<id>``, mark the attempt (``lastSync``), log "scan started"."""
        if not await self.lock.acquire():
            raise ScanInProgress()
        try:
            # A commit a killed process left half done is finished first (its own "scan started"
            # event already voids the unchanged-rescan record).
            await self.resume_interrupted()
            # Before our own "scan started" event, which the record's proof counts.
            self._candidate = await unchanged.check_record(self.redis, self.mirror_id, int(time.time()))
            self._speculating = self._candidate is not None
            await self.redis.transaction([("HSET", schema.mirror_key(self.mirror_id), "lastSync",
                                           str(int(time.time())))])
            await self.redis.publish(schema.CHANNEL_MIRROR_UPDATE, str(self.mirror_id))
            await append_log(self.redis, self.mirror_id, LOG_SCAN_STARTED, Typ=scanner_type)
            await self._drop_staging()
        except BaseException:
            await self.lock.release()
            raise

    # -- staging -------------------------------------------------------------------------------

    def add(self, f: ListedFile) -> defer.Deferred[None] | None:
        """Stage one listed file (Go ``AddFile``).  Returns a Deferred when a batch is being written;
        the lister waits for it, so memory stays bounded."""
        return self.add_records([staged_record(f)])

    def add_records(self, records: list[bytes]) -> defer.Deferred[None] | None:
        """Stage listed files given as records (a bulk lister's output).  A full batch is written at
        once, even while the previous write is still in flight; the Deferred returned then makes
        the lister wait for that previous write, so at most two writes' worth of records are held
        (or up to :data:`SPECULATIVE_FILES` while the listing may prove unchanged).  Raises the
        error of a staging write that failed (the scan then fails with it)."""
        if self._staging_error is not None:
            raise self._staging_error
        self.files += len(records)
        self._digest.update(b"".join(records))
        self._buffer += records
        if self._speculating:
            candidate = self._candidate
            if (candidate is not None and self.files <= candidate.files
                    and len(self._buffer) < SPECULATIVE_FILES):
                return None
            self._speculating = False
        if len(self._buffer) < self.batch:
            return None
        previous = self._pending
        self._flush()
        if previous is not None and not previous.called:
            return follow(previous)
        return None

    def _flush(self) -> defer.Deferred[None]:
        entries, self._buffer = self._buffer, []
        batch = self.batch
        blobs = [b"".join(entries[i:i + batch]) for i in range(0, len(entries), batch)]
        d = defer.Deferred.fromCoroutine(self._write_staging(blobs, len(entries)))
        self._pending = d
        return d

    async def _write_staging(self, blobs: list[bytes], count: int) -> None:
        """Never raises: a failure is kept for :meth:`add_records` and :meth:`commit` to report
        (nobody may be waiting for this write)."""
        try:
            replies = await self.redis.pipeline([("RPUSH", self._staging, *blobs),
                                                 ("EXPIRE", self._staging, str(STAGING_TTL))])
            for r in replies:
                if isinstance(r, Exception):
                    raise r
        except Exception as e:
            if self._staging_error is None:
                self._staging_error = e
            return
        self.staged += count
        faults.point("mirror_commit.staged")

    # -- failure -------------------------------------------------------------------------------

    async def fail(self, error: str) -> None:
        """Drop what was staged, log the error (``[<name>] <error>``, event 1), release the lock.

        Once the commit has begun, what was staged is kept instead: the index is half written and
        the next holder of the lock finishes the commit from it."""
        if self._decided:
            error = f"{error} ({ERR_INTERRUPTED})"
        else:
            try:
                await self._drop_staging()
            except Exception as e:
                log.warn("[{name}] cleaning up the failed scan: {err}", name=self.name, err=e)
        log.error("[{name}] {err}", name=self.name, err=error)
        last = await append_log(self.redis, self.mirror_id, LOG_ERROR, Err=error)
        if self._candidate is not None and not self._index_touched:
            await unchanged.forward_record(self.redis, self.mirror_id, last)
        await self.release()

    async def _drop_staging(self) -> None:
        await self.redis.execute("DEL", self._tmp, self._staging, self._handled_tmp, self._marker)

    # -- commit --------------------------------------------------------------------------------

    async def commit(self, scanner_type: int, precision_ns: int) -> ScanResult:
        """Phases 1–3 and the success mark.  Raises :class:`ScanError` (no files) after which the
        caller must :meth:`fail`; Redis errors propagate the same way."""
        if self._pending is not None and not self._pending.called:
            await follow(self._pending)
        if self._staging_error is not None:
            raise self._staging_error
        if self.files == 0:
            raise ScanError(ERR_NO_FILES)
        if not await self.redis.execute("HEXISTS", schema.MIRRORS, str(self.mirror_id)):
            # Removed while we were listing: writing now would resurrect its file entries.
            raise ScanError("mirror removed during the scan")
        if await self._proven_unchanged():
            if self.staged:
                await self._drop_staging()
            return await self._mark_success(scanner_type, precision_ns,
                                            ScanResult(self.files, self._known, 0, unchanged=True))
        self._compared = int(time.time())
        if self._buffer:
            await self._flush()
        if self._staging_error is not None:
            raise self._staging_error
        if self.staged != self.files:  # a staging write failed
            raise ScanError(f"only {self.staged} of {self.files} files could be staged")
        precision = precision_ns if precision_ns > 0 else PRECISION_S
        self._raise_errors(await self.redis.transaction([
            ("HSET", self._marker, "type", str(scanner_type), "precision", str(precision),
             "files", str(self.files), "since", str(int(time.time()))),
            ("EXPIRE", self._marker, str(STAGING_TTL)),
            ("EXPIRE", self._staging, str(STAGING_TTL)),
        ]))
        self._decided = True
        self._index_touched = True  # from here on the index will change, now or when rolled forward
        faults.point("mirror_commit.decided")
        return await self._apply(scanner_type, precision)

    async def _apply(self, scanner_type: int, precision: int) -> ScanResult:
        """Phases 1-3 from the staging list, then MIRROR_UPDATE: what an interrupted commit is
        rolled forward with, too."""
        known = await self._phase_add()
        removed = await self._phase_remove()
        await self._phase_rename(known, scanner_type, precision)
        faults.point("mirror_commit.swapped")
        await self.redis.publish(schema.CHANNEL_MIRROR_UPDATE, str(self.mirror_id))
        return ScanResult(self.files, known, removed)

    async def resume_interrupted(self) -> ScanResult | None:
        """Finish the commit a killed process left half done (the lock must be held).

        Returns its result, or None when there was none to finish (or it was stale: dropped)."""
        meta = hash_dict(await self.redis.execute("HGETALL", self._marker))
        if not meta:
            return None
        mirror = hash_dict(await self.redis.execute("HGETALL", schema.mirror_key(self.mirror_id)))
        batches = as_int(await self.redis.execute("LLEN", self._staging))
        last_success = _int_or(mirror.get("lastSuccessfulSync"), 0)
        if not await self.redis.execute("HEXISTS", schema.MIRRORS, str(self.mirror_id)) \
                or batches == 0 or last_success > _int_or(meta.get("since"), 0):
            # Removed mirror, staging list expired, or a newer scan since: nothing to finish.
            await self._drop_staging()
            return None
        files = _int_or(meta.get("files"), 0)
        log.warn("[{name}] finishing the commit of an interrupted scan ({n} files)", name=self.name,
                 n=files)
        self.files = self.staged = files
        self._decided = True
        result = await self._apply(_int_or(meta.get("type"), 0), _int_or(meta.get("precision"), 0))
        self.files = self.staged = 0
        return result

    async def _proven_unchanged(self) -> bool:
        """The listing is the one last compared and the index is still what that comparison wrote
        (see :mod:`mirrorbits.scan.unchanged`)."""
        candidate = self._candidate
        if candidate is None or candidate.files != self.files or candidate.digest != self.digest:
            return False
        known = await unchanged.handled_if_current(self.redis, self.mirror_id)
        if known is None:
            log.debug("[{name}] full comparison: FILES changed", name=self.name)
            return False
        self._known = known
        self._compared = candidate.compared
        return True

    @property
    def digest(self) -> str:
        """Hex digest of the staged records listed so far."""
        return self._digest.hexdigest()

    async def _mark_success(self, scanner_type: int, precision_ns: int, result: ScanResult) -> ScanResult:
        """Go's ``setLastSync(successful)``: ``lastSync``, ``lastSuccessfulSync*``, one update."""
        now = str(int(time.time()))
        precision = precision_ns if precision_ns > 0 else PRECISION_S
        await self.redis.transaction([
            ("HSET", schema.mirror_key(self.mirror_id), "lastSync", now),
            ("HMSET", schema.mirror_key(self.mirror_id), "lastSuccessfulSync", now,
             "lastSuccessfulSyncProtocol", str(scanner_type),
             "lastSuccessfulSyncPrecision", str(precision)),
        ])
        await self.redis.publish(schema.CHANNEL_MIRROR_UPDATE, str(self.mirror_id))
        return result

    def _prefixes(self) -> list[str]:
        return [schema.file_mirrors_key(""), schema.file_info_key(self.mirror_id, ""),
                schema.CHANNEL_MIRROR_FILE_UPDATE]

    async def _phase_add(self) -> int:
        self._index_touched = True
        await self.redis.execute("DEL", self._tmp, self._handled_tmp)
        keys = [self._staging, self._tmp, schema.FILES, self._handled_tmp]
        known = 0
        index = 0
        while True:
            done, new = (as_int(r) for r in as_list(await self.redis.execute(
                "EVAL", _ADD_BATCH, str(len(keys)), *keys, str(index),
                str(self.mirror_id), *self._prefixes(), str(STAGING_TTL))))
            if done < 0:
                break
            known += new
            index += 1
            faults.point("mirror_commit.added")
        return known

    async def _phase_remove(self) -> int:
        keys = [schema.mirror_files_key(self.mirror_id), self._tmp]
        removed = 0
        cursor = "0"
        while True:
            next_cursor, n = as_list(await self.redis.execute(
                "EVAL", _REMOVE_BATCH, str(len(keys)), *keys, cursor, str(self.batch),
                str(self.mirror_id), *self._prefixes()))
            cursor = str(next_cursor)
            removed += as_int(n)
            faults.point("mirror_commit.removed")
            if str(cursor) == "0":
                break
        return removed

    async def _phase_rename(self, known: int, scanner_type: int, precision: int) -> None:
        """The new sets, the success mark and the end of the commit, in one step."""
        unlink = self._unlink_command()
        files_key = schema.mirror_files_key(self.mirror_id)
        handled = schema.handled_files_key(self.mirror_id)
        # The private sets carry a TTL (a kill must not leave them forever); RENAME keeps it.
        cmds: list[tuple[str, ...]] = [(unlink, files_key), ("RENAME", self._tmp, files_key),
                                       ("PERSIST", files_key), (unlink, handled)]
        if known:
            cmds += [("RENAME", self._handled_tmp, handled), ("PERSIST", handled)]
        now = str(int(time.time()))
        cmds += [
            ("HSET", schema.mirror_key(self.mirror_id), "lastSync", now),
            ("HMSET", schema.mirror_key(self.mirror_id), "lastSuccessfulSync", now,
             "lastSuccessfulSyncProtocol", str(scanner_type),
             "lastSuccessfulSyncPrecision", str(precision)),
            (unlink, self._staging, self._handled_tmp), ("DEL", self._marker),
        ]
        self._raise_errors(await self.redis.transaction(cmds))
        self._decided = False

    @staticmethod
    def _raise_errors(replies: Sequence[object]) -> None:
        for r in replies:
            if isinstance(r, Exception):
                raise r

    def _unlink_command(self) -> str:
        version = self.redis.server_version
        if version and gocompat.redis_version_number(version) < gocompat.redis_version_number("4.0.0"):
            return "DEL"
        return "UNLINK"

    # -- end -----------------------------------------------------------------------------------

    async def complete(self, result: ScanResult) -> None:
        """Log "Indexed …" and event 8, then release the lock."""
        log.info("[{name}] Indexed {n} files ({known} known), {removed} removed", name=self.name,
                 n=result.files_indexed, known=result.known_indexed, removed=result.removed)
        completed = await append_log(self.redis, self.mirror_id, LOG_SCAN_COMPLETED,
                                     FilesIndexed=result.files_indexed, KnownIndexed=result.known_indexed,
                                     Removed=result.removed, TZOffset=result.tz_offset_ms)
        await unchanged.write_record(self.redis, self.mirror_id, self.digest, self.files, completed,
                                     self._compared)
        await self.release()

    async def release(self) -> None:
        if self._pending is not None and not self._pending.called:
            try:
                await self._pending  # never cancel a Redis command: wait for its reply
            except Exception:
                pass
        await self.lock.release()



def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


async def finish_interrupted_commit(redis: RedisClient, mirror_id: int, name: str) -> bool:
    """Finish a commit of ``mirror_id`` that a killed process left half done, if there is one.

    False when another process holds ``SCANNING_<id>`` (try again later: a dead holder's lock
    expires within 10 s, a live one finishes the commit itself when its scan begins)."""
    tx = MirrorScanTransaction(redis, mirror_id, name)
    if not await tx.lock.acquire():
        return False
    try:
        result = await tx.resume_interrupted()
        if result is not None:
            # The index changed: say so in the mirror's log (which also voids an unchanged-rescan
            # record); no new record is written, the next scan compares in full.
            log.info("[{name}] Indexed {n} files ({known} known), {removed} removed", name=name,
                     n=result.files_indexed, known=result.known_indexed, removed=result.removed)
            await append_log(redis, mirror_id, LOG_SCAN_COMPLETED, FilesIndexed=result.files_indexed,
                             KnownIndexed=result.known_indexed, Removed=result.removed, TZOffset=0)
    finally:
        await tx.release()
    return True
