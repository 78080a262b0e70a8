"""Proof that a mirror rescan would change nothing, so that its comparison and writes can be skipped.

A scan's index of mirror ``<id>`` is ``MIRRORFILES_<id>``, ``FILEINFO_<id>_<path>``, the mirror's
id in ``FILEMIRRORS_<path>`` and ``HANDLEDFILES_<id>`` (the listed paths that are also in
``FILES``).  All but the last are a function of the listing alone; the last also of ``FILES``.
So a rescan may skip the comparison when (1) its listing is the one our last full comparison
committed, (2) nobody rewrote the index since, and (3) ``HANDLEDFILES_<id>`` is still the
intersection with today's ``FILES``.

1. **The listing**: a BLAKE2b digest (128 bits) of the staged records (``size\\0modTime\\0path\\n``,
   the bytes the comparison would write, so also the ``FILEINFO`` values) in listing order, kept in
   ``MIRRORSCANDIGEST_<id>`` (a hash of ours; no Go key, Go never reads it).
2. **Nobody rewrote the index**: every scan attempt, by a Go node (``Scan()`` pushes its "scan
   started" event before it deletes ``MIRRORFILESTMP_<id>``) or by us, first appends an event to
   the mirror's log ``MIRRORLOGS_<id>``, which no node ever trims.  The record holds the log's
   length and the SHA-1 of its last element taken right after our own "scan completed" event (whose
   timestamp has nanoseconds): if anything was appended since, the length differs.  The record also
   holds ``SCARD`` of ``MIRRORFILES_<id>`` and ``HANDLEDFILES_<id>`` and the mirror's
   ``lastSuccessfulSync`` (which every successful scan, Go's included, sets to the current second),
   so a removed mirror, a hand-edited set or a missing log also fail the check.  One exception
   keeps the skip useful for a mirror whose rsync is dead and FTP works: a failed attempt of ours
   that began with a valid record and wrote nothing of the index moves the log witness past its
   own two events (:func:`forward_record`); it held the scan lock throughout, so no scan of anyone
   else's can hide in between.  A failed Go scan still voids the record: it may have failed after
   writing part of the index.  ``OBJECT`` and
   ``DEBUG`` are not used: neither tells that a key was rewritten, and the latter is disabled by
   default.
3. **FILES**: not witnessed but checked, at the end of the listing, inside Redis: with ``H`` =
   ``HANDLEDFILES_<id>``, ``|FILES ∩ H| = |H|`` (every handled path is still in ``FILES``) and
   ``|FILES ∩ MIRRORFILES_<id>| = |H|`` (no listed path joined ``FILES``).  Since ``H`` was built as a
   subset of ``MIRRORFILES_<id>``, which (2) proves unchanged, both equalities hold exactly when ``H``
   is still the intersection, whoever ran the local scan (Go rewrites ``FILES`` wholesale on every
   run, identical or not, so a witness of ``FILES`` would fail after each of them).  It costs Redis
   one pass over the smaller sets (``SINTERCARD`` on Redis >= 7, ``SINTER`` before), no write.

**How (2) could be fooled**, and what then: a Go scan whose "scan started" ``RPUSH`` failed while its
commit succeeded (a connection from its pool refused while the scan's own connection worked, or an
out-of-memory refusal of that one write), whose commit kept both set sizes and landed in the same
second as our last ``lastSuccessfulSync``, between two of our scans whose listings are identical
while Go's differed.  The index would then describe Go's listing until the mirror's listing
changes or :data:`FULL_COMPARISON_EVERY` has passed since our last full comparison, whichever
comes first: the record is only trusted for that long, so any damage (an evicted ``FILEINFO`` key,
a hand edit) is repaired within a day, as Go repairs it at its next scan.  Every other mismatch,
including a record we could not write, leads to the full comparison, never to a skip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from twisted.logger import Logger

from mirrorbits import gocompat
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, RedisUnavailable, ResponseError
from mirrorbits.redis.replies import as_int, as_list, as_str

log = Logger(namespace="mirrorbits.scan")

#: A record older than this (seconds since the last full comparison) is not trusted: the next scan
#: compares everything again, so an index damaged behind our back is repaired within a day.
FULL_COMPARISON_EVERY = 86400

_VERSION = "1"


def new_digest() -> hashlib.blake2b:
    """The running digest of a listing's staged records."""
    return hashlib.blake2b(digest_size=16)


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the record says the last fully compared listing was, once (2) held at the scan's start."""

    digest: str
    files: int
    #: Unix time of that full comparison (kept while rescans are skipped).
    compared: int


def _keys(mirror_id: int) -> list[str]:
    return [schema.mirror_scan_digest_key(mirror_id), schema.mirror_logs_key(mirror_id), schema.mirror_files_key(mirror_id),
            schema.handled_files_key(mirror_id), schema.mirror_key(mirror_id)]


# KEYS: record, MIRRORLOGS, MIRRORFILES, HANDLEDFILES, MIRROR.   ARGV: now, max age.
# Returns {digest, files, compared} when the record holds, else {"", reason}.
_CHECK = """
local r = redis.call('hmget', KEYS[1], 'v', 'digest', 'files', 'logLen', 'logTail', 'mirrorFiles',
                     'handled', 'lastSuccessfulSync', 'compared')
if r[1] ~= '""" + _VERSION + """' then return {'', 'no record'} end
if redis.call('llen', KEYS[2]) ~= tonumber(r[4]) then return {'', 'mirror log'} end
local tail = redis.call('lindex', KEYS[2], -1)
if not tail or redis.sha1hex(tail) ~= r[5] then return {'', 'mirror log'} end
if redis.call('scard', KEYS[3]) ~= tonumber(r[6]) then return {'', 'MIRRORFILES'} end
if redis.call('scard', KEYS[4]) ~= tonumber(r[7]) then return {'', 'HANDLEDFILES'} end
if (redis.call('hget', KEYS[5], 'lastSuccessfulSync') or '') ~= r[8] then
    return {'', 'lastSuccessfulSync'}
end
if tonumber(ARGV[1]) - tonumber(r[9]) >= tonumber(ARGV[2]) then return {'', 'age'} end
return {r[2], r[3], r[9]}
"""

# KEYS: as _CHECK.  ARGV: digest, files, our "scan completed" log element, the log's length after
# it, compared.  Written only if that element is still the log's last; otherwise the record is
# dropped (the next scan compares everything).
_RECORD = """
if redis.call('llen', KEYS[2]) ~= tonumber(ARGV[4]) or redis.call('lindex', KEYS[2], -1) ~= ARGV[3] then
    redis.call('del', KEYS[1])
    return 0
end
redis.call('hmset', KEYS[1], 'v', '""" + _VERSION + """', 'digest', ARGV[1], 'files', ARGV[2],
           'logLen', ARGV[4], 'logTail', redis.sha1hex(ARGV[3]),
           'mirrorFiles', redis.call('scard', KEYS[3]), 'handled', redis.call('scard', KEYS[4]),
           'lastSuccessfulSync', redis.call('hget', KEYS[5], 'lastSuccessfulSync') or '',
           'compared', ARGV[5])
return 1
"""

# KEYS: record, MIRRORLOGS.  ARGV: our last log element, the log's length after it.
# A failed attempt of ours that wrote nothing but its events moves the record's log witness past
# them (only if the record exists and that element is still the log's last).
_FORWARD = """
if redis.call('hget', KEYS[1], 'v') ~= '""" + _VERSION + """' then return 0 end
if redis.call('llen', KEYS[2]) ~= tonumber(ARGV[2]) or redis.call('lindex', KEYS[2], -1) ~= ARGV[1] then
    redis.call('del', KEYS[1])
    return 0
end
redis.call('hmset', KEYS[1], 'logLen', ARGV[2], 'logTail', redis.sha1hex(ARGV[1]))
return 1
"""

# KEYS: FILES, MIRRORFILES, HANDLEDFILES.  ARGV: "1" when SINTERCARD exists.
# Returns |HANDLEDFILES| when it is still FILES ∩ MIRRORFILES, else -1.
_FILES_CHECK = """
local function inter(a, b)
    if ARGV[1] == '1' then return redis.call('sintercard', 2, a, b) end
    return #redis.call('sinter', a, b)
end
local h = redis.call('scard', KEYS[3])
if inter(KEYS[1], KEYS[3]) ~= h or inter(KEYS[1], KEYS[2]) ~= h then return -1 end
return h
"""


async def check_record(redis: RedisClient, mirror_id: int, now: int) -> Candidate | None:
    """(2): the record of the last full comparison, if nobody rewrote the index since.  Run under
    the scan lock and before our own "scan started" event.  Any error means "no"."""
    keys = _keys(mirror_id)
    try:
        reply = as_list(await redis.execute("EVAL", _CHECK, str(len(keys)), *keys, str(now),
                                            str(FULL_COMPARISON_EVERY)))
    except (RedisUnavailable, ResponseError) as e:
        log.warn("[{id}] cannot read the scan digest: {err}", id=mirror_id, err=e)
        return None
    digest = as_str(reply[0]) or ""
    if not digest:
        log.debug("[{id}] full comparison: {why}", id=mirror_id, why=as_str(reply[1]))
        return None
    return Candidate(digest, as_int(reply[1]), as_int(reply[2]))


async def handled_if_current(redis: RedisClient, mirror_id: int) -> int | None:
    """(3): ``|HANDLEDFILES_<id>|`` if it is still ``FILES ∩ MIRRORFILES_<id>``, else None."""
    version = redis.server_version
    sintercard = bool(version) and (gocompat.redis_version_number(version)
                                    >= gocompat.redis_version_number("7.0.0"))
    keys = [schema.FILES, schema.mirror_files_key(mirror_id), schema.handled_files_key(mirror_id)]
    known = as_int(await redis.execute("EVAL", _FILES_CHECK, str(len(keys)), *keys,
                                       "1" if sintercard else "0"))
    return known if known >= 0 else None


async def write_record(redis: RedisClient, mirror_id: int, digest: str, files: int,
                       completed: tuple[str, int] | None, compared: int) -> None:
    """Record the listing just committed (or proven unchanged) once our "scan completed" event
    ``completed`` (the element and the log's length after it) is in the log; without it (the log
    write failed) the record is dropped.  Errors are logged: a missing record costs a full
    comparison, nothing else."""
    keys = _keys(mirror_id)
    try:
        if completed is None:
            await redis.execute("DEL", keys[0])
            return
        entry, length = completed
        await redis.execute("EVAL", _RECORD, str(len(keys)), *keys, digest, str(files), entry,
                            str(length), str(compared))
    except (RedisUnavailable, ResponseError) as e:
        log.warn("[{id}] cannot write the scan digest: {err}", id=mirror_id, err=e)


async def forward_record(redis: RedisClient, mirror_id: int, last: tuple[str, int] | None) -> None:
    """After a failed attempt of ours that began with a valid record (so under our lock, with
    nobody else's scan in between) and wrote nothing of the index: the record still describes the
    index, so its log witness moves past our "scan started" and error events, and the next attempt
    (the FTP fallback after a failed rsync, say) can still skip.  ``last`` is our error event."""
    keys = _keys(mirror_id)[:2]
    try:
        if last is None:
            await redis.execute("DEL", keys[0])
            return
        entry, length = last
        await redis.execute("EVAL", _FORWARD, str(len(keys)), *keys, entry, str(length))
    except (RedisUnavailable, ResponseError) as e:
        log.warn("[{id}] cannot write the scan digest: {err}", id=mirror_id, err=e)
