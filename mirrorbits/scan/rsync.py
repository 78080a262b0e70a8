"""Listing a mirror over rsync.

The ``rsync`` binary does the protocol work; we run it with no destination, so it prints
one line per entry, and parse that listing as it streams.  :class:`RsyncLister` is a
``ProcessProtocol``: stdout and stderr are read concurrently by the reactor (the Go
original read stderr only after stdout and could deadlock), lines are handed to the
callback one at a time (memory does not grow with the mirror), and a line that does not
parse is logged and skipped (the Go original panics on it).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, cast
from urllib.parse import unquote, urlsplit

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.gocompat import civil_to_unix_ns, format_gts
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.scan.listing import (
    PRECISION_S,
    ListedFile,
    ListingOutcome,
    OnFile,
    OnRecords,
    ScanAborted,
    ScanError,
    staged_record,
)

log = Logger(namespace="mirrorbits.scan.rsync")

# Go's RE2 ``\s`` is exactly [\t\n\f\r ] (no \v), and ``$`` means end of text.
_WS = r"[\t\n\f\r ]"
RSYNC_LINE_RE = re.compile(
    rf"^.+{_WS}+([0-9,]+){_WS}+([0-9/]+){_WS}+([0-9:]+){_WS}+(.*)\Z"
)
_DATE_RE = re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2}) ([0-9]{1,2}):([0-9]{2}):([0-9]{2})\Z")

#: Error texts for rsync exit codes, as Go words them.
EXIT_MESSAGES: dict[int, str] = {
    5: "rsync: Error starting client-server protocol",
    10: "rsync: Error in socket I/O",
    11: "rsync: Error in file I/O",
    30: "rsync: Timeout in data send/receive",
    35: "Timeout waiting for daemon connection",
}
#: Exit code the Go original counts as success (partial transfer, e.g. an unreadable dir).
EXIT_PARTIAL = 23
PARTIAL_WARNING = "rsync: Partial transfer due to error"

# Go's syscall.Signal.String() for the signals an rsync child is likely to die from.
_GO_SIGNAL_NAMES = {
    1: "hangup",
    2: "interrupt",
    3: "quit",
    6: "aborted",
    9: "killed",
    11: "segmentation fault",
    13: "broken pipe",
    15: "terminated",
}

#: Longest stdout line we keep; a longer one is skipped (bounded memory on garbage).
MAX_LINE_BYTES = 1 << 20
#: rsync writes its listing one line per ``write()``, so a reader that keeps up wakes once per line
#: (an epoll round and a pipe read per listed file: ~40% of a rescan's CPU, measured).  After a read
#: shorter than :data:`SHORT_READ` the lister stops reading for :data:`READ_PAUSE` seconds and lets
#: the pipe fill (rsync blocks once its 64 KiB are full): each wake-up then reads ~100 lines, at a
#: cost of at most a few milliseconds of latency per pause.
SHORT_READ = 4096
READ_PAUSE = 0.004
#: Safety-net idle timeout: rsync's own --timeout (30 s, 60 s for rsync-ssl) should fire first.
DEFAULT_IDLE_TIMEOUT = 120.0
#: Seconds rsync gets to end its helper process after SIGTERM before it is sent SIGKILL.
KILL_GRACE = 2.0
_MAX_KEPT_STDERR = 200


class RsyncOutcome(ListingOutcome):
    """Result of a successful rsync listing (precision is always 1 s)."""


def parse_rsync_time(text: str) -> int | None:
    """Parse ``YYYY/MM/DD HH:MM:SS`` (UTC) to Unix ns with Go's time.Parse rules, or None."""
    m = _DATE_RE.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    return civil_to_unix_ns(year, month, day, hour, minute, second)


def classify_rsync_line(line: str) -> tuple[ListedFile | None, str | None]:
    """Parse one listing line without side effects.

    Returns ``(file, None)`` for a file, ``(None, None)`` for an entry skipped on purpose
    (directory or symlink, by the line's first character as in Go), and
    ``(None, problem)`` for a line that cannot be used; ``problem`` is the log text.
    """
    m = RSYNC_LINE_RE.match(line)
    if m is None:
        # Go panics here (nil match); we skip the line.
        return None, f"ScanRsync: Unparsable line: {line!r}"
    if line[0] in ("d", "l"):
        return None, None
    size_text, date_text, time_text, name = m.groups()
    if name == "":
        # Go panics indexing name[0]; we skip the line.
        return None, f"ScanRsync: Empty file name: {line!r}"
    if name[0] != "/":
        name = "/" + name
    stamp = f"{date_text} {time_text}"
    mtime = parse_rsync_time(stamp)
    if mtime is None:
        return None, f"ScanRsync: Invalid mod time: {stamp}"
    digits = size_text.replace(",", "")
    if not digits or int(digits) > (1 << 63) - 1:
        return None, f"ScanRsync: Invalid size: {digits}"
    return ListedFile(path=name, size=int(digits), mtime_ns=mtime, zone="UTC"), None


# --- the same parse in bulk ----------------------------------------------------------------
#
# One Python object per line (a decoded str, a match, a ListedFile, a modTime computed through
# Unix time and formatted back) cost ~5 us per listed file.  A whole read of rsync's output (an
# 8 KiB chunk, ~100 lines) is instead matched by one ``findall`` over the bytes, and each line's
# staged record is assembled from the matched bytes: the date is validated and reformatted once per
# distinct day, the time of day is already in the stored form.  This path only takes the lines it
# can prove it parses exactly as :func:`classify_rsync_line` does; any chunk with a line it is not
# sure of goes through :func:`classify_rsync_line` line by line (the tests compare both).

# The bulk pattern takes the common line exactly: a first field without blanks, a size as rsync
# prints it (digits in groups of three, at most 18 digits, no leading zero), a valid
# ``YYYY/MM/DD`` shape, a valid ``HH:MM:SS`` time of day and a name that is not blanks only (Go's
# greedy blanks take those and leave the name empty; ``/`` is prepended unless it has one).
# RSYNC_LINE_RE's ``^.+`` is greedy: when the name itself holds
# ``<blank><digits><blanks><digits/><blanks><digits:><blank>``, Go splits the line there, not
# after the first field.  Such a split point can only start in the name (the date holds a ``/``
# and the time a ``:``, so neither can begin one), so a row whose name has a blank is checked for
# one (_RSYNC_SPLIT_RE) and, if it holds one, the chunk goes to the line-by-line parser.
# Whitespace excludes ``\\n`` (each match stays on its line) and ``\\r`` (a chunk holding one is
# left to the line-by-line parser, which strips a trailing one).
_WS_IN_LINE = rb"[\t\f ]"
_RSYNC_LINES_RE = re.compile(
    rb"^([^\t\f\n ])[^\t\f\n ]*" + _WS_IN_LINE
    + rb"+(0(?![0-9,])|[1-9][0-9]{0,2}(?:,[0-9]{3}){0,5}(?![0-9,])|[1-9][0-9]{3,17}(?![0-9,]))"
    + _WS_IN_LINE + rb"+([0-9]{4}/[0-9]{2}/[0-9]{2})"
    + _WS_IN_LINE + rb"+((?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])"
    + _WS_IN_LINE + rb"+(?=[^\t\f\n ])/?(.*)$", re.MULTILINE)
_RSYNC_SPLIT_RE = re.compile(
    _WS_IN_LINE + rb"[0-9,]+" + _WS_IN_LINE + rb"+[0-9/]+" + _WS_IN_LINE + rb"+[0-9:]+(?=[\t\f ])")
_UTC_MIDNIGHT_SUFFIX = " 00:00:00 +0000 UTC"
_MAX_DATES = 100_000


def _stored_date(date: bytes) -> bytes:
    """``YYYY-MM-DD`` as the stored modTime of that day in UTC begins, or b"" when rsync's
    ``YYYY/MM/DD`` is not a date Go's ``time.Parse`` accepts."""
    mtime = parse_rsync_time(date.decode("ascii") + " 00:00:00")
    if mtime is None:
        return b""
    day, sep, rest = format_gts(mtime, "UTC").partition(" ")
    return day.encode("ascii") if sep and " " + rest == _UTC_MIDNIGHT_SUFFIX else b""


def rsync_chunk_records(chunk: bytes, dates: dict[bytes, bytes]) -> list[bytes] | None:
    """The staged records (:func:`~mirrorbits.scan.listing.staged_record`) of the files listed in
    ``chunk`` (whole lines, each ending in ``\\n``), in order; directories and symlinks skipped.
    ``dates`` memoises :func:`_stored_date` across chunks.  Returns None when some line of the
    chunk must go through :func:`classify_rsync_line` (it does not parse, or it is unusual)."""
    lines = chunk.count(b"\n")
    if b"\r" in chunk:
        return None
    rows = _RSYNC_LINES_RE.findall(chunk)
    if len(rows) != lines:
        return None
    out: list[bytes] = []
    append = out.append
    for first, size, date, tod, name in rows:
        if first == b"d" or first == b"l":
            continue
        if (b" " in name or b"\t" in name or b"\f" in name) and _RSYNC_SPLIT_RE.search(b" " + name):
            return None
        day = dates.get(date)
        if day is None:
            if len(dates) >= _MAX_DATES:  # a hostile listing inventing dates: bounded memory
                dates.clear()
            day = dates[date] = _stored_date(date)
        if not day:
            return None
        append(b"%s\0%s %s +0000 UTC\0/%s\n" % (size.replace(b",", b""), day, tod, name))
    return out


# --- URL → command line -------------------------------------------------------------

_PATH_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~$&+,/:;=@"
)
_VALID_ENCODED_EXTRA = frozenset("!'()*[]%")
_HEX = frozenset("0123456789abcdefABCDEF")


def _check_escapes(text: str) -> None:
    """Reject an invalid %-escape like Go's url.Parse does."""
    i = text.find("%")
    while i >= 0:
        chunk = text[i + 1 : i + 3]
        if len(chunk) != 2 or not set(chunk) <= _HEX:
            raise ValueError(f'invalid URL escape "{text[i:i + 3]}"')
        i = text.find("%", i + 3)


def _go_escape_path(path: str) -> str:
    """Go's url.escape(path, encodePath): what u.String() prints for a decoded path."""
    out = []
    for byte in path.encode("utf-8", "surrogateescape"):
        ch = chr(byte)
        out.append(ch if ch in _PATH_SAFE else f"%{byte:02X}")
    return "".join(out)


def _go_escaped_path(raw_path: str) -> str:
    """Go's URL.EscapedPath(): keep the raw path if it is validly encoded, else re-escape.

    As in Go, a space in the path comes out as ``%20``.
    """
    _check_escapes(raw_path)
    decoded = unquote(raw_path, errors="surrogateescape")
    if _go_escape_path(decoded) == raw_path:
        return raw_path
    if all(c in _PATH_SAFE or c in _VALID_ENCODED_EXTRA for c in raw_path):
        return raw_path
    return _go_escape_path(decoded)


def rsync_command(url: str) -> tuple[list[str], dict[str, str]]:
    """Build the exact argv and (complete, not inherited) environment for listing ``url``.

    Raises ValueError "<url> does not start with rsync:// or rsyncs://" for other schemes.
    """
    if url.startswith("rsync://"):
        program, options = "rsync", ["--timeout=30", "--contimeout=30"]
    elif url.startswith("rsyncs://"):
        program, options = "rsync-ssl", ["--timeout=60"]
        url = "rsync://" + url[len("rsyncs://") :]
    else:
        raise ValueError(f"{url} does not start with rsync:// or rsyncs://")
    parts = urlsplit(url)
    env: dict[str, str] = {}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, has_password, password = userinfo.partition(":")
        _check_escapes(userinfo)
        if user:
            env["USER"] = unquote(user)
        if has_password:
            env["RSYNC_PASSWORD"] = unquote(password)
    env["TZ"] = "UTC"
    rebuilt = f"rsync://{netloc}{_go_escaped_path(parts.path)}"
    if parts.query or url.endswith("?"):
        rebuilt += "?" + parts.query
    if parts.fragment:
        rebuilt += "#" + parts.fragment
    argv = [program, "-r", "--no-motd", "--exclude=.~tmp~/", *options, rebuilt]
    return argv, env


# --- the process protocol ------------------------------------------------------------


class _ProcessPipes(Protocol):
    """What the lister uses of Twisted's process transport: ``IProcessTransport``, plus the
    ``IPushProducer`` methods the posix process has without declaring them (pausing stops reading
    rsync's output while a batch is written)."""

    def closeStdin(self) -> None: ...  # noqa: N802

    def signalProcess(self, signalID: str | int) -> None: ...  # noqa: N802, N803

    def loseConnection(self) -> None: ...  # noqa: N802

    def pauseProducing(self) -> None: ...  # noqa: N802

    def resumeProducing(self) -> None: ...  # noqa: N802


class RsyncLister(ProcessProtocol):
    """Streams an ``rsync`` listing into ``on_file`` line by line or, when ``on_records`` is given,
    into ``on_records`` a chunk of staged records at a time (parsed in bulk).

    ``done`` fires (with None) once the process ended and stdout is fully parsed; the
    end reason (a Failure wrapping ProcessDone or ProcessTerminated) is then in
    ``end_reason``.  Cancelling ``done`` kills rsync.
    """

    def __init__(
        self,
        on_file: OnFile,
        *,
        reactor: IReactorTime,
        identifier: str = "",
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        on_records: OnRecords | None = None,
        read_pause: float = READ_PAUSE,
    ) -> None:
        self._on_file = on_file
        self._on_records = on_records
        self._dates: dict[bytes, bytes] = {}
        #: Records of the lines parsed one by one, while a chunk goes through the exact parser.
        self._slow_records: list[bytes] | None = None
        self._read_pause = read_pause
        self._resting: IDelayedCall | None = None
        self._pipes_closed = False
        self._reactor = reactor
        self._identifier = identifier
        self._idle_timeout = idle_timeout
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line
        self._waiting = False  # a callback's awaitable is pending
        self._ended: Failure | None = None
        self._idle_call: IDelayedCall | None = None
        self._kill_call: IDelayedCall | None = None
        self.timed_out = False
        self.cancelled = False
        self.callback_error: Failure | None = None
        self.files = 0
        self.skipped = 0
        self.opendir_errors: deque[str] = deque(maxlen=_MAX_KEPT_STDERR)
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self._err_buf = bytearray()
        self.end_reason: Failure | None = None
        self.done: defer.Deferred[None] = defer.Deferred(self._cancel)
        #: Fires when the child has exited (used to reap it after a cancel).
        self.exited: defer.Deferred[None] = defer.Deferred()

    def _proc(self) -> _ProcessPipes:
        return cast(_ProcessPipes, self.transport)

    # -- lifecycle
    def connectionMade(self) -> None:
        self._proc().closeStdin()
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self._idle_timeout is None or self._ended is not None:
            return
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self._idle_timeout)
        else:
            self._idle_call = self._reactor.callLater(self._idle_timeout, self._idle_expired)

    def _disarm_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _idle_expired(self) -> None:
        self._idle_call = None
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """Stop the child if it still runs, and stop reading its output.

        SIGTERM first: rsync then ends the helper process it forked for the transfer. A
        SIGKILL leaves that helper running, blocked on the daemon's socket (and the
        daemon's connection child waiting on it) until the remote side gives up, which
        an rsync daemon without a ``timeout`` never does. SIGKILL follows after
        :data:`KILL_GRACE` if rsync is still there. Closing our ends of the pipes makes
        a helper that writes to them die of EPIPE.
        """
        if self._ended is None and self.transport is not None:
            self._signal("TERM")
            if self._kill_call is None:
                self._kill_call = self._reactor.callLater(KILL_GRACE, self._signal, "KILL")
            self._pipes_closed = True
            self._proc().loseConnection()

    def _signal(self, name: str) -> None:
        if self._ended is None:
            try:
                self._proc().signalProcess(name)
            except error.ProcessExitedAlready:
                pass

    def _cancel(self, _: defer.Deferred[None]) -> None:
        self.cancelled = True
        self._disarm_idle()
        self.kill()

    # -- stdout
    def outReceived(self, data: bytes) -> None:
        self._arm_idle()
        self._buf += data
        if len(data) < SHORT_READ and self._read_pause > 0 and self._resting is None:
            self._resting = self._reactor.callLater(self._read_pause, self._rested)
            self._update_reading()
        self._drain()

    def _rested(self) -> None:
        self._resting = None
        self._update_reading()

    def _update_reading(self) -> None:
        """Read rsync's output unless a callback's write is pending or the reader rests."""
        if self._ended is not None or self.transport is None or self._pipes_closed:
            return
        if self._waiting or self._resting is not None:
            self._proc().pauseProducing()
        else:
            self._proc().resumeProducing()

    def _drain(self) -> None:
        if self._on_records is not None:
            self._drain_chunks()
            return
        while not self._waiting and not self.done.called and self.callback_error is None:
            nl = self._buf.find(b"\n")
            if nl < 0:
                self._bound_partial_line()
                break
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._discarding:
                self._discarding = False
                continue
            self._line(raw)
        self._maybe_finish()

    def _bound_partial_line(self) -> None:
        """Drop the start of a line longer than :data:`MAX_LINE_BYTES` (and, until its newline,
        the rest of it)."""
        if len(self._buf) > MAX_LINE_BYTES:
            if not self._discarding:
                self._report(f"ScanRsync: line longer than {MAX_LINE_BYTES} bytes skipped")
            self._discarding = True
            del self._buf[:]

    def _drain_chunks(self) -> None:
        while not self._waiting and not self.done.called and self.callback_error is None:
            end = self._buf.rfind(b"\n")
            if end < 0:
                self._bound_partial_line()
                break
            if self._discarding:
                nl = self._buf.find(b"\n")
                del self._buf[: nl + 1]
                self._discarding = False
                continue
            chunk = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            self._chunk(chunk)
        self._maybe_finish()

    def _chunk(self, chunk: bytes) -> None:
        """Parse whole lines in bulk (or one by one when the bulk parser declines) and hand
        their records to ``on_records``."""
        assert self._on_records is not None
        records = rsync_chunk_records(chunk, self._dates)
        if records is None:
            records = self._slow_records = []
            try:
                for raw in chunk.split(b"\n")[:-1]:
                    self._line(raw)
            finally:
                self._slow_records = None
            if self.callback_error is not None:
                return
        else:
            self.files += len(records)
        if records:
            on_records = self._on_records
            self._hand_over(lambda: on_records(records))

    def _report(self, problem: str) -> None:
        self.skipped += 1
        log.error("[{identifier}] {problem}", identifier=self._identifier, problem=problem)

    def _line(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        line = raw.decode("utf-8", "surrogateescape")
        try:
            listed, problem = classify_rsync_line(line)
        except Exception as exc:  # defensive: never let a parser bug stop the scan
            listed, problem = None, f"ScanRsync: parser error {exc!r} on line {line!r}"
        if problem is not None:
            self._report(problem)
        if listed is None:
            return
        self.files += 1
        if self._slow_records is not None:
            try:
                self._slow_records.append(staged_record(listed))
            except Exception:
                self._callback_failed(Failure())
            return
        self._hand_over(lambda: self._on_file(listed))

    def _hand_over(self, call: Callable[[], object]) -> None:
        """Run a callback; wait for what it returns if that is awaitable; a raise fails the listing."""
        try:
            result = call()
        except Exception:
            self._callback_failed(Failure())
            return
        if result is not None and inspect.isawaitable(result):
            self._wait_for(result)

    def _wait_for(self, result: Awaitable[object]) -> None:
        d: defer.Deferred[object] = defer.ensureDeferred(result)  # type: ignore[arg-type]
        if d.called and not isinstance(getattr(d, "result", None), Failure):
            return
        self._waiting = True
        self._disarm_idle()
        self._update_reading()

        def resumed(res: object) -> None:
            self._waiting = False
            if isinstance(res, Failure):
                self._callback_failed(res)
                return
            if self._ended is None and self.transport is not None:
                self._update_reading()
                self._arm_idle()
            self._drain()

        d.addBoth(resumed)

    def _callback_failed(self, failure: Failure) -> None:
        if self.callback_error is None:
            self.callback_error = failure
        self._waiting = False
        self.kill()
        self._maybe_finish()

    # -- stderr
    def errReceived(self, data: bytes) -> None:
        self._arm_idle()
        self._err_buf += data
        while True:
            nl = self._err_buf.find(b"\n")
            if nl < 0:
                if len(self._err_buf) > MAX_LINE_BYTES:
                    del self._err_buf[:]
                return
            self._err_line(bytes(self._err_buf[:nl]))
            del self._err_buf[: nl + 1]

    def _err_line(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        # Go keeps lines containing ": opendir "; rsync >= 3.2 prints
        # 'rsync: [sender] opendir "x" (in mod) failed', which that test misses.
        if ": opendir " in line or "] opendir " in line:
            self.opendir_errors.append(line)
        if line:
            self.stderr_tail.append(line)

    # -- end
    def processEnded(self, reason: Failure) -> None:
        self._disarm_idle()
        if self._resting is not None and self._resting.active():
            self._resting.cancel()
        self._resting = None
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        if self._err_buf:
            self._err_line(bytes(self._err_buf))
            del self._err_buf[:]
        self._ended = reason
        self.exited.callback(None)
        self._drain()

    def _maybe_finish(self) -> None:
        if self._ended is None or self._waiting or self.done.called:
            return
        if self._buf and self.callback_error is None and not self._discarding:
            # Last line without a newline: Go's ReadLine still returns it.
            raw = bytes(self._buf)
            del self._buf[:]
            if self._on_records is not None:
                self._chunk(raw + b"\n")
            else:
                self._line(raw)
            if self._waiting:
                return
        self.end_reason = self._ended
        self.done.callback(None)


def _exit_message(reason: Failure) -> tuple[int | None, str | None]:
    """(exit code, error text or None for success) from a process end reason."""
    value = reason.value
    if isinstance(value, error.ProcessDone):
        return 0, None
    if isinstance(value, error.ProcessTerminated):
        if value.exitCode is not None:
            code = value.exitCode
            if code == EXIT_PARTIAL:
                return code, None
            return code, EXIT_MESSAGES.get(code, f"rsync: exit status {code}")
        sig = value.signal
        name = _GO_SIGNAL_NAMES.get(sig or 0, f"signal {sig}")
        return None, f"rsync: signal: {name}"
    return None, f"rsync: {value}"


async def list_rsync(
    url: str,
    on_file: OnFile,
    *,
    reactor: IDaemonReactor | None = None,
    timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    identifier: str = "",
    on_records: OnRecords | None = None,
) -> RsyncOutcome:
    """List a mirror over rsync, calling ``on_file`` for every regular file, or ``on_records``
    with the staged records of many files at once when it is given (``on_file`` is then unused).

    ``timeout`` is an idle timeout: if rsync prints nothing for that long (while we are
    not waiting on ``on_file``) it is killed.  Raises :class:`ScanError` with Go's
    texts; cancelling the returned Deferred kills rsync and raises :class:`ScanAborted`.
    """
    if reactor is None:
        reactor = default_reactor()
    argv, env = rsync_command(url)  # ValueError for a bad scheme, before running anything
    executable = shutil.which(argv[0], path=os.environ.get("PATH", os.defpath))
    if executable is None:
        raise ScanError(f'exec: "{argv[0]}": executable file not found in $PATH')
    lister = RsyncLister(on_file, reactor=reactor, identifier=identifier, idle_timeout=timeout,
                         on_records=on_records)
    log.info("[{identifier}] Requesting file list via rsync...", identifier=identifier)
    try:
        reactor.spawnProcess(lister, executable, argv, env=env)
    except OSError as exc:
        raise ScanError(f"rsync: {exc}") from exc
    try:
        await lister.done
    except defer.CancelledError:
        await lister.exited  # killed by the canceller: reap it before reporting
        raise ScanAborted() from None
    if lister.callback_error is not None:
        lister.callback_error.raiseException()
    if lister.cancelled:
        raise ScanAborted()
    if lister.timed_out:
        raise ScanError(f"rsync: no output for {timeout:g}s, killed")
    assert lister.end_reason is not None
    code, message = _exit_message(lister.end_reason)
    if message is not None:
        if lister.stderr_tail:
            log.warn(
                "[{identifier}] rsync stderr: {stderr}",
                identifier=identifier,
                stderr=" | ".join(lister.stderr_tail),
            )
        raise ScanError(message)
    outcome = RsyncOutcome(files=lister.files, precision_ns=PRECISION_S, skipped_lines=lister.skipped)
    if code == EXIT_PARTIAL:
        for line in lister.opendir_errors:
            log.warn("[{identifier}] {line}", identifier=identifier, line=line)
        log.warn("[{identifier}] {msg}", identifier=identifier, msg=PARTIAL_WARNING)
        outcome.warnings.extend(lister.opendir_errors)
        outcome.warnings.append(PARTIAL_WARNING)
    return outcome
