"""The download log ``<LogDir>/downloads.log``, byte-compatible with Go's.

Why its own object: operators feed this file to their own tools and rotate it with the Go
original's logrotate snippet (``postrotate`` sends ``SIGUSR1``), so the header, the line prefix and
the line bodies must not change, and :meth:`DownloadLog.reopen` must follow a rotated file.

Each line is one ``write(2)`` on an ``O_APPEND`` descriptor, as Go's ``log.Logger`` does: no
buffering to lose on a crash, no interleaving between processes sharing the file, and a local
append costs a few microseconds (no thread hop needed on the reactor).

A full or read-only filesystem never stops a redirect: a line that cannot be written is dropped,
the condition is logged once (not once per request) and its end too, with the count of lines
dropped; writing resumes by itself when space returns. A line cut short by a full disk is ended
before the next one, so every later line stays whole. A file that cannot be opened is tried again
every :data:`REOPEN_INTERVAL` seconds.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mirrorbits.config import Config
from mirrorbits.reactor import default_reactor

if TYPE_CHECKING:
    from mirrorbits.web.render import Results

__all__ = ["DownloadLog", "format_line", "header", "prefix"]

log = Logger(namespace="mirrorbits.downloadlog")

FILENAME = "downloads.log"
#: Seconds between two attempts to open a download log that could not be opened.
REOPEN_INTERVAL = 5.0

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386", "armv7l": "arm"}


def header(now: float | None = None, hostname: str | None = None) -> str:
    """The three ``#`` lines of a new or empty log file (Go ``setDownloadLogWriter``).

    Go's third line names its compiler and runtime; ours names the Python implementation and
    version in the same shape (``Built with <impl> <version> for <os>/<arch>``).
    """
    t = time.localtime(time.time() if now is None else now)
    host = socket.gethostname() if hostname is None else hostname
    machine = platform.machine()
    return (f"# Log file created at: {time.strftime('%Y/%m/%d %H:%M:%S', t)}\n"
            f"# Running on machine: {host}\n"
            f"# Binary: Built with {platform.python_implementation().lower()} "
            f"python{platform.python_version()} for {sys.platform}/{_ARCH.get(machine, machine)}\n")


def prefix(now: float) -> str:
    """Go ``log.Ldate|log.Lmicroseconds``: ``YYYY/MM/DD HH:MM:SS.micro`` in local time, then a space."""
    t = time.localtime(now)
    micro = min(int((now % 1) * 1_000_000), 999_999)  # Go truncates to the microsecond
    return f"{time.strftime('%Y/%m/%d %H:%M:%S', t)}.{micro:06d} "


def _distance(d: float) -> str:
    """``strconv.FormatFloat(float64(d), 'f', 2, 32)``: d already holds a float32 value."""
    return f"{d:.2f}"


def format_line(typ: str, status: int, method: str, results: Results | None,
                error: str | None = None) -> str:
    """The line body without prefix or newline (Go ``LogDownload``).

    ``results`` is the redirector's ``Results`` (``file_info.path``, ``ip``, ``client.as_num``,
    ``mirror_list`` of ``Chosen``, ``fallback``) or None.  ``error`` is the error text; None is
    written ``<unknown>`` where an error is expected.
    """
    path = ip = ""
    if results is not None:
        path = results.file_info.path
        ip = results.ip
    errstr = "<unknown>" if error is None else error
    head = f'{typ} {status} {method} "{path}" ip:{ip}'
    mlist = results.mirror_list if results is not None else []
    if status in (302, 200) and results is not None and mlist:
        first = mlist[0]
        cand = first.candidate
        fallback = " fallback:true" if results.fallback else ""
        client_asn = results.client.as_num
        same = "same" if cand.asnum > 0 and cand.asnum == client_asn else ""
        countries = ",".join(cand.country_list)
        return (f"{head} mirror:{cand.name}{fallback} {same}asn:{cand.asnum} "
                f"distance:{_distance(first.distance)}km countries:{countries}")
    if status == 404 and results is not None:
        return head
    if status == 500 and results is not None:
        name = mlist[0].candidate.name if mlist else "unknown"
        return f"{head} mirror:{name} error:{errstr}"
    return f"{head} error:{errstr}"


class DownloadLog(Service):
    """``downloads.log`` of the daemon; a no-op while ``LogDir`` is empty.

    Reopened (closed, opened again, header rule re-applied) by the process's lifecycle on
    ``SIGUSR1`` and on every config reload (``SIGHUP``), once each, so ``logrotate`` works with the
    Go original's snippet; a changed ``LogDir`` takes effect there too.
    """

    name = "downloadlog"

    def __init__(self, config: Callable[[], Config], clock: Callable[[], float] = time.time,
                 reactor: IReactorTime | None = None) -> None:
        self.config = config
        self.clock = clock
        self.reactor = reactor
        self._fd: int | None = None
        self.path: str | None = None
        #: The error (``strerror``) lines are being dropped for, None while they are written.
        self._failing: str | None = None
        self._dropped = 0
        #: The last line was cut short (disk full in its middle): end it before the next one.
        self._torn = False
        #: The header of a new file could not be written yet.
        self._header_pending = False
        #: The file could not be opened: why (logged once), and the next attempt.
        self._open_error: str | None = None
        self._retry: IDelayedCall | None = None

    # -- file ----------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open ``<LogDir>/downloads.log`` (append/create, mode 0664) and write the header when
        the file is new or empty.  An error is logged (once while it lasts) and leaves the log
        disabled until an attempt every :data:`REOPEN_INTERVAL` seconds succeeds."""
        self.close()
        log_dir = self.config().LogDir
        if not log_dir:
            self._open_error = None
            return
        path = os.path.join(log_dir, FILENAME)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o664)
        except OSError as e:
            if e.strerror != self._open_error:
                log.critical("Cannot open log file {path}: {err}", path=path, err=e.strerror)
            self._open_error = e.strerror
            self._retry = self._reactor().callLater(REOPEN_INTERVAL, self._reopen_failed)
            return
        if self._open_error is not None:
            log.info("Download log {path} opened", path=path)
            self._open_error = None
        self._fd = fd
        self.path = path
        self._header_pending = True
        self._write_header()

    def _reactor(self) -> IReactorTime:
        if self.reactor is None:
            self.reactor = default_reactor()
        return self.reactor

    def _reopen_failed(self) -> None:
        self._retry = None
        if self.running and self._fd is None:
            self.open()

    def _write_header(self) -> None:
        """The header, when the file is still empty (a new file, or one whose header a full disk
        refused)."""
        fd = self._fd
        if fd is None:
            return
        try:
            if os.fstat(fd).st_size == 0:
                os.write(fd, header(self.clock()).encode("utf-8", "surrogateescape"))
            self._header_pending = False
        except OSError as e:
            if self._failing is None:
                log.error("Cannot write the header of {path}: {err}", path=self.path, err=e.strerror)
            self._failing = e.strerror

    def close(self) -> None:
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def reopen(self) -> None:
        """Close and open again (log rotation, ``LogDir`` change)."""
        log.debug("Re-opening the download log in {dir!r}", dir=self.config().LogDir)
        self.open()

    def write(self, typ: str, status: int, method: str, results: Results | None,
              error: str | None = None) -> None:
        """Append one line (see :func:`format_line`); nothing when the log is disabled."""
        fd = self._fd
        if fd is None:
            return
        if self._header_pending:
            self._write_header()
        line = prefix(self.clock()) + format_line(typ, status, method, results, error) + "\n"
        data = line.encode("utf-8", "surrogateescape")
        if self._torn:
            data = b"\n" + data
        pos = 0
        try:
            while pos < len(data):  # a short write: the disk filled up in the middle of the line
                pos += os.write(fd, data[pos:])
        except OSError as e:
            if pos:
                self._torn = data[pos - 1:pos] != b"\n"
            self._dropped += 1
            if e.strerror != self._failing:
                log.error("Cannot write to the download log {path}: {err} (lines are dropped until "
                          "it can be written again)", path=self.path, err=e.strerror)
                self._failing = e.strerror
            return
        self._torn = False
        if self._failing is not None:
            log.info("Download log {path} written again ({n} lines dropped)", path=self.path,
                     n=self._dropped)
            self._failing = None
            self._dropped = 0

    def log(self, typ: str, status: int, method: str, results: Results | None) -> None:
        """The redirector's call once it has answered: the error text is ``results.error``."""
        if self._fd is None:  # disabled: not even a call more on the redirect's path
            return
        self.write(typ, status, method, results, results.error if results is not None else None)

    # -- service -------------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.open()

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        self.close()
