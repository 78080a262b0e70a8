"""One mirror scan: list the mirror over rsync or FTP (:mod:`mirrorbits.scan.rsync`,
:mod:`mirrorbits.scan.ftp`), commit through :mod:`mirrorbits.scan.commit`, fix the time-zone offset,
fetch the trace file.

Cancellation only ever reaches the listers (which kill rsync or close the FTP connections) and the
HTTP requests, never a Redis command in flight: a scan that is stopped fails with "scan aborted",
cleans up and releases its lock before its Deferred fires.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TypeVar

from prometheus_client import Counter, Gauge
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.config import Config
from mirrorbits.deferutil import follow
from mirrorbits.httpclient import HttpClient
from mirrorbits.model import SCANNER_FTP, SCANNER_RSYNC, FileInfo, Mirror
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, RedisUnavailable, ResponseError
from mirrorbits.redis.replies import as_str, as_str_list
from mirrorbits.scan import ftp, ftp_client, rsync, tzoffset
from mirrorbits.scan.commit import BATCH, ERR_IN_PROGRESS, MirrorScanTransaction, ScanInProgress, ScanResult
from mirrorbits.scan.listing import ListingOutcome, ScanAborted, ScanError
from mirrorbits.scan.trace import fetch_trace

log = Logger(namespace="mirrorbits.scan")

SCAN_DURATION = Gauge("mirrorbits_mirror_scan_duration_seconds", "Duration of the mirror's last "
                      "successful scan", ["mirror"])
SCAN_FILES = Gauge("mirrorbits_mirror_scan_files", "Files the mirror's last successful scan "
                   "indexed", ["mirror"])
SCAN_FAILURES = Counter("mirrorbits_mirror_scan_failures", "Scans of a mirror that failed, by "
                        "reason (failed, aborted, in_progress: another scan held the lock)",
                        ["mirror", "protocol", "reason"])

SCAN_UNCHANGED = Counter("mirrorbits_mirror_scan_unchanged", "Successful scans of a mirror whose "
                         "listing was proven unchanged, so that nothing was compared or rewritten",
                         ["mirror", "protocol"])

T = TypeVar("T")

ERR_NO_URL = "no suitable URL for the scan"
ERR_ABORTED = "scan aborted"

__all__ = ["ERR_ABORTED", "ERR_IN_PROGRESS", "ERR_NO_URL", "MirrorScanner", "ScanJobResult",
           "ScanResult", "ScanInProgress"]


@dataclass(frozen=True, slots=True)
class ScanJobResult:
    """What the monitor's scan worker learned."""

    #: "ok", "skipped" (lock held elsewhere), "in-progress", "no-url", "failed".
    status: str
    result: ScanResult | None = None
    error: str = ""


class _Job:
    """Handle on one scan job: aborting it cancels its listing (and any listing it starts later)."""

    def __init__(self) -> None:
        self.aborted = False
        self.lister: defer.Deferred[ListingOutcome] | None = None

    def abort(self) -> None:
        self.aborted = True
        if self.lister is not None and not self.lister.called:
            self.lister.cancel()


def _scanner_type(protocol: str) -> int:
    if protocol == "rsync":
        return SCANNER_RSYNC
    if protocol == "ftp":
        return SCANNER_FTP
    raise ValueError(f"unknown scan protocol {protocol!r}")


class MirrorScanner:
    """Scans mirrors for this process (the monitor's workers and the admin ``scan`` command)."""

    def __init__(self, redis: RedisClient, config: Callable[[], Config], http: HttpClient,
                 reactor: IDaemonReactor | None = None, *, batch: int = BATCH,
                 rsync_timeout: float | None = None,
                 ftp_timeout: float | None = None) -> None:
        self.redis = redis
        self._config = config
        self.http = http
        self.reactor = reactor if reactor is not None else default_reactor()
        self.batch = batch
        self.rsync_timeout = rsync_timeout
        self.ftp_timeout = ftp_timeout
        #: Scans with a listing running now.
        self._jobs: set[_Job] = set()
        #: One Deferred per scan started through :meth:`_abortable`, fired when it has cleaned up.
        self._scans: set[defer.Deferred[None]] = set()
        self._traces: dict[int, defer.Deferred[int | None]] = {}
        self.stopping = False

    @property
    def config(self) -> Config:
        return self._config()

    # -- the admin entry point ---------------------------------------------------------------

    def scan_mirror(self, mirror: Mirror, protocol: str) -> defer.Deferred[ScanResult]:
        """Scan ``mirror`` over ``protocol`` (``"rsync"`` or ``"ftp"``) now, and fetch its trace
        file meanwhile (admin ``scan``).  Raises :class:`ScanError` with Go's cause text
        ("scan already in progress", "rsync: Error in socket I/O"...).  Cancelling the returned
        Deferred (the RPC deadline) aborts the scan, which then cleans up in the background."""
        url = mirror.rsync_url if protocol == "rsync" else mirror.ftp_url
        _scanner_type(protocol)

        async def run(job: _Job) -> ScanResult:
            trace = self.fetch_trace(mirror)
            try:
                return await self.scan(mirror.id, protocol, url, job)
            finally:
                await _quietly(trace)

        return self._abortable(run)

    def fetch_trace(self, mirror: Mirror) -> defer.Deferred[int | None]:
        """Fetch the trace file of ``mirror`` unless a fetch for it is already running."""
        running = self._traces.get(mirror.id)
        if running is not None and not running.called:
            return follow(running)
        d = defer.Deferred.fromCoroutine(
            fetch_trace(self.redis, self.http, mirror, self.config.TraceFileLocation))
        d.addErrback(_log_trace_failure)
        self._traces[mirror.id] = d

        def finished(result: int | None) -> int | None:
            self._traces.pop(mirror.id, None)
            return result

        d.addCallback(finished)
        return follow(d)

    # -- the monitor entry point -------------------------------------------------------------

    async def run_job(self, mirror: Mirror) -> ScanJobResult:
        """The scan worker's work for one mirror: skip it when another node scans it, else scan over
        rsync, then FTP, fetching the trace file meanwhile."""
        try:
            if await self.redis.execute("EXISTS", schema.scanning_key(mirror.id)):
                log.debug("[{name}] scan already in progress on another node", name=mirror.name)
                return ScanJobResult("skipped")
        except (RedisUnavailable, ResponseError) as e:
            if "LOADING" not in str(e):
                log.warn("[{name}] cannot check the scan lock: {err}", name=mirror.name, err=e)
            return ScanJobResult("skipped", error=str(e))
        if not mirror.rsync_url and not mirror.ftp_url:
            # Go fetches the trace and retries every second here; we do neither.
            return ScanJobResult("no-url", error=ERR_NO_URL)
        self.fetch_trace(mirror)  # in the background, not awaited
        return await self._abortable(lambda job: self._run_protocols(mirror, job))

    async def _run_protocols(self, mirror: Mirror, job: _Job) -> ScanJobResult:
        error = ""
        if mirror.rsync_url:
            try:
                return ScanJobResult("ok", await self.scan(mirror.id, "rsync", mirror.rsync_url, job))
            except ScanError as e:
                error = str(e)
        if mirror.ftp_url and error != ERR_ABORTED and error != ERR_IN_PROGRESS:
            try:
                return ScanJobResult("ok", await self.scan(mirror.id, "ftp", mirror.ftp_url, job))
            except ScanError as e:
                error = str(e)
        if error == ERR_IN_PROGRESS:
            log.warn("[{name}] {err}", name=mirror.name, err=error)
            return ScanJobResult("in-progress", error=error)
        return ScanJobResult("failed", error=error)

    # -- one scan ----------------------------------------------------------------------------

    async def scan(self, mirror_id: int, protocol: str, url: str, job: _Job | None = None) -> ScanResult:
        """Go ``Scan(type, url, id)``: lock, attempt mark, listing, commit, tz offset, event 8.

        Do not cancel this coroutine itself (it may be waiting for Redis); abort ``job`` instead.
        """
        typ = _scanner_type(protocol)
        job = job or _Job()
        if self.stopping or job.aborted:
            raise ScanAborted()
        name = as_str(await self.redis.execute("HGET", schema.MIRRORS, str(mirror_id)))
        if name is None:
            raise ScanError("mirror not found")
        tx = MirrorScanTransaction(self.redis, mirror_id, name, batch=self.batch)
        started = self.reactor.seconds()
        try:
            await tx.begin(typ)  # ScanInProgress: nothing logged, lastSync untouched
        except ScanInProgress:
            SCAN_FAILURES.labels(name, protocol, "in_progress").inc()
            raise
        try:
            outcome = await self._list(protocol, url, tx, name, job)
            result = await tx.commit(typ, outcome.precision_ns)
        except Exception as e:
            message = _message(e)
            SCAN_FAILURES.labels(name, protocol,
                                 "aborted" if isinstance(e, ScanAborted) else "failed").inc()
            await tx.fail(message)
            if isinstance(e, ScanError) and str(e) == message:
                raise
            raise (ScanAborted(message) if isinstance(e, ScanAborted) else ScanError(message)) from None
        except BaseException:
            SCAN_FAILURES.labels(name, protocol, "aborted").inc()
            await tx.fail(ERR_ABORTED)
            raise
        SCAN_DURATION.labels(name).set(self.reactor.seconds() - started)
        SCAN_FILES.labels(name).set(result.files_indexed)
        if result.unchanged:
            SCAN_UNCHANGED.labels(name, protocol).inc()
        try:
            offset = await self.adjust_tz_offset(mirror_id, name, outcome.precision_ns)
            result = replace(result, tz_offset_ms=offset)
        finally:
            await tx.complete(result)
        return result

    async def _list(self, protocol: str, url: str, tx: MirrorScanTransaction, name: str,
                    job: _Job) -> ListingOutcome:
        if protocol == "rsync":
            listing: Coroutine[defer.Deferred[object], object, ListingOutcome] = rsync.list_rsync(
                url, tx.add, reactor=self.reactor, identifier=name, on_records=tx.add_records,
                timeout=rsync.DEFAULT_IDLE_TIMEOUT if self.rsync_timeout is None else self.rsync_timeout)
        else:
            listing = ftp.list_ftp(
                url, tx.add, reactor=self.reactor, identifier=name, on_records=tx.add_records,
                timeout=ftp_client.IO_TIMEOUT if self.ftp_timeout is None else self.ftp_timeout)
        d = defer.Deferred.fromCoroutine(listing)
        job.lister = d
        self._jobs.add(job)
        try:
            if self.stopping or job.aborted:
                d.cancel()
            outcome: ListingOutcome = await d
        except defer.CancelledError:
            raise ScanAborted() from None
        finally:
            job.lister = None
            self._jobs.discard(job)
        return outcome

    # -- time-zone offset --------------------------------------------------------------------

    async def adjust_tz_offset(self, mirror_id: int, name: str, precision_ns: int) -> int:
        """Detect and store ``tzoffset``; returns it (0 when off, undetected or on errors)."""
        try:
            offset: int | None = 0
            if self.config.FixTimezoneOffsets:
                offset = await self._detect_offset(mirror_id, name, precision_ns)
            if offset is None:
                return 0  # a read failed: write nothing
            await self.redis.execute("HMSET", schema.mirror_key(mirror_id), "tzoffset", str(offset))
            await self.redis.publish(schema.CHANNEL_MIRROR_UPDATE, str(mirror_id))
        except (RedisUnavailable, ResponseError) as e:
            log.error("Unable to check timezone shifts: {err}", err=e)
            return 0
        if offset:
            log.info("Timezone offset detected: applied correction of {ms}ms", ms=offset)
        return offset

    async def _detect_offset(self, mirror_id: int, name: str, precision_ns: int) -> int | None:
        # Read FILE_* and FILEINFO_* straight from Redis: the cache may predate the commit.
        paths = as_str_list(await self.redis.execute("SRANDMEMBER", schema.handled_files_key(mirror_id),
                                                     str(tzoffset.SAMPLE_SIZE)))
        cmds: list[tuple[str, ...]] = []
        for p in paths:
            cmds.append(("HMGET", schema.file_key(p), "size", "modTime"))
            cmds.append(("HMGET", schema.file_info_key(mirror_id, p), "size", "modTime"))
        replies = await self.redis.pipeline(cmds) if cmds else []
        if any(isinstance(r, Exception) for r in replies):
            log.error("Unable to check timezone shifts: {err}",
                      err=next(r for r in replies if isinstance(r, Exception)))
            return None
        samples = []
        for i, p in enumerate(paths):
            local = FileInfo.from_redis(p, as_str_list(replies[2 * i]))
            remote = FileInfo.from_redis(p, as_str_list(replies[2 * i + 1]))
            samples.append(tzoffset.TzSample(local.size, local.mod_time_ns, remote.size,
                                             remote.mod_time_ns))
        verdict = tzoffset.compute_tz_offset(len(paths), samples, precision_ns)
        if not verdict.detected:
            log.warn("[{name}] {msg}", name=name, msg=tzoffset.WARN_UNABLE)
        return verdict.offset_ms

    # -- stopping ----------------------------------------------------------------------------

    def _abortable(self, factory: Callable[[_Job], Coroutine[defer.Deferred[object], object, T]]) -> defer.Deferred[T]:
        """Run ``factory(job)``; cancelling the result aborts the job's listing only (see the
        module doc); the scan then cleans up in the background (:meth:`stop` waits for it)."""
        job = _Job()
        inner = defer.Deferred.fromCoroutine(factory(job))
        cleaned_up: defer.Deferred[None] = defer.Deferred()
        self._scans.add(cleaned_up)

        def finished(result: T | Failure) -> T | Failure:
            self._scans.discard(cleaned_up)
            cleaned_up.callback(None)
            return result

        inner.addBoth(finished)
        return follow(inner, consume=True, on_cancel=job.abort)

    def abort_listers(self) -> None:
        for job in list(self._jobs):
            job.abort()

    async def stop(self) -> None:
        """Abort every running scan and wait until each has cleaned up and released its lock."""
        self.stopping = True
        self.abort_listers()
        self.http.cancel_all()
        for cleaned_up in list(self._scans):
            await follow(cleaned_up)
        for trace in list(self._traces.values()):
            await _quietly(follow(trace))


def _log_trace_failure(failure: Failure) -> None:
    if not failure.check(defer.CancelledError):
        log.failure("trace fetch", failure)


async def _quietly(d: defer.Deferred[T]) -> None:
    try:
        await d
    except BaseException:
        pass


def _message(e: BaseException) -> str:
    """The error text logged and stored in the mirror log (event 1 ``Err``).

    A mirror's garbage reaches error texts as lone surrogates (listings are decoded with
    ``surrogateescape`` to keep names byte-exact); they are replaced by U+FFFD here, as Go's
    JSON encoder does with invalid UTF-8, so the log line, the stored event and the error
    returned to the caller say the same thing and nothing downstream meets an unencodable str.
    """
    if isinstance(e, defer.CancelledError):
        return ERR_ABORTED
    text = str(e) or e.__class__.__name__
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
