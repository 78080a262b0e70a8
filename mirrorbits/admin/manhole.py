"""The SSH manhole: a Python prompt inside the live daemon, and the CLI over SSH.

Off by default; enabled by ``ManholeListenAddress`` (``host:port`` or a Twisted endpoint string) with
``ManholeAuthorizedKeys`` (an OpenSSH ``authorized_keys`` file, re-read at every login).  Public keys
only: there is no password authentication at all.  Every user name is accepted; the key decides.

* ``ssh -p PORT admin@host`` opens a :class:`twisted.conch.manhole.ColoredManhole` whose namespace holds
  every CLI command as a function (``list()``, ``enable("mirror1")``, ``stats("file", ".*")``,
  ``add("m", http="http://h/", country_only=True)``; each returns a Deferred of the command's output),
  ``cli("list -down")``, the raw :class:`~mirrorbits.admin.commands.AdminCommands` as ``admin`` and
  the live parts: ``app``, ``config`` (the current config), ``redis``, ``cache``/``monitor``/``cluster``
  when the daemon has them.
* ``ssh -p PORT admin@host list -down`` runs that CLI command and returns its stdout, stderr and exit
  status, so operators can script over SSH without the RPC port.  stdin of the SSH command feeds the
  ``[y/N]`` prompts (EOF = no); ``edit`` needs a local editor and is refused.

The exec session starts the command on a later reactor turn: writing on the channel from inside
``execCommand`` (before the channel request is answered) crashes Twisted's own SSH client.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.service import Service
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.cred import portal
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mirrorbits.admin import cli
from mirrorbits.admin.interface import AdminAPI
from mirrorbits.endpoints import ConfiguredListener
from mirrorbits.reactor import IDaemonReactor, default_reactor

if TYPE_CHECKING:
    from mirrorbits.app import Mirrorbits

__all__ = ["AuthorizedKeysFile", "ManholeService", "Text", "host_key", "make_namespace",
           "manhole_factory", "manhole_service"]

log = Logger(namespace="mirrorbits.admin.manhole")


class Text(str):
    """Command output: shown as is (not quoted) by the manhole's result display."""

    def __repr__(self) -> str:
        return str(self)


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """The keys of an OpenSSH ``authorized_keys`` file, read at each login (edits apply at once)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def getAuthorizedKeys(self, username: bytes) -> list[keys.Key]:  # noqa: N802
        out = []
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as e:
            log.warn("manhole: cannot read {path}: {err}", path=self.path, err=e)
            return []
        for line in lines:
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            try:
                out.append(keys.Key.fromString(line))
            except Exception:
                # Options before the key type ("from=... ssh-ed25519 AAAA...") are not supported:
                # try from the first field that is a key type.
                for i, part in enumerate(line.split()):
                    if part.startswith((b"ssh-", b"ecdsa-", b"sk-")):
                        try:
                            out.append(keys.Key.fromString(b" ".join(line.split()[i:])))
                        except Exception:
                            log.warn("manhole: unreadable key in {path}", path=self.path)
                        break
        return out


def host_key(data_dir: str) -> keys.Key:
    """The manhole's host key: ``<DataDir>/manhole_host_key`` (Ed25519), created on first use."""
    path = os.path.join(data_dir, "manhole_host_key")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return keys.Key.fromString(f.read())
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.toString("openssh"))
    return key


# ---------------------------------------------------------------------------------------------------
# Running CLI commands in the daemon


class _DirectSession(cli.Session):
    """A CLI session whose admin end is the daemon's own AdminCommands (no channel, no password)."""

    def __init__(self, io: cli.CliIO, admin: AdminAPI, reactor: IDaemonReactor) -> None:
        super().__init__(io, "", 0, "", reactor)
        self._direct = admin

    async def admin(self, command: str) -> AdminAPI:
        return self._direct

    async def close(self) -> None:
        pass


class _BufferIO:
    """Captures a command's output (manhole functions); no input."""

    def __init__(self) -> None:
        self.env: Mapping[str, str] = {}
        self.chunks: list[str] = []

    def out(self, text: str) -> None:
        self.chunks.append(text)

    def err(self, text: str) -> None:
        self.chunks.append(text)

    async def readline(self) -> str | None:
        return None

    async def read_password(self) -> str:
        raise EOFError("EOF")

    async def run_editor(self, editor: str, path: str) -> int:
        self.err("edit needs the operator's terminal: run 'mirrorbits edit' where you are\n")
        return 1


async def run_command(argv: list[str], io: cli.CliIO, admin: AdminAPI, reactor: IDaemonReactor) -> int:
    """One CLI command line run against ``admin``; ``mirrorbits`` as first word is optional."""
    if argv and os.path.basename(argv[0]) == "mirrorbits":
        argv = argv[1:]
    return await cli.run(argv, io, reactor, session=_DirectSession(io, admin, reactor))


FlagValue = str | int | float | bool


def _flags(kwargs: Mapping[str, FlagValue]) -> list[str]:
    out = []
    for k, v in kwargs.items():
        name = "-" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(f"{name}={'true' if v else 'false'}")
        else:
            out.append(f"{name}={v}")
    return out


class CommandFunction(Protocol):
    """A CLI command as a function: positional arguments, flags as keyword arguments."""

    def __call__(self, *args: object, **flags: FlagValue) -> defer.Deferred[Text]: ...


def cli_functions(call: Callable[[list[str]], defer.Deferred[Text]]) -> dict[str, CommandFunction]:
    """Every CLI command as a function (``enable("m1")``, ``list(down=True)``) that runs the command
    line through ``call``: derived from the CLI's command table, so the manhole offers each command
    the CLI has, and nothing else."""

    def command(name: str) -> CommandFunction:
        def run(*args: object, **flags: FlagValue) -> defer.Deferred[Text]:
            return call([name, *_flags(flags), *(str(a) for a in args)])

        run.__name__ = name
        run.__doc__ = f"mirrorbits {name} [flags as keyword arguments] [args]; returns its output."
        return run

    return {name: command(name) for name in cli.COMMAND_FUNCTIONS}


def make_namespace(app: Mirrorbits) -> dict[str, object]:
    """The manhole's globals: CLI commands as functions, ``cli()``, and the live parts."""
    reactor = app.reactor
    admin = app.get_admin()

    def call(argv: list[str]) -> defer.Deferred[Text]:
        io = _BufferIO()

        async def go() -> Text:
            code = await run_command(argv, io, admin, reactor)
            text = "".join(io.chunks)
            if code:
                text += f"(exit status {code})\n"
            return Text(text)

        return defer.Deferred.fromCoroutine(go())

    ns: dict[str, object] = dict(cli_functions(call))
    ns["cli"] = lambda line: call(shlex.split(line))
    ns["admin"] = admin
    ns["app"] = app
    ns["config"] = app.config
    ns["redis"] = app.get_redis()
    parts: dict[str, Callable[[], object]] = {"cache": app.get_cache, "monitor": app.get_monitor,
                                              "cluster": app.get_cluster}
    for part, getter in parts.items():
        try:
            ns[part] = getter()
        except Exception as e:  # noqa: BLE001 - a missing part must not close the manhole
            ns[part] = f"<unavailable: {e}>"
    return ns


# ---------------------------------------------------------------------------------------------------
# SSH plumbing


class _StdinTransport:
    """What the SSH channel sees as the "process": stdin data goes to the command's readline."""

    def __init__(self, io: _ChannelIO) -> None:
        self.io = io

    def write(self, data: bytes) -> None:
        self.io.feed(data)

    def writeSequence(self, seq: list[bytes]) -> None:  # noqa: N802
        self.io.feed(b"".join(seq))

    def closeStdin(self) -> None:  # noqa: N802
        self.io.feed_eof()

    def loseConnection(self) -> None:  # noqa: N802
        self.io.feed_eof()

    def signalProcess(self, signal: str | int) -> None:  # noqa: N802
        self.io.feed_eof()


class _ChannelIO:
    """A CLI command's streams on an SSH exec channel."""

    def __init__(self, proto: ProcessProtocol) -> None:
        self.proto = proto
        self.env: Mapping[str, str] = {}
        self._buffer = b""
        self._eof = False
        self._waiter: defer.Deferred[None] | None = None

    def out(self, text: str) -> None:
        self.proto.outReceived(text.encode("utf-8", "surrogateescape"))

    def err(self, text: str) -> None:
        self.proto.errReceived(text.encode("utf-8", "surrogateescape"))

    def feed(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        if w is not None:
            w.callback(None)

    async def readline(self) -> str | None:
        while b"\n" not in self._buffer and not self._eof:
            self._waiter = defer.Deferred()
            await self._waiter
        if b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
        elif self._buffer:
            line, self._buffer = self._buffer, b""
        else:
            return None
        return line.rstrip(b"\r").decode("utf-8", "surrogateescape")

    async def read_password(self) -> str:
        raise EOFError("EOF")

    async def run_editor(self, editor: str, path: str) -> int:
        self.err("edit needs the operator's terminal: run 'mirrorbits edit' where you are\n")
        return 1


class _Session(manhole_ssh.TerminalSession):
    """Shell = the manhole; exec = one CLI command with its exit status."""

    width = 80
    height = 24
    app: Mirrorbits
    reactor: IDaemonReactor

    def __init__(self, original: manhole_ssh.TerminalUser) -> None:
        super().__init__(original)
        self._exec_io: _ChannelIO | None = None

    def execCommand(self, proto: ProcessProtocol, cmd: bytes) -> None:  # noqa: N802
        io = _ChannelIO(proto)
        self._exec_io = io
        proto.makeConnection(_StdinTransport(io))
        try:
            argv = shlex.split(cmd.decode("utf-8", "surrogateescape"))
        except ValueError as e:
            argv = None
            error = str(e)

        def start() -> None:
            if argv is None:
                io.err(f"mirrorbits: cannot parse the command: {error}\n")
                self._finish(proto, 2)
                return
            d = defer.Deferred.fromCoroutine(run_command(argv, io, self.app.get_admin(), self.reactor))
            d.addCallback(lambda code: self._finish(proto, code))
            d.addErrback(self._crashed, proto, io)

        # On a later turn: the channel request must be answered before any data is sent.
        self.reactor.callLater(0, start)

    def _crashed(self, failure: Failure, proto: ProcessProtocol, io: _ChannelIO) -> None:
        log.failure("manhole command failed", failure)
        io.err(f"internal error: {failure.getErrorMessage()}\n")
        self._finish(proto, 1)

    @staticmethod
    def _finish(proto: ProcessProtocol, code: int) -> None:
        reason = ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code)
        proto.processEnded(Failure(reason))

    def windowChanged(self, newWindowSize: object) -> None:  # noqa: N802
        pass

    def eofReceived(self) -> None:  # noqa: N802
        if self._exec_io is not None:
            self._exec_io.feed_eof()


class _Realm(manhole_ssh.TerminalRealm):
    def __init__(self, app: Mirrorbits, reactor: IDaemonReactor) -> None:
        super().__init__()
        self.app = app
        self.reactor = reactor

        def session_factory(original: manhole_ssh.TerminalUser) -> _Session:
            s = _Session(original)
            s.app = app
            s.reactor = reactor
            return s

        self.sessionFactory = session_factory  # type: ignore[assignment]
        def terminal() -> insults.ServerProtocol:
            return insults.ServerProtocol(manhole.ColoredManhole, make_namespace(app))

        self.chainedProtocolFactory = terminal  # type: ignore[assignment]


def manhole_factory(app: Mirrorbits, reactor: IDaemonReactor | None = None) -> manhole_ssh.ConchFactory:
    """The SSH factory: public-key authentication against ``ManholeAuthorizedKeys`` only."""
    if reactor is None:
        reactor = default_reactor()
    config = app.config
    checker = SSHPublicKeyChecker(AuthorizedKeysFile(config.ManholeAuthorizedKeys))
    factory = manhole_ssh.ConchFactory(portal.Portal(_Realm(app, reactor), [checker]))  # type: ignore[arg-type]
    key = host_key(config.DataDir)
    factory.publicKeys = {key.sshType(): key.public()}  # type: ignore[dict-item]
    factory.privateKeys = {key.sshType(): key}  # type: ignore[dict-item]
    return factory


class ManholeService(Service):
    """Listens on ``ManholeListenAddress`` with the SSH manhole."""

    name = "manhole"

    def __init__(self, app: Mirrorbits) -> None:
        self.app = app
        self._inner: ConfiguredListener | None = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        address = self.app.config.ManholeListenAddress
        if not self.app.config.ManholeAuthorizedKeys:
            log.error("ManholeListenAddress is set but ManholeAuthorizedKeys is empty: manhole disabled")
            return
        if self._inner is None:  # one listener: only its first start is fatal when it fails
            self._inner = ConfiguredListener("ManholeListenAddress", address,
                                             manhole_factory(self.app, self.app.reactor),
                                             self.app.reactor, failed=self.app.fatal)
        self._inner.startService()
        log.info("SSH manhole listening on {address}", address=address)

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802
        super().stopService()
        if self._inner is not None and self._inner.running:
            return self._inner.stopService()
        return None


def manhole_service(app: Mirrorbits) -> ManholeService | None:
    """The manhole service, or None when ``ManholeListenAddress`` is empty (the default)."""
    if not app.config.ManholeListenAddress:
        return None
    return ManholeService(app)
