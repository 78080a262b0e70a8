"""Schema version check at start-up and the v0→v1→v2 upgraders.

Go and Python nodes share one database, so the upgraders write exactly what the Go ones write,
quirks included: each works on temporary ``V<n>_`` copies and commits in one best-effort
``MULTI``/``EXEC`` (a failing ``RENAME`` inside it does not stop the others, and the version is set
anyway), the all-time ``STATS_MIRROR`` hash is not converted, and ``FILEMIRRORS_<path>`` keeps its
names when none of them maps to a mirror.

Where the Go original hangs or loses data we do better (each place says so):

* a version above 2 (or a value that is not an integer) stops start-up with a clear
  :class:`UnsupportedSchema` instead of retrying silently for ever; the database is not touched;
* the version is read again once ``LOCK_upgrade`` is ours, so an instance that waited for another
  one never re-runs an upgrader on an already upgraded database;
* Redis going away during an upgrade makes us start over (the temporary keys make that safe)
  instead of exiting;
* the commit is not sent when the keep-alive of ``LOCK_upgrade`` says the lock was lost, so two
  instances never commit over each other's temporary keys;
* renames whose target is also a source (numeric v0 mirror names) are ordered so no data is
  overwritten before it has been moved.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TypeVar

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mirrorbits import gocompat
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, RedisUnavailable, ResponseError
from mirrorbits.redis.locks import GenericLock
from mirrorbits.redis.protocol import Reply
from mirrorbits.redis.replies import as_int, as_str, as_str_list

log = Logger(namespace="mirrorbits.redis.upgrade")

#: Pause between two attempts while Redis is loading, unreachable or another instance upgrades.
RETRY_DELAY = 0.1
#: Commands per pipelined write while reading or preparing data (keeps replies bounded in memory).
BATCH = 1000

#: Deletes every key matching ARGV[1], 5000 keys per DEL (the first step of every upgrade).  The Go script returns
#: the key names; the count is enough for us and keeps a big reply off the wire.
DELETE_MATCHING = """
local keys = redis.call('keys', ARGV[1])
for i=1,#keys,5000 do
    redis.call('del', unpack(keys, i, math.min(i+4999, #keys)))
end
return #keys
"""

UPGRADE_LOCK = "upgrade"
#: Redis errors that say "not now" rather than "bad data".
_TRANSIENT = ("LOADING", "READONLY", "MASTERDOWN", "BUSY ", "TRYAGAIN")


class UnsupportedSchema(Exception):
    """The database was written by a newer Mirrorbits (or holds a garbled version): do not start."""


class UpgradeError(Exception):
    """An upgrader met data it cannot convert (the Go original exits with "Upgrade failed")."""


class _Restart(Exception):
    """Internal: start the check over (Redis went away, or the upgrade lock was lost)."""


def _sleep(reactor: IReactorTime, seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int = BATCH) -> Iterable[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _raise_errors(replies: Sequence[Reply], what: str) -> None:
    for r in replies:
        if isinstance(r, ResponseError):
            raise UpgradeError(f"{what}: {r}")


# -- version detection ----------------------------------------------------------------------------

async def read_version(client: RedisClient, *, reactor: IReactorTime | None = None) -> int:
    """The schema version; stamps a fresh database with ``2``.

    Waits while Redis is loading its dataset.  Connection errors propagate (the caller retries);
    a value that is not an integer raises :class:`UnsupportedSchema` (Go retries that for ever).
    """
    reactor = reactor if reactor is not None else client.reactor
    while True:
        try:
            value = await client.execute("GET", schema.DB_VERSION_KEY, unblocked=True)
            break
        except ResponseError as e:
            if not str(e).startswith("LOADING"):
                raise
            await _sleep(reactor, RETRY_DELAY)
    if value is None:
        if await client.execute("EXISTS", schema.MIRRORS, unblocked=True):
            return 0
        await client.execute("SET", schema.DB_VERSION_KEY, str(schema.DB_VERSION), unblocked=True)
        return schema.DB_VERSION
    try:
        return gocompat.parse_go_int(str(value))
    except ValueError:
        raise UnsupportedSchema(
            f"invalid database version {value!r} in {schema.DB_VERSION_KEY} "
            f"(this program handles version {schema.DB_VERSION})") from None


def _unsupported(version: int) -> UnsupportedSchema:
    return UnsupportedSchema(f"unsupported database version {version} "
                             f"(this program handles version {schema.DB_VERSION})")


async def check_and_upgrade(client: RedisClient, *, reactor: IReactorTime | None = None) -> int:
    """Find the schema version, upgrade a v0/v1 database, then open the readiness gate.

    Call it once at start-up (``Deferred.fromCoroutine(check_and_upgrade(client))``); on success it
    calls ``client.set_ready()`` itself and returns the version the database had when first read
    (2 for a current or fresh database, 0 or 1 when it was upgraded here or by another instance).

    While Redis is loading or unreachable it retries every 100 ms, so the daemon stays up.  It raises
    :class:`UnsupportedSchema` (already logged, database untouched) for a version above 2, and
    :class:`UpgradeError` when an upgrader meets data it cannot convert; the caller stops start-up
    on both.
    """
    reactor = reactor if reactor is not None else client.reactor
    first: int | None = None
    waiting_logged = False
    last_error = ""
    while True:
        try:
            version = await read_version(client, reactor=reactor)
            if first is None:
                first = version
            if version > schema.DB_VERSION:
                raise _unsupported(version)
            if version == schema.DB_VERSION:
                break
            started = time.monotonic()
            upgraded = await _upgrade_locked(client, reactor)
            if upgraded is None:
                if not waiting_logged:
                    log.info("Database upgrade running. Waiting for completion...")
                    waiting_logged = True
                await _sleep(reactor, RETRY_DELAY)
                continue
            if upgraded:
                took = round((time.monotonic() - started) * 1000) * 1_000_000  # Go: Round(ms)
                log.info("Database upgrade successful (took {took}), starting normally",
                         took=gocompat.format_duration(took))
            break
        except UnsupportedSchema as e:
            log.critical("{error}", error=str(e))
            raise
        except UpgradeError as e:
            log.critical("Upgrade failed: {error}", error=str(e))
            raise
        except (RedisUnavailable, _Restart) as e:
            log.debug("schema check: {e}; retrying", e=e)
            await _sleep(reactor, RETRY_DELAY)
        except ResponseError as e:
            # A Redis error of the version check itself (OOM, MISCONF...): retry, as the Go loop
            # does for every error there, but say so once instead of looping silently.
            if str(e) != last_error:
                log.error("Database version check failed, retrying: {e}", e=e)
                last_error = str(e)
            await _sleep(reactor, RETRY_DELAY)
    client.set_ready()
    assert first is not None
    return first


async def _upgrade_locked(client: RedisClient, reactor: IReactorTime) -> bool | None:
    """The upgrades, under ``LOCK_upgrade``.  None: another instance holds the lock.  False: nothing was
    left to do.  True: we upgraded."""
    lock = GenericLock(client, UPGRADE_LOCK, clock=reactor)
    if not await lock.acquire():
        return None
    try:
        # Read again under the lock: the instance we waited for may have finished meanwhile.
        version = await read_version(client, reactor=reactor)
        if version > schema.DB_VERSION:
            raise _unsupported(version)
        if version == schema.DB_VERSION:
            return False

        def guard() -> None:
            if lock.lost:
                raise _Restart("lost LOCK_upgrade before the commit")

        for target in range(version + 1, schema.DB_VERSION + 1):
            log.warn("Upgrading database from version {a} to version {b}...", a=target - 1, b=target)
            try:
                await UPGRADERS[target](client, guard)
            except (RedisUnavailable, _Restart, UpgradeError):
                raise
            except ResponseError as e:
                if str(e).startswith(_TRANSIENT):
                    # A failover or a restart under us: the temporary keys make a new run safe.
                    raise _Restart(str(e)) from e
                raise UpgradeError(f"upgrade to version {target} failed: {e}") from e
        return True
    finally:
        await lock.release()


# -- helpers shared by the upgraders ----------------------------------------------------------------

async def delete_matching(client: RedisClient, pattern: str) -> int:
    """Delete every key matching ``pattern`` server-side, in DELs of 5000 keys; returns the count."""
    return as_int(await client.execute("EVAL", DELETE_MATCHING, "0", pattern, unblocked=True))


async def copy_key(client: RedisClient, src: str, dst: str) -> bool:
    """``DUMP src`` + ``RESTORE dst 0 <dump> REPLACE``; False when ``src`` does not exist.

    The DUMP payload is binary; the client decodes it as UTF-8 with ``surrogateescape``, which
    re-encodes to the very same bytes.
    """
    dump = as_str(await client.execute("DUMP", src, unblocked=True))
    if dump is None:
        return False
    payload = dump.encode("utf-8", "surrogateescape")
    await client.execute("RESTORE", dst, "0", payload, "REPLACE", unblocked=True)
    return True


def order_renames(plan: dict[str, str]) -> list[tuple[str, str]]:
    """The planned renames, each one placed after the rename that moves its target away.

    Go sends them in map order, so with a v0 mirror named like another mirror's new id (``"2"``)
    one ``FILEINFO_*`` could overwrite another before it moved.  A cycle cannot be ordered and
    keeps plan order (the Go outcome).
    """
    out: list[tuple[str, str]] = []
    state: dict[str, int] = {}  # 1 = being placed, 2 = placed
    for root in plan:
        if root in state:
            continue
        # Walk the chain root -> plan[root] -> ... while the targets are themselves sources.
        chain = [root]
        state[root] = 1
        while True:
            dst = plan[chain[-1]]
            if dst in plan and dst not in state:
                chain.append(dst)
                state[dst] = 1
                continue
            break
        for src in reversed(chain):
            state[src] = 2
            out.append((src, plan[src]))
    return out


async def _commit(client: RedisClient, renames: dict[str, str], deletes: Sequence[str],
                  version: int, guard: Callable[[], None] | None) -> None:
    """The final best-effort transaction: renames, deletes, then the new version."""
    commands: list[tuple[str, ...]] = [("RENAME", src, dst) for src, dst in order_renames(renames)]
    targets = set(renames.values())
    commands.extend(("DEL", key) for key in deletes if key not in targets)
    commands.append(("SET", schema.DB_VERSION_KEY, str(version)))
    if guard is not None:
        guard()
    replies = await client.transaction(commands, unblocked=True)
    failed = sum(1 for r in replies if isinstance(r, ResponseError))
    if failed:
        # Expected: e.g. RENAME of a temporary key that was never created (a Go quirk of the v1 upgrade).
        log.debug("upgrade to v{v}: {n} command(s) of the commit failed (ignored, as in Go)",
                  v=version, n=failed)


# -- v0 -> v1 -------------------------------------------------------------------------------------

async def upgrade_v1(client: RedisClient, guard: Callable[[], None] | None = None) -> None:
    """v0 → v1: mirrors identified by name become numeric ids."""
    renames: dict[str, str] = {}
    deletes: list[str] = []

    await delete_matching(client, "V1_*")

    # 2. Ids, in list order.
    names = as_str_list(await client.execute("LRANGE", schema.MIRRORS, "0", "-1", unblocked=True))
    mirrors: list[tuple[int, str]] = []
    ids: dict[str, int] = {}
    for name in names:
        mid = as_int(await client.execute("INCR", schema.LAST_MID, unblocked=True))
        await client.execute("HSET", schema.upgrade_tmp_key(1, schema.MIRRORS), str(mid), name,
                             unblocked=True)
        mirrors.append((mid, name))
        ids.setdefault(name, mid)  # a duplicated name maps to its first id, consistently
    renames[schema.upgrade_tmp_key(1, schema.MIRRORS)] = schema.MIRRORS

    # 3. Per-mirror keys.
    for mid, name in mirrors:
        try:
            files = as_str_list(await client.execute("SMEMBERS", schema.v0_mirror_files_key(name),
                                                     unblocked=True))
        except ResponseError as e:
            if str(e) == "ERR no such key":
                continue
            raise UpgradeError(f"{schema.v0_mirror_files_key(name)}: {e}") from e
        for path in files:
            renames.setdefault(schema.v0_file_info_key(name, path), schema.file_info_key(mid, path))
        renames.setdefault(schema.v0_mirror_files_key(name), schema.mirror_files_key(mid))
        renames.setdefault(schema.v0_handled_files_key(name), schema.handled_files_key(mid))

    # 4. FILEMIRRORS_<path> of the local files: names -> ids.
    local = as_str_list(await client.execute("SMEMBERS", schema.FILES, unblocked=True))
    for chunk in _chunks(local):
        members = await client.pipeline([("SMEMBERS", schema.file_mirrors_key(p)) for p in chunk],
                                        unblocked=True)
        _raise_errors(members, "FILEMIRRORS_*")
        adds = []
        for path, owners in zip(chunk, members, strict=True):
            mapped = [str(ids[n]) for n in as_str_list(owners) if n in ids]
            tmp = schema.upgrade_tmp_key(1, schema.file_mirrors_key(path))
            if mapped:
                adds.append(("SADD", tmp, *mapped))
            # Planned even when nothing mapped: the RENAME then fails at commit and the name-based
            # set stays (a Go quirk, kept for identical results with Go).
            renames[tmp] = schema.file_mirrors_key(path)
        if adds:
            _raise_errors(await client.pipeline(adds, unblocked=True), "V1_FILEMIRRORS_*")

    # 5. MIRROR_<name> -> MIRROR_<id>, with ID and name fields.
    for mid, name in mirrors:
        tmp = schema.upgrade_tmp_key(1, schema.mirror_key(mid))
        if not await copy_key(client, schema.v0_mirror_key(name), tmp):
            # Go fails here too (DUMP of a missing key): a listed mirror without its hash.
            raise UpgradeError(f"{schema.v0_mirror_key(name)}: no such key (mirror {name!r} is "
                               f"listed in MIRRORS)")
        await client.execute("HMSET", tmp, "ID", str(mid), "name", name, unblocked=True)
        renames[tmp] = schema.mirror_key(mid)
        deletes.append(schema.v0_mirror_key(name))

    # 6. Dated STATS_MIRROR_* and STATS_MIRROR_BYTES*: field names -> ids.  KEYS STATS_MIRROR_*
    #    does not match the all-time STATS_MIRROR, which therefore keeps its names (Go quirk).
    stat_keys = as_str_list(await client.execute("KEYS", "STATS_MIRROR_*", unblocked=True))
    for key in stat_keys:
        pairs = await client.hgetall(key, unblocked=True)
        tmp = schema.upgrade_tmp_key(1, key)
        sets = [("HSET", tmp, str(ids[n]), value) for n, value in pairs.items() if n in ids]
        for batch in _chunks(sets):
            _raise_errors(await client.pipeline(batch, unblocked=True), tmp)
        renames[tmp] = key

    # 7. Commit.
    await _commit(client, renames, deletes, 1, guard)


# -- v1 -> v2 -------------------------------------------------------------------------------------

async def upgrade_v2(client: RedisClient, guard: Callable[[], None] | None = None) -> None:
    """v1 → v2: the single ``up``/``excludeReason`` become per-protocol fields."""
    renames: dict[str, str] = {}

    await delete_matching(client, "V2_*")

    keys = as_str_list(await client.execute("KEYS", "MIRROR_*", unblocked=True))
    for key in keys:
        kind = await client.execute("TYPE", key, unblocked=True)
        if kind != "hash":
            # Go fails with WRONGTYPE on such a leftover; it is no mirror, so we leave it alone.
            log.warn("upgrade to v2: {key} is a {kind}, not a mirror hash: left as it is",
                     key=key, kind=kind)
            continue
        tmp = schema.upgrade_tmp_key(2, key)
        if not await copy_key(client, key, tmp):
            log.warn("upgrade to v2: {key} disappeared meanwhile, skipped", key=key)
            continue
        fields = await client.pipeline(
            [("HGET", tmp, "http"), ("HGET", tmp, "up"), ("HGET", tmp, "excludeReason")],
            unblocked=True)
        _raise_errors(fields, tmp)
        url, up, reason = (as_str(f) for f in fields)
        if url is None:
            raise UpgradeError(f"{key}: the mirror has no http field")
        up_flag: str | None = None
        if up is not None:
            try:
                up_flag = "1" if gocompat.parse_go_bool(up) else "0"
            except ValueError as e:
                raise UpgradeError(f"{key}: field up: {e}") from None
        proto = "https" if url.startswith("https://") else "http"
        commands: list[tuple[str, ...]] = []
        if up_flag is not None:
            commands += [("HSET", tmp, f"{proto}Up", up_flag), ("HDEL", tmp, "up")]
        if reason is not None:
            commands += [("HSET", tmp, f"{proto}DownReason", reason), ("HDEL", tmp, "excludeReason")]
        _raise_errors(await client.transaction(commands, unblocked=True), tmp)
        renames[tmp] = key

    await _commit(client, renames, (), 2, guard)


#: Upgrader producing each version (read-only: no mutable module state).
UPGRADERS: Mapping[int, Callable[[RedisClient, Callable[[], None] | None], Awaitable[None]]] = \
    MappingProxyType({1: upgrade_v1, 2: upgrade_v2})
