"""Listing a mirror over FTP (spec data-and-scanning §8.4).

Two halves:

* pure parsers for what FTP servers send: FEAT replies, MLSD fact lines, Unix ``ls``
  and Windows/DOS ``LIST`` lines, MDTM replies, plus the precision rule.  They follow the
  Go client (etix/goftp) line for line, so the stored sizes and times match a Go node;
* a client on ``twisted.protocols.ftp.FTPClientBasic`` that adds what Twisted's client
  lacks: FEAT before login, EPSV with a PASV fallback (Twisted only sends PASV, which
  cannot reach IPv6-only servers), strict reply parsing, per-operation timeouts, and a
  bounded pool of control connections walking the tree in parallel.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.logger import Logger
from twisted.protocols.ftp import FTPClientBasic
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mirrorbits.deferutil import wait_at_most
from mirrorbits.scan.listing import (
    GO_ZERO_TIME_NS,
    PRECISION_MS,
    PRECISION_NONE,
    PRECISION_S,
    ListedFile,
    ListingOutcome,
    OnFile,
    ScanAborted,
    ScanError,
    civil_to_unix_ns,
)

log = Logger(namespace="mirrorbits.scan.ftp")

CONNECT_TIMEOUT = 5.0
#: Deadline of every single read/write on the control and data connections (Go: 30 s).
IO_TIMEOUT = 30.0
#: How long a polite QUIT may take before the connection is simply closed.
QUIT_TIMEOUT = 2.0
#: Longest listing line accepted (Go's bufio.Scanner limit); longer fails the listing.
MAX_LISTING_LINE = 64 * 1024
RFC3659_WARNING = (
    "This server does not support some of the RFC 3659 extensions, consider using rsync instead."
)


# ======================================================================================
# Parsers
# ======================================================================================


class EntryType(Enum):
    FILE = 0
    FOLDER = 1
    LINK = 2


@dataclass(frozen=True, slots=True)
class FtpEntry:
    """One parsed listing line.  ``mtime_ns`` None is Go's zero time."""

    name: str
    type: EntryType
    size: int = 0
    mtime_ns: int | None = None
    zone: str = "UTC"


class _Unsupported(Exception):
    """This parser does not recognise the line; try the next one."""


class _Invalid(Exception):
    """The parser recognised the line but it is broken: drop the line (Go returns an error)."""


def _go_isspace(ch: str) -> bool:
    """Go's unicode.IsSpace."""
    if ch in "\t\n\v\f\r \x85\xa0":
        return True
    if ord(ch) < 0x100:
        return False
    return ch in "\u1680\u2028\u2029\u202f\u205f\u3000" or "\u2000" <= ch <= "\u200a"


def parse_go_uint(text: str, base0: bool = True) -> int | None:
    """Go's strconv.ParseUint(text, 0 or 10, 64); None on a syntax or range error."""
    if not text:
        return None
    base = 10
    digits = text
    if base0:
        low = text.lower()
        if low.startswith("0x"):
            base, digits = 16, text[2:]
        elif low.startswith("0b"):
            base, digits = 2, text[2:]
        elif low.startswith("0o"):
            base, digits = 8, text[2:]
        elif text.startswith("0") and len(text) > 1:
            base, digits = 8, text[1:]
        if "_" in text:
            # Underscores only between digits (or after a base prefix), as Go's underscoreOK.
            if digits.startswith("_") and base == 10 or digits.endswith("_") or "__" in digits:
                return None
            digits = digits.replace("_", "")
    if not digits:
        return None
    allowed = "0123456789abcdef"[:base]
    if any(c.lower() not in allowed for c in digits):
        return None
    value = int(digits, base)
    return value if value < 1 << 64 else None


_STAMP_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})(?:[.,]([0-9]+))?\Z")


def parse_ftp_timestamp(text: str) -> int | None:
    """``YYYYMMDDhhmmss[.frac]`` (MLSD ``modify=`` and MDTM) to Unix ns, as Go's time.Parse."""
    m = _STAMP_RE.match(text)
    if m is None:
        return None
    frac = m.group(7) or ""
    nanos = int((frac[:9]).ljust(9, "0")) if frac else 0
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    return civil_to_unix_ns(y, mo, d, h, mi, s, nanos)


def parse_rfc3659_line(line: str) -> FtpEntry | None:
    """An MLSD line ``fact=value;...; name``.  None means "drop" (cdir/pdir)."""
    i_semicolon = line.find(";")
    i_space = line.find(" ")
    if i_semicolon < 0 or i_semicolon > i_space:
        raise _Unsupported
    name = line[i_space + 1 :]
    kind = EntryType.FILE
    size = 0
    mtime: int | None = None
    # Go takes the facts up to the character *before* the space (the final ";").
    for fact in line[: i_space - 1].split(";"):
        eq = fact.find("=")
        if eq < 1:
            raise _Unsupported
        key, value = fact[:eq], fact[eq + 1 :]
        if key == "modify":
            mtime = parse_ftp_timestamp(value)
            if mtime is None:
                raise _Invalid
        elif key == "type":
            if value in ("cdir", "pdir"):
                return None
            if value == "dir":
                kind = EntryType.FOLDER
            elif value == "file":
                kind = EntryType.FILE
            elif value == "OS.unix=symlink":
                kind = EntryType.LINK
        elif key == "size":
            # Go ignores a bad size (ParseUint error); it would keep 0 or 2^64-1, we keep 0.
            size = parse_go_uint(value) or 0
    return FtpEntry(name, kind, size, mtime, "UTC")


def _fields_ls(line: str) -> list[str]:
    """goftp's fieldsLsList: 8 whitespace-separated fields, then the rest after one separator."""
    fields: list[str] = []
    start = -1
    next_break = False
    for i, ch in enumerate(line):
        if _go_isspace(ch):
            if start >= 0:
                fields.append(line[start:i])
                start = -1
            if next_break:
                fields.append(line[i + 1 :])
                return fields
        elif start == -1:
            start = i
            if len(fields) == 7:
                next_break = True
    if start != -1:
        fields.append(line[start:])
    return fields


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_RE = re.compile(r"[0-9]{1,2}\Z")
_HHMM_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})\Z")


def _go_two_digit_year(yy: int) -> int:
    return 1900 + yy if yy >= 69 else 2000 + yy


def _ls_time(fields: list[str], this_year: int) -> int:
    """goftp's setTime on [month, day, year-or-hh:mm]; raises _Invalid."""
    month_text, day_text, last = fields
    if len(month_text) != 3 or month_text.lower() not in _MONTHS or not _DAY_RE.match(day_text):
        raise _Invalid
    month = _MONTHS.index(month_text.lower()) + 1
    if ":" in last:
        hm = _HHMM_RE.match(last)
        if hm is None:
            raise _Invalid
        year = _go_two_digit_year(this_year % 100)
        hour, minute = int(hm.group(1)), int(hm.group(2))
    else:
        raw = last.encode("utf-8", "surrogateescape")
        if len(raw) != 4 or not raw[2:].isdigit():
            raise _Invalid
        year = _go_two_digit_year(int(raw[2:]))
        hour = minute = 0
    ns = civil_to_unix_ns(year, month, int(day_text), hour, minute)
    if ns is None:
        raise _Invalid
    return ns


def parse_ls_line(line: str, this_year: int | None = None) -> FtpEntry:
    """A Unix ``ls -l`` style LIST line (times in GMT; ``hh:mm`` means this year)."""
    if this_year is None:
        this_year = datetime.now(UTC).year
    f = _fields_ls(line)
    if len(f) >= 7 and f[1] == "folder" and f[2] == "0":
        return FtpEntry(" ".join(f[6:]), EntryType.FOLDER, 0, _ls_time(f[3:6], this_year), "GMT")
    if len(f) < 8:
        raise _Unsupported
    if f[1] == "0":
        size = parse_go_uint(f[2])
        if size is None:
            raise _Invalid
        return FtpEntry(" ".join(f[7:]), EntryType.FILE, size, _ls_time(f[4:7], this_year), "GMT")
    if len(f) < 9:
        raise _Unsupported
    kind_char = f[0][0]
    size = 0
    if kind_char == "-":
        kind = EntryType.FILE
        parsed = parse_go_uint(f[4])
        if parsed is None:
            raise _Invalid
        size = parsed
    elif kind_char == "d":
        kind = EntryType.FOLDER
    elif kind_char == "l":
        kind = EntryType.LINK
    else:
        raise _Invalid  # Go: "Unknown entry type"
    return FtpEntry(f[8], kind, size, _ls_time(f[5:8], this_year), "GMT")


_DOS_12H_RE = re.compile(r"([0-9]{2})-([0-9]{2})-([0-9]{2})  ([0-9]{2}):([0-9]{2})(AM|PM)\Z")
_DOS_24H_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})  ([0-9]{2}):([0-9]{2})\Z")


def _dos_time(prefix: str) -> int | None:
    m = _DOS_12H_RE.match(prefix)
    if m is not None:
        mo, d, yy, h, mi = (int(g) for g in m.groups()[:5])
        if h > 12:
            return None
        if m.group(6) == "PM" and h < 12:
            h += 12
        elif m.group(6) == "AM" and h == 12:
            h = 0
        return civil_to_unix_ns(_go_two_digit_year(yy), mo, d, h, mi)
    m = _DOS_24H_RE.match(prefix)
    if m is not None:
        y, mo, d, h, mi = (int(g) for g in m.groups())
        return civil_to_unix_ns(y, mo, d, h, mi)
    return None


def parse_dos_line(line: str) -> FtpEntry:
    """A Windows/DOS ``DIR`` style LIST line: ``MM-DD-YY  hh:mmAM`` or ``YYYY-MM-DD  HH:MM``.

    Go's parser skips the date when the line has 17 characters or fewer and then reads
    e.g. ``"5 x"`` as a file; we require the date, as the spec describes the format.
    """
    if len(line) <= 17:
        raise _Unsupported
    mtime = _dos_time(line[:17])
    if mtime is None:
        raise _Unsupported
    rest = line[17:].lstrip(" ")
    if rest.startswith("<DIR>"):
        return FtpEntry(rest[5:].lstrip(" "), EntryType.FOLDER, 0, mtime, "UTC")
    space = rest.find(" ")
    if space < 0:
        raise _Unsupported
    size = parse_go_uint(rest[:space], base0=False)
    if size is None:
        raise _Unsupported
    return FtpEntry(rest[space:].lstrip(" "), EntryType.FILE, size, mtime, "UTC")


def parse_list_line(line: str, this_year: int | None = None) -> FtpEntry | None:
    """Parse an MLSD or LIST line with the first parser that accepts it; None = ignore.

    Never raises: a line no parser accepts, or one a parser rejects, is ignored.
    """
    try:
        parsers: tuple[Callable[[str], FtpEntry | None], ...] = (
            parse_rfc3659_line,
            lambda text: parse_ls_line(text, this_year),
            parse_dos_line,
        )
        for parser in parsers:
            try:
                entry = parser(line)
            except _Unsupported:
                continue
            if entry is not None and entry.name == "":
                # Go would list the directory itself as a file; drop the entry instead.
                return None
            return entry
    except _Invalid:
        return None
    except Exception:  # defensive: a parser bug must never stop a scan
        log.failure("FTP listing parser failed on {line!r}", line=line)
        return None
    return None


_CODE_LINE_RE = re.compile(r"([0-9]{3})([ -]|\Z)")


def reply_message(lines: list[str]) -> str:
    """The reply text as Go's textproto gives it (code of the first line removed, lines joined)."""
    if not lines:
        return ""
    code = lines[0][:3]
    out = [lines[0][4:]]
    for line in lines[1:]:
        if len(line) >= 4 and line.startswith(code) and line[3] in " -":
            out.append(line[4:])
        else:
            out.append(line)
    return "\n".join(out)


def parse_feat_reply(code: int, lines: list[str]) -> dict[str, str]:
    """Features from a FEAT reply: 211, then each message line starting with a space."""
    if code != 211:
        return {}
    features: dict[str, str] = {}
    for line in reply_message(lines).split("\n"):
        if not line.startswith(" "):
            continue
        name, _, desc = line.strip().partition(" ")
        features[name] = desc
    return features


def parse_mdtm_reply(code: int, text: str) -> int | None:
    """Unix ns from an MDTM reply (213, at least 14 characters, GMT), else None (ignored)."""
    if code != 213 or len(text.encode("utf-8", "surrogateescape")) < 14:
        return None
    ns = parse_ftp_timestamp(text)
    if ns is None or ns == GO_ZERO_TIME_NS:
        return None
    return ns


@dataclass(slots=True)
class Precision:
    """The FTP precision rule of §8.4: 0 → 1 s or 1 ms on MDTM, 1 ms is sticky; MLST → 1 s."""

    value: int = PRECISION_NONE

    def saw_mdtm(self, mtime_ns: int) -> None:
        if self.value != PRECISION_MS:
            self.value = PRECISION_S if mtime_ns % PRECISION_S == 0 else PRECISION_MS

    def saw_listing_time(self) -> None:
        if self.value == PRECISION_NONE:
            self.value = PRECISION_S


# ======================================================================================
# Client
# ======================================================================================


@dataclass(frozen=True, slots=True)
class FtpUrl:
    host: str
    port: int
    user: str
    password: str
    path: str


def parse_ftp_url(url: str) -> FtpUrl:
    """Split an ``ftp://`` URL; ValueError "<url> does not start with ftp://" otherwise.

    Go appends ":21" only when the host has no ":", which breaks ``[::1]``; we parse
    the host and port properly so IPv6 literals work.
    """
    if not url.startswith("ftp://"):
        raise ValueError(f"{url} does not start with ftp://")
    parts = urlsplit(url)
    user, password = "anonymous", "anonymous"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        name, has_password, secret = userinfo.partition(":")
        user = unquote(name)
        if has_password:
            password = unquote(secret)
    host = parts.hostname or ""
    port = parts.port or 21
    return FtpUrl(host, port, user, password, unquote(parts.path, errors="surrogateescape"))


class FtpError(Exception):
    """An FTP operation failed; ``str()`` is the reason."""


@dataclass(slots=True)
class FtpReply:
    code: int
    lines: list[str]

    @property
    def message(self) -> str:
        return reply_message(self.lines)

    def __str__(self) -> str:
        return f"{self.code:03d} {self.message}"


class FtpControlProtocol(FTPClientBasic, TimeoutMixin):
    """The control connection: Twisted's command queue with stricter reply parsing.

    Every reply (any code) fires the command's Deferred with the list of reply lines, so
    callers check codes themselves; 1xx marks are recorded in ``last_mark``.  A silent
    server is cut after ``io_timeout`` seconds of waiting for a reply.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LISTING_LINE

    def __init__(self, io_timeout: float = IO_TIMEOUT, reactor: Any = None) -> None:
        super().__init__()
        self.io_timeout = io_timeout
        if reactor is not None:
            # TimeoutMixin would otherwise use the global reactor.
            self.callLater = reactor.callLater  # type: ignore[method-assign]
        self.greeting: defer.Deferred[list[str]] = defer.Deferred()
        self.nextDeferred = self.greeting
        self._multi_code: str | None = None
        self.last_mark: int | None = None
        self.failure_reason: str | None = None
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.setTimeout(self.io_timeout)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        super().dataReceived(data)

    def sendLine(self, line: bytes | str) -> None:  # type: ignore[override]
        # Replies may end in a bare "\n" (our delimiter), but commands must end in CRLF.
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        if self.transport is not None:
            self.transport.write(line + b"\r\n")

    def sendNextCommand(self) -> None:
        super().sendNextCommand()
        self.setTimeout(self.io_timeout if self.nextDeferred is not None else None)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.fail(FtpError("ftp: response line too long"))

    def lineReceived(self, raw: bytes) -> None:  # type: ignore[override]
        line = raw.decode("utf-8", "surrogateescape")
        if line.endswith("\r"):
            line = line[:-1]
        if self._multi_code is not None:
            self.response.append(line)
            if not (line.startswith(self._multi_code) and line[3:4] == " "):
                return
            code = self._multi_code
            self._multi_code = None
        else:
            m = _CODE_LINE_RE.match(line)
            if m is None:
                reason = "short response: " if len(line) < 4 else "invalid response code: "
                self.fail(FtpError(reason + line))
                return
            code = m.group(1)
            self.response.append(line)
            if m.group(2) == "-":
                self._multi_code = code
                return
        lines, self.response = self.response, []
        if code[0] == "1":
            self.last_mark = int(code)
            return
        if self.nextDeferred is None:
            self.fail(FtpError(f"unexpected reply: {lines[-1]}"))
            return
        # nextDeferred stays set during the callback, so a command queued from it waits
        # for sendNextCommand below (as in FTPClientBasic).
        self.nextDeferred.callback(lines)
        if self.failure_reason is None:
            self.sendNextCommand()

    def timeoutConnection(self) -> None:
        self.fail(FtpError("i/o timeout"))

    def fail(self, error: Any) -> None:
        reason = error.value if isinstance(error, Failure) else error
        if self.failure_reason is None:
            self.failure_reason = str(reason)
        if self.transport is not None:
            cast(Any, self.transport).abortConnection()
        self._fail(Failure(FtpError(self.failure_reason)))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.setTimeout(None)
        if self.failure_reason is None:
            self.failure_reason = "connection closed by server" if reason.check(
                error.ConnectionDone
            ) else str(reason.value)
        self._fail(Failure(FtpError(self.failure_reason)))
        if not self.closed.called:
            self.closed.callback(None)

    async def command(self, text: str) -> FtpReply:
        """Send one command and return its final reply (any code)."""
        if self.failure_reason is not None:
            raise FtpError(self.failure_reason)
        self.last_mark = None
        try:
            lines = await self.queueStringCommand(text)
        except defer.CancelledError:
            raise
        except Exception as exc:
            raise FtpError(self.failure_reason or str(exc)) from None
        return FtpReply(int(lines[-1][:3]), lines)


class _ListingReceiver(protocol.Protocol, TimeoutMixin):
    """A data connection: parses lines as they arrive; ``done`` fires with the entries."""

    def __init__(self, control: FtpControlProtocol, io_timeout: float, reactor: Any = None) -> None:
        self._control = control
        if reactor is not None:
            self.callLater = reactor.callLater  # type: ignore[method-assign]
        self._io_timeout = io_timeout
        self._buf = bytearray()
        self.entries: list[FtpEntry] = []
        self.error: str | None = None
        self.connected_d: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[list[FtpEntry]] = defer.Deferred()

    def connectionMade(self) -> None:
        self.setTimeout(self._io_timeout)
        self.connected_d.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self._control.resetTimeout()  # a long transfer is not a silent control channel
        self._buf += data
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            self._line(bytes(self._buf[start:nl]))
            start = nl + 1
        del self._buf[:start]
        if len(self._buf) > MAX_LISTING_LINE:
            self._abort("listing line too long")

    def _line(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        entry = parse_list_line(raw.decode("utf-8", "surrogateescape"))
        if entry is not None:
            self.entries.append(entry)

    def _abort(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        if self.transport is not None:
            cast(Any, self.transport).abortConnection()

    def discard(self) -> None:
        """Drop this data connection; nobody will wait for ``done``."""
        self.done.addErrback(lambda _: None)
        self._abort("data connection discarded")

    def timeoutConnection(self) -> None:
        self._abort("i/o timeout on data connection")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.setTimeout(None)
        if self.error is None and not reason.check(error.ConnectionDone):
            self.error = f"data connection: {reason.value}"
        if self.error is None and self._buf:
            self._line(bytes(self._buf))  # last line without a newline
        self._buf = bytearray()
        if self.error is not None:
            self.done.errback(FtpError(self.error))
        else:
            self.done.callback(self.entries)


class _OneShotFactory(protocol.Factory):
    noisy = False

    def __init__(self, proto: protocol.Protocol) -> None:
        self._proto = proto

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self._proto


def _parse_epsv(lines: list[str]) -> int | None:
    line = reply_message(lines)
    start, end = line.find("|||"), line.rfind("|")
    if start < 0 or end < 0 or end < start + 3:
        return None
    text = line[start + 3 : end]
    return int(text) if text.isdigit() and text.isascii() and 0 < int(text) < 65536 else None


def _parse_pasv(lines: list[str]) -> int | None:
    line = reply_message(lines)
    start, end = line.find("("), line.rfind(")")
    if start < 0 or end < 0 or end < start:
        return None
    parts = line[start + 1 : end].split(",")
    if len(parts) < 6 or not all(p.isdigit() and p.isascii() for p in parts[4:6]):
        return None
    port = int(parts[4]) * 256 + int(parts[5])
    return port if 0 < port < 65536 else None


class FtpSession:
    """One logged-in control connection with its own EPSV and ``LIST -a`` state."""

    def __init__(self, reactor: Any, proto: FtpControlProtocol, *, connect_timeout: float) -> None:
        self._reactor = reactor
        self.proto = proto
        self._connect_timeout = connect_timeout
        self.features: dict[str, str] = {}
        self.epsv_disabled = False
        self.list_all = True

    @classmethod
    async def open(
        cls,
        reactor: Any,
        target: FtpUrl,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        io_timeout: float = IO_TIMEOUT,
    ) -> FtpSession:
        """Connect, read the 220 greeting, FEAT, log in and switch to binary (TYPE I)."""
        proto = FtpControlProtocol(io_timeout, reactor)
        endpoint = HostnameEndpoint(reactor, target.host, target.port, timeout=connect_timeout)
        try:
            await endpoint.connect(_OneShotFactory(proto))  # type: ignore[arg-type]
        except defer.CancelledError:
            raise
        except Exception as exc:
            raise FtpError(f"dial tcp {target.host}:{target.port}: {exc}") from None
        session = cls(reactor, proto, connect_timeout=connect_timeout)
        try:
            await session._handshake(target)
        except BaseException:
            session.abort()
            raise
        return session

    async def _handshake(self, target: FtpUrl) -> None:
        try:
            lines = await self.proto.greeting
        except defer.CancelledError:
            raise
        except Exception:
            raise FtpError(self.proto.failure_reason or "connection closed") from None
        greeting = FtpReply(int(lines[-1][:3]), lines)
        if greeting.code != 220:
            raise FtpError(str(greeting))
        feat = await self.proto.command("FEAT")
        self.features = parse_feat_reply(feat.code, feat.lines)
        reply = await self.proto.command(f"USER {target.user}")
        if reply.code == 331:
            reply = await self.proto.command(f"PASS {target.password}")
            if reply.code != 230:
                raise FtpError(str(reply))
        elif reply.code != 230:
            raise FtpError(reply.message)
        reply = await self.proto.command("TYPE I")
        if reply.code != 200:
            raise FtpError(str(reply))

    def has(self, feature: str) -> bool:
        return feature in self.features

    async def _expect(self, text: str, code: int) -> FtpReply:
        reply = await self.proto.command(text)
        if reply.code != code:
            raise FtpError(str(reply))
        return reply

    async def cwd(self, path: str) -> None:
        await self._expect(f"CWD {path}", 250)

    async def pwd(self) -> str:
        reply = await self._expect("PWD", 257)
        msg = reply.message
        start, end = msg.find('"'), msg.rfind('"')
        if start < 0 or end <= start:
            raise FtpError("Unsuported PWD response format")
        return msg[start + 1 : end]

    async def _data_port(self) -> int:
        if not self.epsv_disabled:
            reply = await self.proto.command("EPSV")
            port = _parse_epsv(reply.lines) if reply.code == 229 else None
            if port is not None:
                return port
            self.epsv_disabled = True  # as Go: after one failure, PASV for the session
        reply = await self.proto.command("PASV")
        port = _parse_pasv(reply.lines) if reply.code == 227 else None
        if port is None:
            raise FtpError(str(reply) if reply.code != 227 else "Invalid PASV response format")
        return port

    async def _open_data(self, receiver: _ListingReceiver) -> None:
        port = await self._data_port()
        transport: Any = self.proto.transport
        peer = transport.getPeer()
        # Always the control connection's resolved IP, never the address in the reply.
        host = peer.host
        if ":" in host:
            endpoint: Any = TCP6ClientEndpoint(self._reactor, host, port, timeout=self._connect_timeout)
        else:
            endpoint = TCP4ClientEndpoint(self._reactor, host, port, timeout=self._connect_timeout)
        try:
            await endpoint.connect(_OneShotFactory(receiver))
        except defer.CancelledError:
            raise
        except Exception as exc:
            raise FtpError(f"dial tcp {host}:{port}: {exc}") from None

    async def _try_list(self, command: str) -> list[FtpEntry]:
        receiver = _ListingReceiver(self.proto, self.proto.io_timeout, self._reactor)
        try:
            await self._open_data(receiver)
            reply = await self.proto.command(command)
        except BaseException:
            receiver.discard()
            raise
        if self.proto.last_mark not in (125, 150):
            receiver.discard()
            raise FtpError(str(reply))
        if reply.code // 100 != 2:
            # Go ignores the final reply; a transfer the server reports as failed
            # (426, 451...) would be taken as a complete listing.  We fail instead.
            receiver.discard()
            raise _TransferFailed(str(reply))
        try:
            return await receiver.done
        except defer.CancelledError:
            receiver.discard()
            raise

    async def list(self, path: str) -> list[FtpEntry]:
        """List one directory: ``MLSD`` (if MLST is offered), else ``LIST -a``, else ``LIST``."""
        commands = ["MLSD", "LIST -a", "LIST"]
        if not self.list_all:
            commands.remove("LIST -a")
        if not self.has("MLST"):
            commands.remove("MLSD")
        last: Exception = FtpError("no listing command")
        for cmd in commands:
            try:
                return await self._try_list(f"{cmd} {path}")
            except (_TransferFailed, defer.CancelledError):
                raise
            except FtpError as exc:
                last = exc
                if cmd == "LIST -a":
                    self.list_all = False
                if self.proto.failure_reason is not None:
                    break
        raise last

    async def mdtm(self, path: str) -> int | None:
        reply = await self.proto.command(f"MDTM {path}")
        return parse_mdtm_reply(reply.code, reply.message)

    async def quit(self) -> None:
        """Polite QUIT, bounded in time; then close."""
        if self.proto.failure_reason is None and self.proto.transport is not None:
            # Any answer, an error or none within the delay: the connection is closed below anyway,
            # which ends the QUIT command too.
            with suppress(Exception):
                await wait_at_most(defer.ensureDeferred(self.proto.command("QUIT")), QUIT_TIMEOUT,
                                   self._reactor, consume=True)
        self.abort()

    def abort(self) -> None:
        if self.proto.transport is not None and self.proto.connected:
            cast(Any, self.proto.transport).abortConnection()


class _TransferFailed(FtpError):
    """The server started a transfer and then reported it failed."""


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


async def list_ftp(
    url: str,
    on_file: OnFile,
    *,
    reactor: Any = None,
    timeout: float = IO_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    max_connections: int = 1,
    identifier: str = "",
) -> FtpOutcome:
    """List a mirror over FTP, calling ``on_file`` for every file (paths relative to the URL).

    ``timeout`` bounds every wait for a reply or for listing data; ``max_connections``
    bounds the control (and so data) connections opened to the mirror at once (the Go
    original uses one).  Raises ValueError for a non-ftp URL, :class:`ScanError` with a
    reason on failure, :class:`ScanAborted` when cancelled.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    target = parse_ftp_url(url)

    def opener() -> Awaitable[FtpSession]:
        return FtpSession.open(reactor, target, connect_timeout=connect_timeout, io_timeout=timeout)

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
                    await _call_on_file(
                        on_file, ListedFile(relative, entry.size, mtime, zone if mtime is not None else "UTC")
                    )
            finally:
                pool.release(session)
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


async def _gather(coros: list[Any]) -> None:
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
