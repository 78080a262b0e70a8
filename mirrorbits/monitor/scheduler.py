"""The monitor loop: which mirror is checked or scanned when, by this node.

Every second, each enabled mirror this node handles (:mod:`mirrorbits.monitor.cluster`) gets a health check when the last one is
more than ``CheckInterval`` minutes old, and a scan when its ``lastSync`` is more than
``ScanInterval`` minutes old.  Checks run on 10 workers behind a queue of 50; scans on
``ConcurrentSync`` workers (read once, at start).  Differences from Go, all local behaviour:

* a mirror whose check finds nothing to check ("not yet scanned", or a sampled file whose
  ``FILE_`` hash vanished) is retried after ``CheckInterval`` instead of never again;
* a mirror without a scan URL is not re-queued (and its trace fetched) every second: the attempt
  is remembered in memory and retried after ``ScanInterval``;
* a mirror that is re-enabled, or whose URL or redirect policy changed, is checked at the next tick
  rather than up to ``CheckInterval`` later;
* the list of mirrors is re-read every :data:`RESYNC_INTERVAL` seconds and after a pub/sub
  reconnect, so a node that missed a MIRROR_UPDATE still learns of new mirrors and forgets removed
  ones (Go only learns of them by message or at restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.config import Config
from mirrorbits.deferutil import follow
from mirrorbits.model import EmptyMirrorHash, Mirror
from mirrorbits.monitor.cluster import Cluster
from mirrorbits.monitor.health import CheckOutcome, HealthChecker
from mirrorbits.monitor.state import set_family_states, set_mirror_enabled, set_mirror_state
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, RedisUnavailable, ResponseError, Subscription
from mirrorbits.redis.replies import as_str
from mirrorbits.scan.commit import commit_marker_key, finish_interrupted_commit
from mirrorbits.scan.mirror import MirrorScanner, ScanJobResult

log = Logger(namespace="mirrorbits.monitor")

HEALTH_WORKERS = 10
HEALTH_QUEUE = 50
TICK = 1.0
RESYNC_INTERVAL = 60.0
#: Start-up retries: the mirror list every 500 ms.
LOAD_RETRY = 0.5
#: After joining, listen this long before scheduling, so the first split already counts the other
#: nodes (they announce every second).  Go schedules at once, as a one-node cluster, so for a second
#: every starting Go node checks every mirror.
CLUSTER_SETTLE = 1.5
#: Retry delay of the start-up roll-forward of an interrupted commit whose mirror's lock is held.
COMMIT_RETRY = 2.0


@dataclass(slots=True)
class Tracked:
    """A mirror as the monitor holds it, with the in-memory flags Go keeps beside it."""

    mirror: Mirror
    checking: bool = False
    scanning: bool = False
    #: Wall time of the last finished check (0 = never: due at once).
    last_check: float = 0.0
    #: Wall time of the last scan attempt that found no scan URL.
    last_no_url: float = 0.0


def _is_loading(e: BaseException) -> bool:
    return "LOADING" in str(e)


class Monitor:
    """Health checks and scan scheduling of the mirrors this node handles."""

    def __init__(self, redis: RedisClient, config: Callable[[], Config], cluster: Cluster,
                 checker: HealthChecker, scanner: MirrorScanner,
                 reactor: IDaemonReactor | None = None, *,
                 wait_indexed: Callable[[], defer.Deferred[None]] | None = None,
                 clock: Callable[[], float] = time.time, tick: float = TICK,
                 resync_interval: float = RESYNC_INTERVAL, health_workers: int = HEALTH_WORKERS,
                 health_queue: int = HEALTH_QUEUE, cluster_settle: float = CLUSTER_SETTLE) -> None:
        self.redis = redis
        self._config = config
        self.cluster = cluster
        self.checker = checker
        self.scanner = scanner
        self.reactor = reactor if reactor is not None else default_reactor()
        self.wait_indexed = wait_indexed
        self.clock = clock
        self.tick_interval = tick
        self.resync_interval = resync_interval
        self.health_workers = health_workers
        self.health_capacity = health_queue
        self.cluster_settle = cluster_settle
        self.mirrors: dict[int, Tracked] = {}
        self._queue: defer.DeferredQueue[Tracked] = defer.DeferredQueue()
        self._queued = 0
        self._concurrent_sync = 0
        self._scans_running = 0
        self._tasks: set[defer.Deferred[None]] = set()
        self._workers: list[defer.Deferred[None]] = []
        self._loops: list[task.LoopingCall] = []
        self._pending_updates: set[int] = set()
        self._update_call: IDelayedCall | None = None
        self._subscription: Subscription | None = None
        self._startup: defer.Deferred[None] | None = None
        self._sleeping: defer.Deferred[None] | None = None
        #: The roll-forward of interrupted mirror commits, while one runs.
        self._finishing: defer.Deferred[None] | None = None
        #: The last ``CheckTLSCAFile`` seen in the config (None: not seen yet).
        self._config_ca: str | None = None
        self.running = False
        self.started = False
        #: Hooks for tests and the manhole: called with (mirror id, outcomes) after each check.
        self.check_listeners: list[Callable[[int, list[CheckOutcome]], None]] = []

    @property
    def config(self) -> Config:
        return self._config()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Run the start-up sequence in the background; the returned Deferred fires when the
        monitor is scheduling."""
        self.running = True
        self._startup = defer.Deferred.fromCoroutine(self._start())
        self._startup.addErrback(self._startup_failed)
        return self._startup

    def _startup_failed(self, failure: Failure) -> None:
        if not failure.check(defer.CancelledError):
            log.failure("monitor start-up failed", failure)

    async def _sleep(self, seconds: float) -> None:
        self._sleeping = task.deferLater(self.reactor, seconds, lambda: None)
        try:
            await self._sleeping
        except defer.CancelledError:
            pass
        finally:
            self._sleeping = None

    async def _start(self) -> None:
        await self.redis.when_ready()
        if self.wait_indexed is not None:
            await self.wait_indexed()
        # Subscribe before loading, so no MIRROR_UPDATE between the load and the subscription is lost.
        self._subscription = self.redis.subscribe([schema.CHANNEL_MIRROR_UPDATE], self._on_message,
                                                  self._on_reconnect)
        while self.running:
            try:
                await self.resync()
                break
            except (RedisUnavailable, ResponseError) as e:
                log.debug("Loading the mirrors failed, retrying: {err}", err=e)
                await self._sleep(LOAD_RETRY)
        if not self.running:
            return
        self._finish_commits_soon()
        self.cluster.start()
        if self.cluster_settle > 0:
            await self._sleep(self.cluster_settle)
            if not self.running:
                return
        for _ in range(self.health_workers):
            w = defer.Deferred.fromCoroutine(self._health_worker())
            w.addErrback(lambda f: None if f.check(defer.CancelledError)
                         else log.failure("health worker died", f))
            self._workers.append(w)
        self._concurrent_sync = self.config.ConcurrentSync  # read once, as Go does
        self._loop(self.tick_interval, self.tick, now=True)
        self._loop(self.resync_interval, self._resync_quietly, now=False)
        self.started = True

    def _loop(self, interval: float, fn: Callable[[], object], now: bool) -> None:
        loop = task.LoopingCall(fn)
        loop.clock = self.reactor
        loop.start(interval, now=now).addErrback(lambda f: log.failure("monitor loop died", f))
        self._loops.append(loop)

    async def stop(self) -> None:
        """Stop scheduling, cancel the HTTP requests and scans in flight, and wait for them."""
        self.running = False
        # The start-up is never cancelled (it may wait for a Redis reply): it sees ``running``.
        if self._sleeping is not None and not self._sleeping.called:
            self._sleeping.cancel()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._update_call is not None and self._update_call.active():
            self._update_call.cancel()
        if self._subscription is not None:
            self._subscription.stop()
            self._subscription = None
        self.cluster.stop()
        for w in self._workers:
            w.cancel()  # idle workers wait on the queue; busy ones finish their current check
        self._workers = []
        self.checker.client.cancel_all()
        await self.scanner.stop()
        for d in list(self._tasks):
            try:
                await follow(d, consume=True)
            except BaseException:
                pass

    # -- the mirror map ------------------------------------------------------------------------

    async def resync(self) -> None:
        """Load ``MIRRORS`` and every ``MIRROR_<id>``; forget those that are gone."""
        ids = set()
        for key in await self.redis.hgetall(schema.MIRRORS):
            try:
                ids.add(int(key))
            except ValueError:
                continue
        for mirror_id in sorted(ids | set(self.mirrors)):
            await self.reload(mirror_id)

    async def _resync_quietly(self) -> None:
        try:
            await self.resync()
        except (RedisUnavailable, ResponseError) as e:
            log.debug("Mirror list resync failed: {err}", err=e)
            return
        # A node that died mid-commit while this one runs: finish its commit within a minute
        # rather than at the mirror's next scan.
        self._finish_commits_soon()

    def _finish_commits_soon(self) -> None:
        if self._finishing is None:
            self._finishing = self._spawn(self._finish_interrupted_commits())
            self._finishing.addBoth(self._finished_commits)

    def _finished_commits(self, result: object) -> object:
        self._finishing = None
        return result

    async def reload(self, mirror_id: int) -> None:
        """Re-read one mirror: add, update (keeping the in-memory flags) or forget it."""
        fields = await self.redis.hgetall(schema.mirror_key(mirror_id))
        try:
            mirror = Mirror.from_redis(fields)
        except EmptyMirrorHash:
            if self.mirrors.pop(mirror_id, None) is not None:
                log.debug("Mirror {id} removed", id=mirror_id)
            self.cluster.remove_mirror(mirror_id)
            return
        except ValueError as e:
            log.error("Cannot load mirror {id}: {err}", id=mirror_id, err=e)
            return
        if mirror.id != mirror_id:
            mirror = _with_id(mirror, mirror_id)
        tracked = self.mirrors.get(mirror_id)
        if tracked is None:
            self.mirrors[mirror_id] = Tracked(mirror)
        else:
            old = tracked.mirror
            tracked.mirror = mirror
            if (mirror.enabled and not old.enabled) or mirror.http_url != old.http_url \
                    or mirror.allow_redirects != old.allow_redirects:
                tracked.last_check = 0.0  # check it at the next tick
            if mirror.rsync_url != old.rsync_url or mirror.ftp_url != old.ftp_url:
                tracked.last_no_url = 0.0
        self.cluster.add_mirror(mirror_id)

    def mirror_updated(self, mirror_id: int) -> None:
        """A MIRROR_UPDATE for ``mirror_id`` (from our subscription or forwarded by the cache):
        reload it soon.  Never blocks; repeated ids are coalesced."""
        if not self.running:
            return
        self._pending_updates.add(mirror_id)
        if self._update_call is None or not self._update_call.active():
            self._update_call = self.reactor.callLater(0, self._apply_updates)

    def _apply_updates(self) -> None:
        self._update_call = None
        ids, self._pending_updates = self._pending_updates, set()
        if ids:
            self._spawn(self._reload_many(sorted(ids)))

    async def _reload_many(self, ids: list[int]) -> None:
        for mirror_id in ids:
            try:
                await self.reload(mirror_id)
            except (RedisUnavailable, ResponseError) as e:
                log.debug("Reloading mirror {id} failed: {err}", id=mirror_id, err=e)

    def _on_message(self, channel: str, message: str) -> None:
        try:
            mirror_id = int(message)
        except ValueError:
            return
        self.mirror_updated(mirror_id)

    def _on_reconnect(self) -> None:
        if self.started:
            self._spawn(self._resync_quietly())

    def _spawn(self, coro: Coroutine[defer.Deferred[object], object, None]) -> defer.Deferred[None]:
        d = defer.Deferred.fromCoroutine(coro)
        self._tasks.add(d)

        def done(result: Failure | None) -> None:
            self._tasks.discard(d)
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                log.failure("monitor task failed", result)

        d.addBoth(done)
        return d

    async def _finish_interrupted_commits(self) -> None:
        """Roll forward the mirror scan commits a killed process left half done
        (:mod:`mirrorbits.scan.commit`), every node trying each under the mirror's scan lock."""
        ids = sorted(self.mirrors)
        if not ids:
            return
        try:
            replies = await self.redis.pipeline([("EXISTS", commit_marker_key(i)) for i in ids])
        except (RedisUnavailable, ResponseError) as e:
            log.debug("Looking for interrupted commits failed: {err}", err=e)
            return
        todo = {i: self.mirrors[i].mirror.name for i, r in zip(ids, replies, strict=True) if r == 1}
        while todo and self.running:
            for mirror_id, name in list(todo.items()):
                try:
                    if await finish_interrupted_commit(self.redis, mirror_id, name):
                        del todo[mirror_id]
                except (RedisUnavailable, ResponseError) as e:
                    log.warn("[{name}] finishing an interrupted commit failed, retrying: {err}",
                             name=name, err=e)
            if todo and self.running:
                # A dead holder's SCANNING_<id> expires within 10 s.
                await task.deferLater(self.reactor, COMMIT_RETRY, lambda: None)

    # -- scheduling ----------------------------------------------------------------------------

    def tick(self) -> None:
        """One scheduling pass over the mirrors."""
        if not self.running or self.redis.failing:
            return
        config = self.config
        now = self.clock()
        check_every = config.CheckInterval * 60
        scan_every = config.ScanInterval * 60
        for tracked in list(self.mirrors.values()):
            m = tracked.mirror
            if not m.enabled or not self.cluster.is_handled(m.id):
                continue
            if not tracked.checking and now - tracked.last_check > check_every:
                if self._queued < self.health_capacity:
                    tracked.checking = True
                    self._enqueue(tracked)
            if not tracked.scanning and now - (m.last_sync or 0) > scan_every \
                    and now - tracked.last_no_url > scan_every \
                    and self._scans_running < self._concurrent_sync:
                tracked.scanning = True
                self._scans_running += 1
                self._spawn(self._scan(tracked))

    def _enqueue(self, tracked: Tracked) -> None:
        self._queued += 1
        self._queue.put(tracked)

    # -- scans ---------------------------------------------------------------------------------

    async def _scan(self, tracked: Tracked) -> None:
        before = tracked.mirror
        try:
            outcome: ScanJobResult = await self.scanner.run_job(before)
            if outcome.status == "no-url":
                tracked.last_no_url = self.clock()
            if outcome.status == "ok" and before.enabled and not before.is_up() \
                    and not tracked.checking and self.running:
                # Step 7: a mirror that was down gets checked now that it was rescanned.
                tracked.checking = True
                self._enqueue(tracked)
        except Exception as e:
            log.error("[{name}] scan failed: {err}", name=before.name, err=e)
        finally:
            tracked.scanning = False
            self._scans_running -= 1

    # -- health checks -------------------------------------------------------------------------

    async def _health_worker(self) -> None:
        while self.running:
            tracked = await self._queue.get()
            self._queued -= 1
            d = defer.Deferred.fromCoroutine(self._check(tracked))
            # Tracked until the check itself ends, not its worker: stop() cancels the workers,
            # then the HTTP requests, and waits for the checks to end.
            self._tasks.add(d)
            d.addBoth(self._check_ended, d, tracked.mirror.id)
            await follow(d)

    def _check_ended(self, result: Failure | None, d: defer.Deferred[None], mirror_id: int) -> None:
        self._tasks.discard(d)
        if isinstance(result, Failure) and not result.check(defer.CancelledError):
            log.failure("health check of mirror {id} failed", result, id=mirror_id)

    async def _check(self, tracked: Tracked) -> None:
        mirror = tracked.mirror
        try:
            if not self.running:
                return
            try:
                path = as_str(await self.redis.execute("SRANDMEMBER", schema.handled_files_key(mirror.id)))
                size_text = None
                if path is not None:
                    size_text = as_str(await self.redis.execute("HGET", schema.file_key(path), "size"))
            except (RedisUnavailable, ResponseError) as e:
                if not _is_loading(e):
                    log.error("[{name}] health check: {err}", name=mirror.name, err=e)
                    tracked.last_check = self.clock()
                return
            if path is None or size_text is None:
                # "Not yet scanned": retry after CheckInterval (Go never retries).
                tracked.last_check = self.clock()
                return
            try:
                size = int(size_text)
            except ValueError:
                size = -1
            config = self.config
            self._apply_ca_file(config)
            try:
                outcomes = await self.checker.check(
                    mirror, path, size, disallow_redirects=config.DisallowRedirects,
                    disable_on_missing=config.DisableOnMissingFile,
                    by_family=config.SelectByIPFamily)
            except defer.CancelledError:
                return  # stopping: the result is discarded
            await self._record(tracked, outcomes)
            tracked.last_check = self.clock()
            for listener in list(self.check_listeners):
                listener(mirror.id, outcomes)
        finally:
            tracked.checking = False

    def _apply_ca_file(self, config: Config) -> None:
        """Follow ``CheckTLSCAFile`` across reloads without clobbering the client's own CA.

        The client starts with the CA it was built with; the config's value replaces it only once
        the config names one, or when a reload changes it (an empty value then means the system
        roots again).  Copying an unset (``""``) key on every check used to drop a CA given to the
        client directly.
        """
        ca_file = config.CheckTLSCAFile
        if ca_file == self._config_ca:
            return
        if self._config_ca is not None or ca_file:
            self.checker.client.ca_file = ca_file
        self._config_ca = ca_file

    async def _record(self, tracked: Tracked, outcomes: list[CheckOutcome]) -> None:
        mirror = tracked.mirror
        for outcome in outcomes:
            try:
                if outcome.families:
                    await set_family_states(self.redis, mirror.id, outcome.proto, outcome.families)
                await set_mirror_state(self.redis, mirror.id, outcome.proto, outcome.up,
                                       outcome.reason)
                if outcome.disable and tracked.mirror.enabled:
                    if await set_mirror_enabled(self.redis, mirror.id, False):
                        log.warn("[{name}] disabled: {reason}", name=mirror.name,
                                 reason=outcome.reason)
            except (RedisUnavailable, ResponseError) as e:
                log.error("[{name}] cannot record the health state: {err}", name=mirror.name,
                          err=e)


def _with_id(mirror: Mirror, mirror_id: int) -> Mirror:
    return replace(mirror, id=mirror_id)
