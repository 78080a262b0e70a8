"""An FTP client for listing mirrors, on ``twisted.protocols.ftp.FTPClientBasic``.

It adds what Twisted's client lacks: FEAT before login, EPSV with a PASV fallback (Twisted only sends
PASV, which cannot reach IPv6-only servers), strict reply parsing, and a timeout on every wait for a
reply or for listing data.  One :class:`FtpSession` is one logged-in control connection; the walk
over a mirror's tree is :mod:`mirrorbits.scan.ftp`'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from twisted.internet import defer, error, protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.protocols.ftp import FTPClientBasic
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mirrorbits.deferutil import wait_at_most
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.scan.ftp_parsers import (
    FtpEntry,
    parse_feat_reply,
    parse_list_line,
    parse_mdtm_reply,
    reply_message,
)

CONNECT_TIMEOUT = 5.0
#: Deadline of every single read/write on the control and data connections (Go: 30 s).
IO_TIMEOUT = 30.0
#: How long a polite QUIT may take before the connection is simply closed.
QUIT_TIMEOUT = 2.0
#: Longest listing line accepted (Go's bufio.Scanner limit); longer fails the listing.
MAX_LISTING_LINE = 64 * 1024

_CODE_LINE_RE = re.compile(r"([0-9]{3})([ -]|\Z)")



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


class _ClockTimeout(TimeoutMixin):
    """:class:`TimeoutMixin` on the reactor we were given (tests pass a fake one), not the global."""

    clock: IReactorTime

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:  # noqa: N802
        return self.clock.callLater(period, func)


class FtpControlProtocol(FTPClientBasic, _ClockTimeout):
    """The control connection: Twisted's command queue with stricter reply parsing.

    Every reply (any code) fires the command's Deferred with the list of reply lines, so
    callers check codes themselves; 1xx marks are recorded in ``last_mark``.  A silent
    server is cut after ``io_timeout`` seconds of waiting for a reply.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LISTING_LINE

    def __init__(self, io_timeout: float = IO_TIMEOUT, reactor: IReactorTime | None = None) -> None:
        super().__init__()
        self.io_timeout = io_timeout
        self.clock = reactor if reactor is not None else default_reactor()
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

    def fail(self, error: Exception | Failure) -> None:
        reason = error.value if isinstance(error, Failure) else error
        if self.failure_reason is None:
            self.failure_reason = str(reason)
        _abort(self.transport)
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


class _ListingReceiver(protocol.Protocol, _ClockTimeout):
    """A data connection: parses lines as they arrive; ``done`` fires with the entries."""

    def __init__(self, control: FtpControlProtocol, io_timeout: float,
                 reactor: IReactorTime | None = None) -> None:
        self._control = control
        self.clock = reactor if reactor is not None else default_reactor()
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
        _abort(self.transport)

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

    def buildProtocol(self, addr: IAddress | None) -> protocol.Protocol:
        return self._proto


async def _dial(endpoint: IStreamClientEndpoint, proto: protocol.Protocol, host: str, port: int) -> None:
    """Connect ``proto``; a failure is an :class:`FtpError` worded as Go's ``dial tcp`` error."""
    try:
        await endpoint.connect(_OneShotFactory(proto))
    except defer.CancelledError:
        raise
    except Exception as exc:
        raise FtpError(f"dial tcp {host}:{port}: {exc}") from None


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

    def __init__(self, reactor: IDaemonReactor, proto: FtpControlProtocol, *, connect_timeout: float) -> None:
        self._reactor = reactor
        self.proto = proto
        self._connect_timeout = connect_timeout
        self.features: dict[str, str] = {}
        self.epsv_disabled = False
        self.list_all = True

    @classmethod
    async def open(
        cls,
        reactor: IDaemonReactor,
        target: FtpUrl,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        io_timeout: float = IO_TIMEOUT,
    ) -> FtpSession:
        """Connect, read the 220 greeting, FEAT, log in and switch to binary (TYPE I)."""
        proto = FtpControlProtocol(io_timeout, reactor)
        endpoint = HostnameEndpoint(reactor, target.host, target.port, timeout=connect_timeout)
        await _dial(endpoint, proto, target.host, target.port)
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
        transport = self.proto.transport
        if transport is None:
            raise FtpError(self.proto.failure_reason or "connection closed")
        peer = transport.getPeer()
        if not isinstance(peer, (IPv4Address, IPv6Address)):
            raise FtpError(f"no data connection over {peer}")
        # Always the control connection's resolved IP, never the address in the reply.
        host = peer.host
        if ":" in host:
            endpoint: IStreamClientEndpoint = TCP6ClientEndpoint(self._reactor, host, port, timeout=self._connect_timeout)
        else:
            endpoint = TCP4ClientEndpoint(self._reactor, host, port, timeout=self._connect_timeout)
        await _dial(endpoint, receiver, host, port)

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
            # An answer, an error or none within the delay: the connection is closed below anyway,
            # which ends the QUIT command too.
            with suppress(Exception):
                await wait_at_most(defer.ensureDeferred(self.proto.command("QUIT")), QUIT_TIMEOUT,
                                   self._reactor, consume=True)
        self.abort()

    def abort(self) -> None:
        if self.proto.connected:
            _abort(self.proto.transport)


class _TransferFailed(FtpError):
    """The server started a transfer and then reported it failed."""


def _abort(transport: ITransport | None) -> None:
    """Close at once, without flushing what is still buffered (the peer failed or is not wanted)."""
    if ITCPTransport.providedBy(transport):
        transport.abortConnection()
    elif transport is not None:
        transport.loseConnection()
