"""The redirector's in-memory view of Redis: file info, file -> mirrors, mirrors, mirror file info.

Why: the Go original keeps four small LRU caches and, on a miss, pays ~60 Redis round trips for one
request.  Here one process keeps a compact view of what the hot path needs:

* per path a :class:`PathEntry` with the local :class:`~mirrorbits.model.FileInfo`, the member ids
  of ``FILEMIRRORS_<path>`` and, in a parallel tuple, each member's ``FILEINFO`` as a shared
  :class:`selection.MirrorFile`, and the ``(Candidate, MirrorFile)`` pairs that
  :func:`selection.select_mirrors` takes (:class:`Pairs`: two tuples, not one 2-tuple per mirror),
  composed once and reused until something they depend on changes.  A few objects per path, not
  per (path, mirror): at the default capacity and ~35 mirrors per file the view holds ~115,000
  paths (a million-file repository: ``bench/million_load.py``);
* per mirror one :class:`selection.Candidate`, built (with all its per-mirror derivations) once per
  mirror load, carrying the parsed :class:`~mirrorbits.model.Mirror` for the JSON renderer.

A request whose path is in the view is answered without touching Redis (:meth:`MirrorView.lookup`
is synchronous).  A miss loads everything the path needs in two pipelined round trips
(:meth:`MirrorView.load`), shared by concurrent requests for the same path.  Negative answers (file
unknown, empty mirror set, mirror hash gone) are kept too.

Invalidation follows the Go pub/sub channels, with one improvement: instead of
dropping an entry and making the next request wait for Redis, a message *refreshes* the entry in the
background (coalesced, pipelined) and the old value keeps answering until the new one arrives — the
same as the message arriving one round trip later.  After a pub/sub reconnect (messages may have
been missed) the view is cleared and warmed again.  While Redis is down nothing is cleared, so known
files are still served from memory.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, overload

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.ipfamily import FamilyStates, read_family_health
from mirrorbits.model import EmptyMirrorHash, FileInfo, Mirror
from mirrorbits.reactor import default_reactor
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, Subscription
from mirrorbits.redis.protocol import Command, Reply
from mirrorbits.redis.replies import as_list, as_str, as_str_list, hash_dict
from mirrorbits.selection import Candidate, FilePlan, MirrorFile, MirrorSource

__all__ = [
    "LRU",
    "MirrorView",
    "Pairs",
    "PathEntry",
    "ViewCollector",
    "candidate_from_mirror",
    "mirror_state_families",
]

log = Logger(namespace="mirrorbits.cache")

#: Capacity of the path table in "mirror file" units (one per path plus one per mirror of it):
#: Go's mirror-file-info cache holds 4,096,000 cost units; the same bound keeps us well under 1 GB.
DEFAULT_CAPACITY = 4_096_000
#: The cyclic collector's thresholds in a process serving from a warm view (see
#: :func:`freeze_long_lived`); CPython's defaults are (700, 10, 10).
GC_THRESHOLDS = (2_000, 10, 1_000)
#: Distinct (size, modTime) texts whose parsed MirrorFile is kept for reuse.
MIRROR_FILE_INTERN = 8192
#: Paths per warm-up / refresh batch: bounded pipelines keep the reactor responsive.
BATCH = 50
#: Messages are coalesced for this long before one pipelined refresh.
REFRESH_DELAY = 0.002
#: A failed background refresh is retried after this delay (the old value keeps answering).
RETRY_DELAY = 1.0
#: Deadline of a miss's load unless the config says otherwise (``RedisLoadTimeout``): a request
#: waits no longer for Redis (it falls back instead), and a load of a hung Redis leaves the
#: in-flight table then, so the next request asks again.
LOAD_TIMEOUT = 2.0


def freeze_long_lived() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight (``gc.freeze``).

    Why: a warm view is millions of small objects; CPython's full collections scan all of them
    (measured: 100-400 ms pauses of the reactor every few seconds under load, collecting nothing),
    which showed up as p99 latencies near 1 s and wrk timeouts.  The view's objects have no
    reference cycles, so they are still freed by reference counting when replaced.  The price: an
    object alive at this moment that later becomes part of a reference cycle (e.g. a connection
    open now) is never collected; that is bounded, as this runs once per warm-up (start and
    after a pub/sub reconnect), not periodically.

    It also sets the collector's thresholds to :data:`GC_THRESHOLDS`.  Why: when the repository
    has more paths than the view holds (a million files), the LRU replaces entries all the time;
    the new ones are not frozen, so the old generation grows back to the size of the view, and
    with CPython's default thresholds (700, 10, 10) a full collection ran every 5-20 s under
    Zipf traffic, each walking ~1.5 million objects (measured: 1.4-4.8 s pauses, wrk timeouts).
    A young threshold of 2,000 lets more of a request's short-lived objects die before any
    collection (fewer are promoted), and a full collection is considered every 1,000 middle ones
    instead of 10, i.e. after ~20 million net allocations (none in 9 minutes of that traffic).
    Garbage cycles are still collected, later.  (A young threshold of 10,000 did as well on the
    million files but cost the 5,000-file redirect path ~8 us of CPU per request, ~10%:
    bigger young collections.)
    """
    gc.collect(1)  # the young garbage of the warm-up itself, cheaply
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# ---------------------------------------------------------------------------------------------
# LRU with costs (the semantics of the Go original's mirrors/cache LRU)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Slot(Generic[V]):
    __slots__ = ("value", "cost")

    def __init__(self, value: V, cost: int) -> None:
        self.value = value
        self.cost = cost


class LRU(Generic[K, V]):
    """A cost-bounded LRU: a hit moves the entry to the front, inserting past ``capacity`` evicts
    from the back until the total cost fits, re-setting a key updates its cost in place."""

    __slots__ = ("capacity", "size", "_data", "on_evict")

    def __init__(self, capacity: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        self.capacity = capacity
        self.size = 0
        self._data: OrderedDict[K, _Slot[V]] = OrderedDict()
        self.on_evict = on_evict

    def get(self, key: K) -> V | None:
        """The value for ``key`` (moving it to the front), or None."""
        item = self._data.get(key)
        if item is None:
            return None
        self._data.move_to_end(key, last=False)
        return item.value

    def peek(self, key: K) -> V | None:
        """The value for ``key`` without touching its recency, or None."""
        item = self._data.get(key)
        return None if item is None else item.value

    def set(self, key: K, value: V, cost: int = 1) -> None:
        item = self._data.get(key)
        if item is not None:
            self.size += cost - item.cost
            item.value = value
            item.cost = cost
        else:
            self._data[key] = _Slot(value, cost)
            self.size += cost
        self._data.move_to_end(key, last=False)
        self._trim()

    def set_cost(self, key: K, cost: int) -> None:
        """Change the cost of an entry that was just updated (it becomes the most recent)."""
        item = self._data.get(key)
        if item is not None:
            self.size += cost - item.cost
            item.cost = cost
            self._data.move_to_end(key, last=False)
            self._trim()

    def _trim(self) -> None:
        data = self._data
        while self.size > self.capacity and data:
            key, item = data.popitem(last=True)
            self.size -= item.cost
            if self.on_evict is not None:
                self.on_evict(key, item.value)

    def delete(self, key: K) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self.size -= item.cost
        return True

    def clear(self) -> None:
        self._data.clear()
        self.size = 0

    def keys(self) -> list[K]:
        """Keys from most to least recently used."""
        return list(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))


# ---------------------------------------------------------------------------------------------
# Records


#: The fields of a mirror record that every scan rewrites at its end (as Go's does) and that no
#: selection reads: only the renderers (JSON answers, pages, metrics) show them.
SYNC_BOOKKEEPING = ("last_sync", "last_successful_sync", "last_successful_sync_protocol",
                    "last_mod_time")


def only_sync_bookkeeping_changed(old: Mirror, new: Mirror) -> bool:
    """True when ``new`` differs from ``old`` in :data:`SYNC_BOOKKEEPING` fields alone."""
    return dataclasses.replace(old, **{f: getattr(new, f) for f in SYNC_BOOKKEEPING}) == new


def refresh_sync_bookkeeping(cand: Candidate, new: Mirror) -> None:
    """Give ``cand`` the record ``new`` (differing only in :data:`SYNC_BOOKKEEPING`) in place.

    Why in place: a new Candidate bumps the view's mirror generation, which drops every composed
    selection input and every plan built on the old one; each mirror scan ends with such a record
    update (120 of them in a ``scan -all`` of 60 mirrors), and rebuilding the plans after each
    made the redirector's p99 jump while mirrors were rescanned.  Nothing selection reads changes
    here; the renderers read ``mirror`` and the JSON parts cached on ``source``, both replaced.
    """
    object.__setattr__(cand, "mirror", new)  # frozen for selection's sake; these fields it never reads
    if cand.source is not None:
        cand.source.mirror = new
        cand.source.json_parts = None


def candidate_from_mirror(m: Mirror, families: FamilyStates | None = None) -> Candidate:
    """A selection Candidate with every per-mirror value precomputed, from a parsed record and its
    per-family probes (``SelectByIPFamily``)."""
    return Candidate(m, source=MirrorSource(m), families=families or {})


if TYPE_CHECKING:
    _Slice = slice[int | None, int | None, int | None]


class Pairs(Sequence[tuple[Candidate, MirrorFile | None]]):
    """The composed selection input of one path: ``(Candidate, MirrorFile)`` pairs, stored as two
    parallel tuples.

    Why not a tuple of 2-tuples: with tens of mirrors per file, the 2-tuples were most of the
    view's memory (56 bytes each) and most of its objects, all of them tracked by the cyclic
    garbage collector; with a million-file repository the LRU keeps replacing entries, and every
    full collection walked all of them (pauses of 1-2 s, measured).  Two tuples hold the same
    references in a fifth of the space and two tracked objects; iteration (``zip``, in C)
    hands out the same pairs, so :func:`~mirrorbits.selection.select_mirrors` and
    :func:`~mirrorbits.selection.fastpath.plan_file` read it like the tuple it replaces.
    """

    __slots__ = ("candidates", "files")

    def __init__(self, candidates: tuple[Candidate, ...], files: tuple[MirrorFile | None, ...]) -> None:
        self.candidates = candidates
        self.files = files

    def __iter__(self) -> Iterator[tuple[Candidate, MirrorFile | None]]:
        return zip(self.candidates, self.files)  # noqa: B905 - built with equal lengths

    def __len__(self) -> int:
        return len(self.candidates)

    @overload
    def __getitem__(self, index: int) -> tuple[Candidate, MirrorFile | None]: ...

    @overload
    def __getitem__(self, index: _Slice) -> Sequence[tuple[Candidate, MirrorFile | None]]: ...

    def __getitem__(self, index: int | _Slice
                    ) -> tuple[Candidate, MirrorFile | None] | Sequence[tuple[Candidate, MirrorFile | None]]:
        if isinstance(index, slice):
            return tuple(zip(self.candidates[index], self.files[index]))  # noqa: B905
        return self.candidates[index], self.files[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pairs):
            return self.candidates == other.candidates and self.files == other.files
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking: compared, never hashed

    def __repr__(self) -> str:
        return f"Pairs({tuple(self)!r})"


#: What selection takes for one file: (mirror, the mirror's copy of the file) pairs.
SelectionInput = Sequence[tuple[Candidate, MirrorFile | None]]


class PathEntry:
    """Everything the view knows about one repository path.

    ``ids`` is None until ``FILEMIRRORS_<path>`` was read; ``files`` is aligned with ``ids``: each
    member's ``FILEINFO`` (None when that hash does not exist); ``pairs`` is the composed selection
    input (a :class:`Pairs` when the view composed it), valid while ``gen`` equals the view's
    mirror generation.

    Memory: one slotted object and a few tuples per path (no per-mirror dict or tuple): a view at
    its default capacity holds ~100,000 paths of ~35 mirrors each.
    """

    __slots__ = ("path", "info", "ids", "files", "pairs", "gen", "plans")

    def __init__(self, path: str, info: FileInfo | None = None) -> None:
        self.path = path
        self.info = info
        self.ids: tuple[int, ...] | None = None
        self.files: tuple[MirrorFile | None, ...] = ()
        self.pairs: SelectionInput | None = None
        self.gen = -1
        #: Free for the redirector: what it derived from ``pairs`` (it checks they are the same):
        #: ``(pairs, the config state it planned with, {verdict_index(secure, family): FilePlan})``.
        self.plans: tuple[SelectionInput, object, dict[int, FilePlan]] | None = None

    @property
    def mfiles(self) -> dict[int, MirrorFile | None]:
        """Each member id's ``FILEINFO`` (None when that hash does not exist), as a new dict."""
        return dict(zip(self.ids or (), self.files))  # noqa: B905 - aligned by _apply_path

    @property
    def known(self) -> bool:
        """The local file has a modification time (Go: selection may run)."""
        return self.info is not None and self.info.mod_time_ns is not None


#: Reads everything one path needs in one call (file fields, members, each member's FILEINFO),
#: returned as JSON: ``[[size, modTime, sha1, sha256, md5, [id, size, modTime, ...]], ...]``, with
#: ``false`` for a missing field.  Read-only; the keys are the Go schema's (mirrorbits.redis.schema).
#: One call replaces ~2 + N round-trip commands and their parsing in Python.
_LOAD_SCRIPT = """
local out = {}
for i, p in ipairs(ARGV) do
  local f = redis.call('HMGET', '@FILE@' .. p, 'size', 'modTime', 'sha1', 'sha256', 'md5')
  local mir = {}
  if f[2] then
    local ids = redis.call('SMEMBERS', '@FILEMIRRORS@' .. p)
    for _, id in ipairs(ids) do
      local fi = redis.call('HMGET', '@FILEINFO@' .. id .. '_' .. p, 'size', 'modTime')
      mir[#mir + 1] = id
      mir[#mir + 1] = fi[1]
      mir[#mir + 1] = fi[2]
    end
  end
  out[i] = {f[1], f[2], f[3], f[4], f[5], mir}
end
return cjson.encode(out)
""".replace("@FILE@", schema.file_key("")).replace(
    "@FILEMIRRORS@", schema.file_mirrors_key("")).replace("@FILEINFO@", schema.file_info_key("", "")[:-1])


# ---------------------------------------------------------------------------------------------
# The view


class MirrorView:
    """The per-process view (see the module docstring), read through the process's
    :class:`~mirrorbits.redis.connection.RedisClient`, so it follows the same master (Sentinel
    included), readiness gate and command deadlines as everything else."""

    #: After each complete warm-up, hide the live objects from the cyclic GC
    #: (:func:`freeze_long_lived`); the redirector's service turns it on for its process.
    freeze_gc = False

    def __init__(self, redis: RedisClient, reactor: IReactorTime | None = None, *,
                 capacity: int = DEFAULT_CAPACITY, warm_limit: int | None = None,
                 load_timeout: float | Callable[[], float] = LOAD_TIMEOUT) -> None:
        self.redis = redis
        self.reactor: IReactorTime = reactor if reactor is not None else default_reactor()
        self.warm_limit = warm_limit
        #: Deadline of a miss's load, read at each load (a reload applies to the next one).
        self._load_timeout: Callable[[], float] = (
            load_timeout if callable(load_timeout) else (lambda: load_timeout))
        self._paths: LRU[str, PathEntry] = LRU(capacity)
        self._mirrors: dict[int, Candidate] = {}
        #: Mirror ids whose hash is missing or broken: text of the problem (negative entries).
        self._mirror_errors: dict[int, str] = {}
        #: Bumped whenever a mirror record changes: composed pairs of older generations are stale.
        self.gen = 0
        #: Bumped by clear(): loads started before it must not write into the new view.
        self.epoch = 0
        self._inflight: dict[str, list[defer.Deferred[None]]] = {}
        self._dirty_paths: set[str] = set()
        self._dirty_mirrors: set[int] = set()
        self._flush_call: IDelayedCall | None = None
        self._subscription: Subscription | None = None
        self._warming: defer.Deferred[None] | None = None
        self._stopped = False
        self._mf_intern: dict[tuple[str | None, str | None], MirrorFile] = {}
        self.stats = {"hits": 0, "misses": 0, "negative": 0, "loads": 0, "refreshes": 0,
                      "paths_refreshed": 0, "clears": 0}
        #: ``hits`` and ``negative`` (a hit on a file known not to exist) are counted by the
        #: redirector, which knows a lookup is a request's; ``misses`` by :meth:`load`.
        #: True once a warm-up has completed (and until the next clear): ``/readyz`` waits for it.
        self.warmed = False
        #: How long the last complete warm-up took, seconds (None: none yet).
        self.warm_seconds: float | None = None

    @property
    def load_timeout(self) -> float:
        return self._load_timeout()

    @load_timeout.setter
    def load_timeout(self, seconds: float) -> None:
        self._load_timeout = lambda: seconds

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, warm: bool = True) -> None:
        """Subscribe to the invalidation channels and warm the view once Redis is ready."""
        self._stopped = False
        channels = (schema.CHANNEL_FILE_UPDATE, schema.CHANNEL_MIRROR_UPDATE,
                    schema.CHANNEL_MIRROR_FILE_UPDATE)
        self._subscription = self.redis.subscribe(channels, self.handle_message, self.on_reconnect)
        if warm:
            self.redis.when_ready().addCallback(lambda _: self.warm())

    def stop(self) -> None:
        self._stopped = True
        if self._subscription is not None:
            self._subscription.stop()
            self._subscription = None
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if self._warming is not None and not self._warming.called:
            self._warming.cancel()

    @property
    def subscribed(self) -> bool:
        return bool(self._subscription is not None and self._subscription.subscribed)

    def clear(self) -> None:
        """Forget everything (Go ``Clear``): after a pub/sub reconnect messages may have been lost."""
        self.epoch += 1
        self.gen += 1
        self._paths.clear()
        self._mirrors.clear()
        self._mirror_errors.clear()
        self._mf_intern.clear()
        self._dirty_paths.clear()
        self._dirty_mirrors.clear()
        self.stats["clears"] += 1
        self.warmed = False

    def on_reconnect(self) -> None:
        log.info("Pub/sub reconnected: clearing and re-warming the cache")
        self.clear()
        if not self._stopped:
            self.warm()

    # -- read side (hot path) ------------------------------------------------------------------

    def lookup(self, path: str) -> PathEntry | None:
        """The entry for ``path`` when the view can answer from memory, else None.

        An answerable entry has its file info and, for a known file, composed ``pairs``.
        """
        e = self._paths.get(path)
        if e is None:
            return None
        info = e.info
        if info is None:
            return None
        if info.mod_time_ns is None:
            return e  # unknown file: selection stops at the zero modtime, nothing else needed
        if e.pairs is not None and e.gen == self.gen:
            return e
        if self._compose(e):
            return e
        return None

    def peek(self, path: str) -> PathEntry | None:
        """Whatever the view holds for ``path``, complete or not (used when Redis fails)."""
        return self._paths.peek(path)

    def _compose(self, e: PathEntry) -> bool:
        ids = e.ids
        if ids is None:
            return False
        mirrors = self._mirrors
        cands = [mirrors.get(i) for i in ids]
        if None in cands:
            errors = self._mirror_errors
            kept: list[Candidate] = []
            files: list[MirrorFile | None] = []
            for i, c, mf in zip(ids, cands, e.files, strict=True):
                if c is None:
                    if i in errors:
                        continue  # mirror hash gone or broken: skipped (Go answers 500 there)
                    return False
                kept.append(c)
                files.append(mf)
            e.pairs = Pairs(tuple(kept), tuple(files))
        else:
            # The usual case: every member is a known mirror; the files tuple is shared.
            e.pairs = Pairs(tuple(cands), e.files)  # type: ignore[arg-type]  # no None left
        e.gen = self.gen
        return True

    def get_mirror(self, mirror_id: int) -> Candidate | None:
        return self._mirrors.get(mirror_id)

    def mirrors(self) -> dict[int, Candidate]:
        """The mirrors currently known (a copy)."""
        return dict(self._mirrors)

    def __len__(self) -> int:
        return len(self._paths)

    # -- loading -------------------------------------------------------------------------------

    async def load(self, path: str) -> PathEntry | None:
        """Load ``path`` from Redis (shared with concurrent callers) and return the answerable
        entry.  Raises the Redis error when Redis cannot be used, and
        :class:`~mirrorbits.redis.errors.CommandTimeout` after ``load_timeout`` seconds: the load
        leaves the in-flight table then, so a hung Redis does not hold later requests."""
        self.stats["misses"] += 1
        deadline = self.reactor.seconds() + self.load_timeout
        waiters = self._inflight.get(path)
        if waiters is not None:
            d: defer.Deferred[None] = defer.Deferred()
            waiters.append(d)
            await d
        else:
            self._inflight[path] = []
            error: BaseException | None = None
            try:
                await self._fetch([path], deadline=deadline)
            except BaseException as exc:  # handed to the waiters too
                error = exc
            waiters = self._inflight.pop(path, [])
            for w in waiters:
                if error is None:
                    w.callback(None)
                else:
                    w.errback(error)
            if error is not None:
                raise error
        e = self.lookup(path)
        if e is None:
            # Something it depends on changed while loading (e.g. a clear): try once more.
            await self._fetch([path], deadline=deadline)
            e = self.lookup(path)
        return e

    def _entry(self, path: str) -> PathEntry:
        e = self._paths.peek(path)
        if e is None:
            e = PathEntry(path)
            self._paths.set(path, e, 1)
        return e

    def _mirror_file(self, size: str | None, mod: str | None) -> MirrorFile | None:
        if size is None and mod is None:
            return None  # no FILEINFO hash (see selection: never chosen)
        # Most mirrors store the same text for a file: parse each distinct text once.  A small
        # table is enough for that (a path's mirrors are applied together) and keeps the texts it
        # holds from weighing on a view of a million paths.
        key = (size, mod)
        mf = self._mf_intern.get(key)
        if mf is None:
            if len(self._mf_intern) > MIRROR_FILE_INTERN:
                self._mf_intern.clear()
            fi = FileInfo.from_redis("", [size, mod])
            mf = self._mf_intern[key] = MirrorFile(fi.size, fi.mod_time_ns)
        return mf

    def _apply_path(self, path: str, rec: Sequence[object]) -> None:
        """One path's record from the loader script: file fields, then [id, size, modTime]*
        (strings, ``false`` for a missing field)."""
        # (Inline type tests, not a helper: this runs once per path and per mirror of it.)
        info = FileInfo.from_redis(path, [v if v.__class__ is str else None for v in rec[:5]])
        flat = rec[5] if len(rec) > 5 and isinstance(rec[5], list) else []
        ids: list[int] = []
        files: list[MirrorFile | None] = []
        for k in range(0, len(flat) - 2, 3):
            try:
                mirror_id = int(flat[k])
            except (TypeError, ValueError):
                # Go fails the whole request (then falls back); one bad member should not hide
                # the other mirrors, so it is skipped.
                log.warn("Ignoring non-numeric member {m!r} of FILEMIRRORS_{path}", m=flat[k], path=path)
                continue
            size, mod = flat[k + 1], flat[k + 2]
            ids.append(mirror_id)
            files.append(self._mirror_file(size if size.__class__ is str else None,
                                           mod if mod.__class__ is str else None))
        if len(set(ids)) != len(ids):
            # A member twice (" 1" and "1"): each occurrence gets the last one's FILEINFO.
            last = dict(zip(ids, files, strict=True))
            files = [last[i] for i in ids]
        e = self._entry(path)
        e.info = info
        e.ids = tuple(ids)
        e.files = tuple(files)
        e.pairs = None
        self._paths.set_cost(path, 1 + len(ids))

    def _apply_mirror(self, mirror_id: int, reply: Reply) -> None:
        fields = hash_dict(reply)
        try:
            m = Mirror.from_redis(fields)
        except EmptyMirrorHash:
            problem = "redigo: nil returned"
            m = None
        except ValueError as exc:
            problem = str(exc)
            m = None
            log.error("Cannot load mirror {id}: {err}", id=mirror_id, err=problem)
        if m is None:
            if mirror_id in self._mirrors or self._mirror_errors.get(mirror_id) != problem:
                self._mirrors.pop(mirror_id, None)
                self._mirror_errors[mirror_id] = problem
                self.gen += 1
            return
        families = read_family_health(fields)
        old = self._mirrors.get(mirror_id)
        if old is not None and old.families == families:
            if old.mirror == m:
                return  # unchanged (most health-check messages): keep the candidate and its memo
            if only_sync_bookkeeping_changed(old.mirror, m):
                refresh_sync_bookkeeping(old, m)  # the end of a scan: plans stay valid
                return
        self._mirrors[mirror_id] = candidate_from_mirror(m, families)
        self._mirror_errors.pop(mirror_id, None)
        self.gen += 1

    async def _fetch(self, paths: Sequence[str] = (), mirrors: Iterable[int] = (),
                     deadline: float | None = None) -> None:
        """Load whole paths (one script call) and mirror records (HGETALL), then any mirror the
        new member sets name that the view does not know.  Replies are applied as they arrive,
        in the order the commands were sent, so a later refresh of the same key always wins.
        ``deadline`` (reactor time) bounds the whole; without it each command has the client's
        default deadline."""
        epoch = self.epoch
        paths = list(paths)
        mirror_ids = list(mirrors)
        self.stats["loads"] += 1
        cmds: list[Command] = []
        if paths:
            cmds.append(("EVAL", _LOAD_SCRIPT, 0, *paths))
        for i in mirror_ids:
            cmds.append(("HGETALL", schema.mirror_key(i)))
        if not cmds:
            return
        if deadline is None:
            replies = await self.redis.pipeline(cmds)
        else:
            replies = await self.redis.pipeline(
                cmds, timeout=max(0.0, deadline - self.reactor.seconds()))
        if epoch != self.epoch:
            return
        first_error: BaseException | None = None
        it = iter(replies)
        if paths:
            reply = next(it)
            if isinstance(reply, Exception):
                first_error = reply
            else:
                doc = json.loads(as_str(reply) or "[]")
                for p, rec in zip(paths, doc, strict=False):
                    self._apply_path(p, rec)
        for i in mirror_ids:
            try:
                self._apply_mirror(i, next(it))
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        need = set()
        for p in paths:
            e = self._paths.peek(p)
            if e is not None and e.ids:
                for i in e.ids:
                    if i not in self._mirrors and i not in self._mirror_errors:
                        need.add(i)
        if need:
            await self._fetch(mirrors=sorted(need), deadline=deadline)

    # -- warming -------------------------------------------------------------------------------

    def warm(self) -> defer.Deferred[None]:
        """Load every mirror and (up to ``warm_limit`` / the capacity) every file, in batches."""
        if self._warming is not None and not self._warming.called:
            return self._warming
        d = defer.Deferred.fromCoroutine(self._warm())
        d.addErrback(self._warm_failed)
        self._warming = d
        return d

    def _warm_failed(self, failure: Failure) -> None:
        if failure.check(defer.CancelledError):
            return None
        log.warn("Cache warm-up stopped: {err}", err=failure.getErrorMessage())
        return None

    async def _warm(self) -> None:
        epoch = self.epoch
        started = self.reactor.seconds()
        ids = []
        for k in await self.redis.hgetall(schema.MIRRORS):
            try:
                ids.append(int(k))
            except ValueError:
                continue
        for start in range(0, len(ids), BATCH):
            if self._stopped or epoch != self.epoch:
                return
            await self._fetch(mirrors=[i for i in ids[start:start + BATCH]
                                       if i not in self._mirrors])
        limit = self.warm_limit
        done = 0
        cursor = "0"
        while not self._stopped and epoch == self.epoch:
            next_cursor, members = as_list(await self.redis.execute(
                "SSCAN", schema.FILES, cursor, "COUNT", BATCH))
            cursor = as_str(next_cursor) or "0"
            paths = [p for p in as_str_list(members) if p not in self._paths]
            if limit is not None:
                paths = paths[: max(0, limit - done)]
            if paths:
                for start in range(0, len(paths), BATCH):
                    await self._fetch(paths[start:start + BATCH])
                done += len(paths)
            if cursor == "0" or (limit is not None and done >= limit) \
                    or self._paths.size >= self._paths.capacity * 0.9:
                break
        if epoch == self.epoch:
            # Compose every entry now (the hot path would, one request at a time): the composed
            # pairs are most of the view's objects, and this way the freeze below covers them.
            for p in self._paths:
                e = self._paths.peek(p)
                if e is not None and e.pairs is None:
                    self._compose(e)
        log.info("Cache warmed: {n} files, {m} mirrors", n=len(self._paths), m=len(self._mirrors))
        if epoch == self.epoch and not self._stopped:
            self.warmed = True
            self.warm_seconds = self.reactor.seconds() - started
        if self.freeze_gc:
            freeze_long_lived()

    # -- invalidation --------------------------------------------------------------------------

    def handle_message(self, channel: str, message: str) -> None:
        """One pub/sub message: refresh what it names, if the view holds it."""
        if channel == schema.CHANNEL_MIRROR_UPDATE:
            try:
                mirror_id = int(message)
            except ValueError:
                return
            if mirror_id in self._mirrors or mirror_id in self._mirror_errors:
                self._dirty_mirrors.add(mirror_id)
                self._schedule()
        elif channel == schema.CHANNEL_FILE_UPDATE:
            if message in self._paths:
                self._dirty_paths.add(message)
                self._schedule()
        elif channel == schema.CHANNEL_MIRROR_FILE_UPDATE:
            id_text, sep, path = message.partition(" ")
            if not sep:
                return  # Go crashes on this; a no-op here
            if path in self._paths:
                self._dirty_paths.add(path)
                self._schedule()

    def _schedule(self, delay: float = REFRESH_DELAY) -> None:
        if self._flush_call is None and not self._stopped:
            self._flush_call = self.reactor.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        paths, self._dirty_paths = sorted(self._dirty_paths), set()
        mirror_ids, self._dirty_mirrors = sorted(self._dirty_mirrors), set()
        self.stats["refreshes"] += 1
        self.stats["paths_refreshed"] += len(paths)
        if mirror_ids:
            self._refresh([], mirror_ids)
        for start in range(0, len(paths), BATCH):
            self._refresh(paths[start:start + BATCH], [])

    def _refresh(self, paths: list[str], mirrors: list[int]) -> None:
        epoch = self.epoch
        d = defer.Deferred.fromCoroutine(self._fetch(paths, mirrors))

        def failed(f: Failure) -> None:
            # Keep serving the old values; try again later (a pub/sub reconnect clears anyway).
            log.debug("Cache refresh failed: {err}", err=f.getErrorMessage())
            if epoch != self.epoch or self._stopped:
                return
            self._dirty_paths.update(paths)
            self._dirty_mirrors.update(mirrors)
            self._schedule(RETRY_DELAY)

        d.addErrback(failed)


class ViewCollector(Collector):
    """The view's counters and the mirrors' state as the view holds them, read at scrape time.

    Why a collector instead of counters bumped on the hot path: the view already counts its hits and
    misses in plain integers, and the mirror records it keeps are exactly the state an operator
    watches; reading both when Prometheus asks costs the requests nothing.  A scrape runs in a
    thread: the dictionaries are copied (one C-level call each) before they are walked.
    """

    def __init__(self, view: MirrorView, clock: Callable[[], float]) -> None:
        self.view = view
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        view = self.view
        stats = dict(view.stats)
        lookups = CounterMetricFamily("mirrorbits_view_lookups", "Lookups of a path in the in-memory "
                                      "view, by result (negative: a file known not to exist)",
                                      labels=["result"])
        lookups.add_metric(["hit"], stats["hits"])
        lookups.add_metric(["negative"], stats["negative"])
        lookups.add_metric(["miss"], stats["misses"])
        yield lookups
        yield CounterMetricFamily("mirrorbits_view_loads", "Pipelined loads from Redis (misses, "
                                  "refreshes and warm-up batches)", value=stats["loads"])
        yield CounterMetricFamily("mirrorbits_view_refreshes", "Background refreshes after pub/sub "
                                  "messages", value=stats["refreshes"])
        yield CounterMetricFamily("mirrorbits_view_paths_refreshed", "Paths reloaded by those "
                                  "refreshes (a mirror scan reloads the paths it changed)",
                                  value=stats["paths_refreshed"])
        yield CounterMetricFamily("mirrorbits_view_clears", "Times the view was cleared (after a "
                                  "pub/sub reconnect)", value=stats["clears"])
        size = GaugeMetricFamily("mirrorbits_view_entries", "Entries in the in-memory view",
                                 labels=["kind"])
        size.add_metric(["paths"], len(view._paths))
        size.add_metric(["mirrors"], len(view._mirrors))
        yield size
        yield GaugeMetricFamily("mirrorbits_view_warm", "1 once the view has warmed (until it is "
                                "cleared)", value=1 if view.warmed else 0)
        if view.warm_seconds is not None:
            yield GaugeMetricFamily("mirrorbits_view_warmup_duration_seconds",
                                    "Duration of the last complete warm-up", value=view.warm_seconds)
        yield from mirror_state_families([c.mirror for c in list(view._mirrors.values())], self.clock())


def mirror_state_families(mirrors: Sequence[Mirror], now: float) -> Iterator[Metric]:
    """``mirrorbits_mirror_{info,enabled,up,last_successful_sync_*}`` from mirror records."""
    info = GaugeMetricFamily("mirrorbits_mirror_info", "Always 1: a mirror's location (join on "
                             "mirror)", labels=["mirror", "continent", "country"])
    enabled = GaugeMetricFamily("mirrorbits_mirror_enabled", "1 when the mirror is enabled",
                                labels=["mirror"])
    up = GaugeMetricFamily("mirrorbits_mirror_up", "1 when the last health check of the mirror over "
                           "this protocol succeeded", labels=["mirror", "protocol"])
    synced = GaugeMetricFamily("mirrorbits_mirror_last_successful_sync_timestamp_seconds",
                               "When the mirror was last scanned successfully (Unix time)",
                               labels=["mirror"])
    age = GaugeMetricFamily("mirrorbits_mirror_last_successful_sync_age_seconds",
                            "Seconds since the mirror was last scanned successfully", labels=["mirror"])
    for m in mirrors:
        country = m.country_codes.split(" ")[0] if m.country_codes else ""
        info.add_metric([m.name, m.continent_code, country], 1)
        enabled.add_metric([m.name], 1 if m.enabled else 0)
        up.add_metric([m.name, "http"], 1 if m.http_up else 0)
        up.add_metric([m.name, "https"], 1 if m.https_up else 0)
        if m.last_successful_sync:
            synced.add_metric([m.name], m.last_successful_sync)
            age.add_metric([m.name], max(0.0, now - m.last_successful_sync))
    yield from (info, enabled, up, synced, age)
