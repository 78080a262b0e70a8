"""Types shared by the mirror listers (rsync, FTP) and the scan commit.

A lister turns a mirror's listing into a stream of :class:`ListedFile`; the commit
(`scan.commit`) writes them to Redis.  Keeping the record here, free of any Redis or
Twisted import, lets the parsers be tested as pure functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache

from mirrorbits.gocompat import format_gts

#: Precision of the modification times a scan delivers, in nanoseconds.
PRECISION_NONE = 0
PRECISION_MS = 1_000_000
PRECISION_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ListedFile:
    """One regular file seen on a mirror.

    ``path`` is repository-relative and starts with ``/``.  ``mtime_ns`` is Unix time in
    nanoseconds, or ``None`` for Go's zero time (``0001-01-01 00:00:00 +0000 UTC``),
    which is what the Go original stores when it could not learn the time.  ``zone`` is
    the zone name the Go original would print in the GTS string: ``"UTC"`` for rsync and
    MLSD times (and for the zero time), ``"GMT"`` for MDTM and Unix ``LIST`` times.
    """

    path: str
    size: int
    mtime_ns: int | None
    zone: str = "UTC"


#: Callback receiving each file.  It may return an awaitable (e.g. a Deferred from a
#: batched Redis write); the lister then stops reading until it completes, so memory
#: stays bounded whatever the size of the listing.
OnFile = Callable[[ListedFile], "Awaitable[object] | None"]


#: Callback receiving listed files in bulk, as staged records (:func:`staged_record`'s format), in
#: listing order.  Like :data:`OnFile` it may return an awaitable to pause the lister.
OnRecords = Callable[[list[bytes]], "Awaitable[object] | None"]


def staged_record(f: ListedFile) -> bytes:
    """The bytes a scan stages for one listed file: ``size\\0modTime\\0path\\n``, the size in decimal,
    the modTime as the Go original stores it in ``FILEINFO`` (``2006-01-02 15:04:05 +0000 UTC``)
    and the path byte for byte (names are decoded with ``surrogateescape``).

    A lister that parses in bulk builds these bytes straight from its input, without a
    :class:`ListedFile` per line; this is the one definition both must agree with.  A path
    cannot contain a newline (both listings are split into lines on it), which is what lets the
    records be concatenated and split again on ``\\n``.
    """
    if "\n" in f.path:
        raise ScanError(f"file name with a newline: {f.path!r}")
    return f"{f.size}\0{_stored_time(f.mtime_ns, f.zone)}\0{f.path}\n".encode("utf-8", "surrogateescape")


@lru_cache(maxsize=4096)
def _stored_time(mtime_ns: int | None, zone: str) -> str:
    """Go's time text of a listed time, memoised: a listing's files share few distinct times, and
    formatting one costs more than parsing its line."""
    return format_gts(mtime_ns, zone)  # type: ignore[arg-type]


class ScanError(Exception):
    """A mirror listing failed; ``str(err)`` is the text the Go original logs."""


class ScanAborted(ScanError):
    """The scan was stopped (daemon stopping or the caller cancelled it)."""

    def __init__(self, message: str = "scan aborted") -> None:
        super().__init__(message)


@dataclass(slots=True)
class ListingOutcome:
    """What a successful listing reports besides the files themselves."""

    files: int = 0
    precision_ns: int = PRECISION_NONE
    warnings: list[str] = field(default_factory=list)
    skipped_lines: int = 0
