"""Listing a mirror over FTP: walk its tree with a bounded pool of control connections and hand
every file to the scan.

The protocol is :mod:`mirrorbits.scan.ftp_client`'s and the line formats are
:mod:`mirrorbits.scan.ftp_parsers`'; this module decides what to list, which time to keep for each
file (MDTM, else the MLSD ``modify`` fact) and with which precision.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger

from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.scan.ftp_client import CONNECT_TIMEOUT, IO_TIMEOUT, FtpError, FtpSession, parse_ftp_url
from mirrorbits.scan.ftp_parsers import EntryType, Precision
from mirrorbits.scan.listing import (
    ListedFile,
    ListingOutcome,
    OnFile,
    OnRecords,
    ScanAborted,
    ScanError,
    staged_record,
)

log = Logger(namespace="mirrorbits.scan.ftp")

RFC3659_WARNING = (
    "This server does not support some of the RFC 3659 extensions, consider using rsync instead."
)



class _SessionPool:
    """Up to ``size`` logged-in sessions; extra ones are opened lazily and best-effort."""

    def __init__(self, first: FtpSession, opener: Callable[[], Awaitable[FtpSession]], size: int) -> None:
        self._all = [first]
        self._idle = [first]
        self._opener = opener
        self._size = max(1, size)
        self._opening = 0
        self._waiters: deque[defer.Deferred[FtpSession]] = deque()

    @property
    def sessions(self) -> list[FtpSession]:
        return list(self._all)

    async def acquire(self) -> FtpSession:
        if self._idle:
            return self._idle.pop()
        if len(self._all) + self._opening < self._size:
            self._opening += 1
            try:
                session = await self._opener()
            except (FtpError, OSError) as exc:
                # The server may limit connections per client: stay with what we have.
                log.info("extra FTP connection refused ({exc}); keeping {n}", exc=exc, n=len(self._all))
                self._size = len(self._all)
            else:
                self._all.append(session)
                return session
            finally:
                self._opening -= 1
            if self._idle:  # released while we were trying to open another one
                return self._idle.pop()
        waiter: defer.Deferred[FtpSession] = defer.Deferred()
        self._waiters.append(waiter)
        return await waiter

    def release(self, session: FtpSession) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.called:
                waiter.callback(session)
                return
        self._idle.append(session)


@dataclass(slots=True)
class FtpOutcome(ListingOutcome):
    """Result of a successful FTP listing; ``precision_ns`` may be 0 (neither MDTM nor MLST)."""

    features: frozenset[str] = field(default_factory=frozenset)
    connections: int = 1


async def _call_on_file(on_file: OnFile, listed: ListedFile) -> None:
    result = on_file(listed)
    if result is not None and hasattr(result, "__await__"):
        await result


async def _call_on_records(on_records: OnRecords, records: list[bytes]) -> None:
    result = on_records(records)
    if result is not None and hasattr(result, "__await__"):
        await result


async def list_ftp(
    url: str,
    on_file: OnFile,
    *,
    reactor: IDaemonReactor | None = None,
    timeout: float = IO_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    max_connections: int = 1,
    identifier: str = "",
    on_records: OnRecords | None = None,
) -> FtpOutcome:
    """List a mirror over FTP, calling ``on_file`` for every file (paths relative to the URL), or
    ``on_records`` once per directory with the staged records of its files when it is given.

    ``timeout`` bounds every wait for a reply or for listing data; ``max_connections``
    bounds the control (and so data) connections opened to the mirror at once (the Go
    original uses one).  Raises ValueError for a non-ftp URL, :class:`ScanError` with a
    reason on failure, :class:`ScanAborted` when cancelled.
    """
    clock = reactor if reactor is not None else default_reactor()
    target = parse_ftp_url(url)

    def opener() -> Awaitable[FtpSession]:
        return FtpSession.open(clock, target, connect_timeout=connect_timeout, io_timeout=timeout)

    try:
        first = await opener()
    except FtpError as exc:
        raise ScanError(str(exc)) from None
    except defer.CancelledError:
        raise ScanAborted() from None
    pool = _SessionPool(first, opener, max_connections)
    outcome = FtpOutcome(features=frozenset(first.features))
    precision = Precision()
    feat_mdtm, feat_mlst = first.has("MDTM"), first.has("MLST")
    try:
        log.info("[{identifier}] Requesting file list via ftp...", identifier=identifier)
        if not (feat_mdtm and feat_mlst):
            log.warn("[{identifier}] {msg}", identifier=identifier, msg=RFC3659_WARNING)
            outcome.warnings.append(RFC3659_WARNING)
        start = target.path or "/"
        try:
            await first.cwd(start)
            await first.pwd()
        except FtpError as exc:
            raise ScanError(f"ftp error {exc}") from None
        prefix = start.rstrip("/")

        async def walk(directory: str) -> None:
            session = await pool.acquire()
            subdirs: list[str] = []
            records: list[bytes] = []
            try:
                entries = await session.list(directory)
                for entry in entries:
                    if entry.type is EntryType.FOLDER:
                        if entry.name not in (".", ".."):
                            subdirs.append(directory + entry.name + "/")
                        continue
                    if entry.type is not EntryType.FILE:
                        continue
                    full = directory + entry.name
                    mtime: int | None = None
                    zone = "UTC"
                    if feat_mdtm:
                        mtime = await session.mdtm(full)
                        if mtime is not None:
                            zone = "GMT"
                            precision.saw_mdtm(mtime)
                    if mtime is None and feat_mlst:
                        mtime, zone = entry.mtime_ns, entry.zone
                        precision.saw_listing_time()
                    relative = full[len(prefix) :] if full.startswith(prefix) else full
                    outcome.files += 1
                    listed = ListedFile(relative, entry.size, mtime, zone if mtime is not None else "UTC")
                    if on_records is None:
                        await _call_on_file(on_file, listed)
                    else:
                        records.append(staged_record(listed))
            finally:
                pool.release(session)
            if records and on_records is not None:
                await _call_on_records(on_records, records)
            if subdirs:
                await _gather([walk(sub) for sub in subdirs])

        try:
            await walk(prefix + "/")
        except FtpError as exc:
            raise ScanError(f"ftp error {exc}") from None
        outcome.precision_ns = precision.value
        outcome.connections = len(pool.sessions)
        for session in pool.sessions:
            await session.quit()
        return outcome
    except defer.CancelledError:
        raise ScanAborted() from None
    finally:
        for session in pool.sessions:
            session.abort()


async def _gather(coros: list[Coroutine[defer.Deferred[object], object, None]]) -> None:
    """Run coroutines concurrently; on the first failure cancel the others and re-raise it."""
    ds = [defer.ensureDeferred(c) for c in coros]
    try:
        await defer.gatherResults(ds, consumeErrors=True)
    except defer.FirstError as first:
        for d in ds:
            if not d.called:
                d.cancel()
        first.subFailure.raiseException()
    except defer.CancelledError:
        for d in ds:
            if not d.called:
                d.cancel()
        raise
