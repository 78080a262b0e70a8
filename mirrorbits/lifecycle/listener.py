"""The HTTP listening socket: bound (or inherited) by us, adopted by Twisted, handed over intact.

Why not ``listenTCP``/strports: a port Twisted binds itself is ``shutdown()`` when it stops
listening, and on Linux that shuts the socket down for *every* process sharing it, so an upgraded
child or an HTTP worker would suddenly refuse thousands of connections.  A port made with
``reactor.adoptStreamPort`` is only closed (Twisted sets ``_shouldShutdown = False``), so every
generation binds or inherits a plain ``socket.socket`` and adopts it.

Where the socket comes from, in order: ``OLD_FD`` of a seamless upgrade (:mod:`.upgrade`), a
socket passed by systemd (``LISTEN_FDS``), else we bind ``ListenAddress`` (Go syntax, or the
``tcp:``/``tcp6:``/``unix:``/``systemd:`` endpoint descriptions :mod:`mirrorbits.endpoints` passes
through).  Other descriptions (``ssl:``...) fall back to a Twisted endpoint, without seamless upgrade.

Graceful stop (:meth:`HTTPListener.stopService`): stop accepting at once, then let in-flight
requests finish (bounded): busy keep-alive connections answer their current request and close,
idle ones get a short grace period to send one last request (answered with ``Connection: close``)
so that clients reusing a connection never see it closed under their request.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from twisted.application import service
from twisted.internet import defer, endpoints, error, task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IReadDescriptor,
    ITCPTransport,
)
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.python import failure
from twisted.web import http
from zope.interface import implementer

from mirrorbits.deferutil import wait_at_most
from mirrorbits.endpoints import ipv6_available, listen_problem
from mirrorbits.web.site import wind_down

if TYPE_CHECKING:
    from mirrorbits.reactor import IDaemonReactor


log = Logger(namespace="mirrorbits.listener")


#: Connections an :class:`AcceptingPort` takes per wake-up when no other process shares its socket
#: (Twisted's own ports start at 100).
ACCEPT_BATCH = 100

#: listen(2) backlog; the kernel caps it at net.core.somaxconn (4096 on current kernels).  A deep
#: queue absorbs bursts while one generation hands over to the next.
BACKLOG = 4096


@dataclass(frozen=True)
class ListenSpec:
    """What to listen on.  ``family`` 0 means "not ours to bind" (see ``description``)."""

    text: str
    family: int = 0
    host: str = ""
    port: int = 0
    path: str = ""
    systemd_index: int | None = None
    backlog: int = BACKLOG
    #: A Twisted endpoint description we do not bind ourselves (``ssl:``...).
    description: str = ""


def _split_description(text: str) -> list[str]:
    """Split an endpoint description on unescaped ``:`` (``\\`` escapes, as Twisted's parser)."""
    parts, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def parse_listen_address(address: str) -> ListenSpec:
    """``ListenAddress`` (Go syntax or endpoint description) as a :class:`ListenSpec`.

    Raises ``ValueError`` for an address that cannot be used.
    """
    if not address:
        raise ValueError("empty listen address")
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError(f"invalid listen address {address!r}: empty socket path")
        return ListenSpec(address, socket.AF_UNIX, path=path)
    if address.startswith(("tcp:", "tcp6:", "systemd:")):
        kind, *rest = _split_description(address)
        positional = [p for p in rest if "=" not in p]
        options = dict(p.split("=", 1) for p in rest if "=" in p)
        backlog = int(options.get("backlog", BACKLOG))
        if kind == "systemd":
            return ListenSpec(address, socket.AF_UNSPEC, systemd_index=int(options.get("index", 0)),
                              backlog=backlog)
        port_text = options.get("port") or (positional[0] if positional else "")
        if not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"invalid listen address {address!r}: bad port")
        family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
        host = options.get("interface", "::" if kind == "tcp6" else "0.0.0.0")
        return ListenSpec(address, family, host=host, port=int(port_text), backlog=backlog)
    scheme, _, after = address.partition(":")
    if scheme.isalpha() and not after.isdigit():
        return ListenSpec(address, description=address)  # ssl:... and other endpoint types
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid listen address {address!r} (expected host:port, :port or unix:/path)")
    if host.startswith("[") and host.endswith("]"):
        return ListenSpec(address, socket.AF_INET6, host=host[1:-1], port=int(port))
    if not host:
        if ipv6_available():  # Go's ":8080": one dual-stack socket
            return ListenSpec(address, socket.AF_INET6, host="::", port=int(port))
        return ListenSpec(address, socket.AF_INET, host="0.0.0.0", port=int(port))
    if ":" in host:
        return ListenSpec(address, socket.AF_INET6, host=host, port=int(port))
    return ListenSpec(address, socket.AF_INET, host=host, port=int(port))


def _resolve(spec: ListenSpec) -> tuple[int, tuple[object, ...]]:
    """Family and sockaddr; a host name is looked up (start-up/reload only: rare and short)."""
    try:
        socket.inet_pton(spec.family, spec.host)
        if spec.family == socket.AF_INET6:
            return spec.family, (spec.host, spec.port, 0, 0)
        return spec.family, (spec.host, spec.port)
    except OSError:
        infos = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        infos.sort(key=lambda i: i[0] != socket.AF_INET)  # Go prefers IPv4 for "localhost:port"
        family, _, _, _, sockaddr = infos[0]
        return family, sockaddr


def _remove_stale_unix_socket(path: str) -> None:
    """Remove a socket file nobody answers on (a crashed daemon's); refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another process listens on {path}")


def bind_socket(spec: ListenSpec) -> socket.socket:
    """A non-blocking listening socket for ``spec`` (SO_REUSEADDR, dual-stack ``::``, deep backlog).

    Raises ``OSError`` when the address cannot be bound.
    """
    address: tuple[object, ...] | None = None  # None: the Unix socket at spec.path
    if spec.family == socket.AF_UNIX:
        _remove_stale_unix_socket(spec.path)
        family: int = socket.AF_UNIX
    else:
        family, address = _resolve(spec)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if address is None:
            sock.bind(spec.path)
            os.chmod(spec.path, 0o666)  # as Twisted's listenUNIX (mode 0666) and Go
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and address[0] == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
        sock.listen(spec.backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def socket_from_fd(fd: int) -> socket.socket:
    """Take ownership of an inherited fd; it must be a listening stream socket (TCP or Unix).

    Raises ``OSError``/``ValueError`` otherwise, so a stale ``OLD_FD`` pointing at some other file
    is never adopted.
    """
    sock = socket.socket(fileno=fd)
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"fd {fd} is not a stream socket")
        if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            raise ValueError(f"fd {fd}: unsupported address family {sock.family}")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"fd {fd} is not a listening socket")
    except (OSError, ValueError):
        sock.detach()  # not ours to close
        raise
    sock.setblocking(False)
    os.set_inheritable(fd, False)
    return sock


def socket_name(sock: socket.socket) -> str:
    """``host:port`` (``[v6]:port``) or the Unix path: for logs and Go's ``OLD_NAME``."""
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    return name if isinstance(name, str) else name.decode(errors="replace")


# -------------------------------------------------------------------------------------------------
# Connections: track them so that a stop can drain them


class ConnectionTracker(policies.WrappingFactory):
    """Knows the open connections of a factory (a ``Site``), so a stop can let them finish.

    Listen with the tracker instead of the wrapped factory: it is a ``WrappingFactory`` whose
    ``registerProtocol``/``unregisterProtocol`` hooks see every connection come and go.  Also used
    by the HTTP worker processes.
    """

    def __init__(self, factory: IProtocolFactory, reactor: IReactorTime) -> None:
        super().__init__(factory)
        self.reactor = reactor
        #: Connections seen since start (a worker logs it when it stops).
        self.accepted = 0
        self.draining = False
        self.emptied: list[defer.Deferred[None]] = []

    def __len__(self) -> int:
        return len(self.protocols)

    def registerProtocol(self, p: policies.ProtocolWrapper) -> None:  # noqa: N802 - Twisted's name
        super().registerProtocol(p)
        self.accepted += 1
        if self.draining:
            self._wind_down(p)

    def unregisterProtocol(self, p: policies.ProtocolWrapper) -> None:  # noqa: N802
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self.emptied = self.emptied, []
            for d in waiters:
                d.callback(None)

    @staticmethod
    def _channel(p: policies.ProtocolWrapper) -> http.HTTPChannel | None:
        proto = p.wrappedProtocol
        return proto if isinstance(proto, http.HTTPChannel) else None

    def _idle(self, p: policies.ProtocolWrapper) -> bool:
        """Nothing received and not answered yet (not known for a non-HTTP protocol)."""
        channel = self._channel(p)
        return channel is not None and not channel.requests

    def _wind_down(self, p: policies.ProtocolWrapper) -> None:
        channel = self._channel(p)
        if channel is not None:
            wind_down(channel)

    def _wait_empty(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        if not self.protocols:
            d.callback(None)
        else:
            self.emptied.append(d)
        return d

    async def drain(self, timeout: float = 5.0, idle_grace: float = 1.0) -> int:
        """Let open connections finish; returns how many had to be cut at ``timeout``."""
        self.draining = True
        for p in list(self.protocols):
            self._wind_down(p)
        if not self.protocols:
            return 0
        empty = self._wait_empty()
        with suppress(defer.TimeoutError):
            await wait_at_most(empty, min(idle_grace, timeout), self.reactor)
        for p in list(self.protocols):
            if self._idle(p) and p.transport is not None:
                p.transport.loseConnection()  # sent nothing since the stop began
        if self.protocols:
            with suppress(defer.TimeoutError):
                await wait_at_most(self._wait_empty(), max(0.0, timeout - idle_grace), self.reactor)
        cut = 0
        for p in list(self.protocols):
            transport = p.transport
            if transport is not None:
                cut += 1
                if ITCPTransport.providedBy(transport):  # TCP and Unix connections
                    transport.abortConnection()
                else:
                    transport.loseConnection()
        if cut:
            log.warn("Stopped with {n} request(s) still running after {t}s", n=cut, t=timeout)
        return cut


#: Linux ``SO_ATTACH_FILTER`` (asm-generic/socket.h), and a classic BPF program of one
#: instruction, ``ret #0``: drop every packet.
SO_ATTACH_FILTER = 26
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)


def refuse_new_connections(sock: socket.socket) -> bool:
    """Make a TCP listening socket drop new SYNs, so its accept queue stops growing.

    Why: closing the last fd of a listening socket resets the connections still in its accept
    queue, and under load new ones keep arriving between the last ``accept()`` and the ``close()``.
    With SYNs dropped the queue can be emptied for good before the close; those clients retry the
    SYN ~1 s later and are then refused cleanly (never reset after having sent their request).
    Only for the last process holding the socket: the filter applies to everyone sharing it.
    Returns False where it is not possible (Unix sockets, non-Linux).
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    program = ctypes.create_string_buffer(_DROP_ALL)
    fprog = struct.pack("@HP", 1, ctypes.addressof(program))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as e:
        log.debug("cannot attach the drop-all filter: {e}", e=e)
        return False
    return True


@implementer(IReadDescriptor, IListeningPort)
class AcceptingPort:
    """A listening socket other processes may share (HTTP workers, the next generation), served
    through the public reactor API: ``addReader`` for readiness, ``adoptStreamConnection`` for each
    accepted connection.

    Why not ``reactor.adoptStreamPort``: Twisted's ports ``shutdown()`` the socket when they stop
    (for every process sharing it: all their connections refused), a Unix port unlinks its path
    (which the other processes still serve on) and listens again with a backlog of 50, and a port
    accepts up to 100+ connections per wake-up, so with several processes on one socket the first
    one awake would take a whole burst (a load balancer's or wrk's 64 connections) and keep it.
    This port accepts one connection per wake-up while the socket is shared (``fair``, see
    :meth:`share`), up to :data:`ACCEPT_BATCH` when it is not (an epoll round per connection costs
    ~50 us of CPU per connection on the 2-core VM), and stopping it only closes its own fd.

    The port works on a ``dup()`` of the caller's fd; the caller keeps (and closes) its own.
    """

    def __init__(self, reactor: IDaemonReactor, fd: int, family: int,
                 factory: IProtocolFactory, *, fair: bool = True) -> None:
        self.reactor = reactor
        #: Connections accepted per wake-up.
        self.batch = 1 if fair else ACCEPT_BATCH
        self.family = socket.AddressFamily(family)
        self.factory = factory
        self.socket: socket.socket | None = socket.fromfd(fd, family, socket.SOCK_STREAM)
        self.socket.setblocking(False)
        self.reading = False
        factory.doStart()

    # -- IListeningPort ------------------------------------------------------------------------------

    def startListening(self) -> None:  # noqa: N802 - Twisted's name
        self.startReading()

    def stopListening(self) -> defer.Deferred[None]:  # noqa: N802
        """Stop accepting and close this port's fd (no ``shutdown()``, no unlink)."""
        self.close_now()
        return defer.succeed(None)

    def getHost(self) -> IAddress:  # noqa: N802
        if self.socket is None:
            raise error.NotListeningError("the port is closed")
        name = self.socket.getsockname()
        if self.family == socket.AF_UNIX:
            return UNIXAddress(name if isinstance(name, str) else name.decode(errors="replace"))
        if self.family == socket.AF_INET6:
            return IPv6Address("TCP", name[0], name[1], name[2], name[3])
        return IPv4Address("TCP", name[0], name[1])

    # -- IReadDescriptor ------------------------------------------------------------------------------

    def fileno(self) -> int:
        return self.socket.fileno() if self.socket is not None else -1

    def logPrefix(self) -> str:  # noqa: N802
        return "AcceptingPort"

    def doRead(self) -> None:  # noqa: N802
        """Up to ``batch`` connections (see the class docstring)."""
        for _ in range(self.batch):
            if not self._accept_one():
                break

    def connectionLost(self, reason: failure.Failure) -> None:  # noqa: N802
        """The reactor gave up on our fd (it was closed under us)."""
        self.close_now()

    # -- ours -------------------------------------------------------------------------------------------

    def startReading(self) -> None:  # noqa: N802 - as Twisted's descriptors
        if not self.reading and self.socket is not None:
            self.reading = True
            self.reactor.addReader(self)

    def stopReading(self) -> None:  # noqa: N802
        if self.reading:
            self.reading = False
            self.reactor.removeReader(self)

    def close_now(self) -> None:
        """Stop accepting and close this port's fd at once (not on the reactor's next turn: until
        the last fd closes, the kernel keeps queueing connections that the close would reset)."""
        self.stopReading()
        if self.socket is not None:
            self.socket.close()
            self.socket = None
            self.factory.doStop()

    def share(self) -> None:
        """Other processes accept on this socket from now on: one connection per wake-up."""
        self.batch = 1

    def accept_waiting(self) -> int:
        """Accept and serve every connection waiting in the accept queue; returns how many."""
        taken = 0
        while self._accept_one():
            taken += 1
        return taken

    def _accept_one(self) -> bool:
        if self.socket is None:
            return False
        try:
            conn, _ = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            # Out of fds or buffers, or a connection reset before we took it: the client sees a
            # reset; the socket stays ours to accept on once the condition passes.
            log.warn("accept() failed: {e}", e=e)
            return False
        try:
            conn.setblocking(False)
            # twisted annotates ``ServerFactory``; it documents (and only uses) IProtocolFactory
            self.reactor.adoptStreamConnection(conn.fileno(), self.family,
                                               cast(ServerFactory, self.factory))
        except Exception:  # noqa: BLE001 - e.g. out of fds: the client sees a reset
            log.failure("cannot serve an accepted connection")
        finally:
            conn.close()  # adoptStreamConnection dup()ed it
        return True


def adopt_listening_socket(reactor: IDaemonReactor, fd: int, family: int,
                           factory: IProtocolFactory, *, fair: bool = True) -> AcceptingPort:
    """Serve ``factory`` on the listening socket ``fd`` (an :class:`AcceptingPort`, accepting).

    ``fair``: other processes accept on the same socket (one connection per wake-up).

    Stopping the port never ``shutdown()``s the socket nor unlinks a Unix path: other processes
    may share it.  The port dup()s ``fd``; the caller keeps (and closes) its own.
    """
    port = AcceptingPort(reactor, fd, family, factory, fair=fair)
    port.startListening()
    return port


# -------------------------------------------------------------------------------------------------
# The service


class _Listening:
    """One adopted socket: our ``socket.socket`` (the fd we hand over) and the accepting port."""

    def __init__(self, sock: socket.socket, port: AcceptingPort, unix_inode: int | None) -> None:
        self.sock = sock
        self.port = port
        self.name = socket_name(sock)
        self.unix_inode = unix_inode

    def close(self, *, unlink: bool, last: bool = False,
              refuse_new: bool = False) -> defer.Deferred[None]:
        """Stop accepting and close our fds, without ``shutdown()`` (the socket may live on in
        another process) and without removing a Unix path (unless ``unlink``).

        ``last``: nobody takes the socket over, so the connections already waiting in its accept
        queue would be reset by the close: accept and serve them first.  ``refuse_new``: also stop
        new connections from joining the queue meanwhile (:func:`refuse_new_connections`; only
        when no other process accepts on the socket any more).
        """
        port = self.port
        port.stopReading()
        if last:
            if refuse_new:
                refuse_new_connections(self.sock)
            taken = port.accept_waiting()
            if taken:
                log.info("Serving {n} connection(s) that were waiting in the accept queue", n=taken)
        d = port.stopListening()
        path = self.name if self.sock.family == socket.AF_UNIX else ""
        self.sock.close()
        if unlink and path and self.unix_inode is not None:
            try:
                if os.lstat(path).st_ino == self.unix_inode:
                    os.unlink(path)
            except OSError:
                pass
        return d


class HTTPListener(service.Service):
    """The ``http`` service: serves ``factory`` on ``ListenAddress`` (or an inherited socket).

    ``address`` is called for the current ``ListenAddress`` (the ``--listen`` override wins).
    ``inherited``: a listening socket from the previous generation or systemd.  ``paused``: adopt
    but do not accept until :meth:`resume` (an upgraded child waits until it is ready).
    ``fatal`` is called when the address cannot be bound at start, with a message that names the
    address and ``key``, where the address comes from (``ListenAddress``).  ``shared``: other processes
    keep accepting on this socket when we stop (an HTTP worker's socket, owned by the main
    process): serve our own accept queue, but neither refuse new connections nor unlink a path.
    """

    name = "http"

    def __init__(self, factory: IProtocolFactory, address: Callable[[], str], reactor: IDaemonReactor, *,
                 inherited: socket.socket | None = None, paused: bool = False,
                 fatal: Callable[[str], None] | None = None, drain_timeout: float = 5.0,
                 idle_grace: float = 1.0, shared: bool = False, key: str = "ListenAddress") -> None:
        self.factory = factory
        self.key = key
        self.address = address
        self.reactor = reactor
        self.inherited = inherited
        self.paused = paused
        self.shared = shared
        self.fatal = fatal
        self.drain_timeout = drain_timeout
        self.idle_grace = idle_grace
        #: Longest wait for the sharers (:meth:`add_sharer`) before closing the socket anyway.
        self.sharer_timeout = 20.0
        self.tracker = ConnectionTracker(factory, reactor)
        #: When set, the socket lives on in the next process: never unlink a Unix path.
        self.handing_over = False
        self.bound_address = ""
        self._current: _Listening | None = None
        self._endpoint_port: IListeningPort | None = None
        self._rebind_listeners: list[Callable[[IListeningPort], None]] = []
        self._sharers: list[Callable[[], defer.Deferred[None]]] = []
        #: Fires with the port once listening (:meth:`when_listening`).
        self._port_ready: defer.Deferred[IListeningPort] = defer.Deferred()

    # -- what others may ask ---------------------------------------------------------------------

    def listening_socket(self) -> socket.socket | None:
        """The bound listening socket (share its ``fileno()`` with workers / the next process)."""
        return self._current.sock if self._current is not None else None

    def listening_fd(self) -> int | None:
        sock = self.listening_socket()
        return sock.fileno() if sock is not None else None

    @property
    def port(self) -> IListeningPort | None:
        """Twisted's listening port (``getHost()``...), or None when not listening."""
        if self._current is not None:
            return self._current.port
        return self._endpoint_port

    def when_listening(self) -> defer.Deferred[IListeningPort]:
        """Fires with the port once listening (at once if already)."""
        d: defer.Deferred[IListeningPort] = defer.Deferred()

        def relay(port: IListeningPort) -> IListeningPort:
            d.callback(port)
            return port

        self._port_ready.addCallback(relay)
        return d

    def on_rebind(self, listener: Callable[[IListeningPort], None]) -> None:
        """``listener(new_port)`` after a changed ``ListenAddress`` moved us to a new socket."""
        self._rebind_listeners.append(listener)

    def add_sharer(self, stop: Callable[[], defer.Deferred[None]]) -> None:
        """Other processes accept on our socket (HTTP workers); ``stop()`` stops them and fires once
        they are gone.  On a final stop they go first and this process closes the socket last, so
        the connections waiting in its accept queue are served here instead of being reset when the
        last process sharing the socket closes it.  When handing over to the next generation (the
        socket lives on) they stop alongside this process."""
        self._sharers.append(stop)
        if self._current is not None:
            self._current.port.share()

    # -- start / stop ----------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()
        sock = self.inherited
        self.inherited = None
        address = self.address()
        if sock is None:
            try:
                spec = parse_listen_address(address)
            except ValueError as e:
                self._fail(f"{e} ({self.key})")
                return
            if spec.description:
                self._listen_endpoint(spec)
                return
            if spec.systemd_index is not None:
                self._fail(f"cannot listen on {address} ({self.key}): systemd did not pass socket "
                           f"{spec.systemd_index} (LISTEN_FDS)")
                return
            try:
                sock = bind_socket(spec)
            except OSError as e:
                self._fail(listen_problem(address, self.key, e))
                return
        self.bound_address = address
        self._current = self._adopt(sock)
        if self.paused:
            self._current.port.stopReading()
        log.info("Service listening on {address}", address=self._current.name)
        self._port_ready.callback(self._current.port)

    def _fail(self, message: str) -> None:
        if self.fatal is not None:
            self.fatal(message)  # logs it, once
        else:
            log.critical("{message}", message=message)

    def _adopt(self, sock: socket.socket) -> _Listening:
        inode = None
        if sock.family == socket.AF_UNIX:
            try:
                inode = os.lstat(socket_name(sock)).st_ino
            except OSError:
                inode = None
        port = adopt_listening_socket(self.reactor, sock.fileno(), sock.family, self.tracker,
                                      fair=bool(self._sharers))
        return _Listening(sock, port, inode)

    def _listen_endpoint(self, spec: ListenSpec) -> None:
        log.warn("Listening through the endpoint {d!r}: a seamless upgrade cannot hand it over",
                 d=spec.description)
        ep = endpoints.serverFromString(self.reactor, spec.description)
        d = ep.listen(self.tracker)

        def listening(port: IListeningPort) -> IListeningPort:
            self._endpoint_port = port
            self.bound_address = spec.text
            log.info("Service listening on {address}", address=spec.text)
            self._port_ready.callback(port)
            return port

        d.addCallbacks(listening, lambda f: self._fail(listen_problem(spec.text, self.key, f.value)))

    def resume(self) -> None:
        """Start accepting (after a paused start)."""
        self.paused = False
        if self._current is not None:
            self._current.port.startReading()

    def stop_accepting(self) -> defer.Deferred[list[tuple[bool, None]]]:
        """Close the listening socket(s) in this process; connections already accepted go on."""
        ds: list[defer.Deferred[None]] = []
        if self._current is not None:
            final = not self.handing_over
            owner = final and not self.shared
            ds.append(self._current.close(unlink=owner, last=final, refuse_new=owner))
            self._current = None
        if self._endpoint_port is not None:
            stopped = self._endpoint_port.stopListening()
            ds.append(stopped if stopped is not None else defer.succeed(None))
            self._endpoint_port = None
        return defer.DeferredList(ds)

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        sharers = [defer.maybeDeferred(stop) for stop in self._sharers]
        if sharers and not self.handing_over:
            # We keep accepting meanwhile: the load the sharers leave is ours until we close.
            with suppress(defer.TimeoutError):
                await wait_at_most(defer.DeferredList(sharers, consumeErrors=True), self.sharer_timeout,
                                   self.reactor)
        await self.stop_accepting()
        await self.tracker.drain(self.drain_timeout, self.idle_grace)

    # -- ListenAddress changed (reload) ------------------------------------------------------------

    async def rebind(self, address: str) -> bool:
        """Move to ``address``: the new socket listens before the old one closes.

        Returns False (and keeps the old socket) when the new address cannot be used.  When only the
        interface changes on the same port (the kernel refuses two listeners), the old socket closes
        first and is bound again if the new bind fails.
        """
        if address == self.bound_address:
            return True
        try:
            spec = parse_listen_address(address)
            if spec.description or spec.systemd_index is not None:
                raise ValueError(f"cannot switch to {address!r} on reload; restart the daemon")
        except ValueError as e:
            log.error("ListenAddress not changed: {error}", error=str(e))
            return False
        old = self._current
        try:
            sock = bind_socket(spec)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or old is None or not self._same_port(old, spec):
                log.error("ListenAddress not changed: listen {a}: {e}", a=address, e=e.strerror or e)
                return False
            replacement = await self._rebind_in_place(old, spec, address)
            if replacement is None:
                return False
            sock, old = replacement, None
        new = self._adopt(sock)
        self._current = new
        self.bound_address = address
        if old is not None:
            await old.close(unlink=old.name != new.name, last=True)
        log.info("Service listening on {address}", address=new.name)
        for listener in list(self._rebind_listeners):
            try:
                listener(new.port)
            except Exception:
                log.failure("rebind listener failed")
        return True

    @staticmethod
    def _same_port(old: _Listening, spec: ListenSpec) -> bool:
        return old.sock.family != socket.AF_UNIX and old.sock.getsockname()[1] == spec.port

    async def _rebind_in_place(self, old: _Listening, spec: ListenSpec,
                               address: str) -> socket.socket | None:
        log.warn("ListenAddress {a}: same port as the current socket; closing it first", a=address)
        old_spec = parse_listen_address(self.bound_address)
        await old.close(unlink=False)
        self._current = None
        try:
            return bind_socket(spec)
        except OSError as e:
            log.error("ListenAddress not changed: listen {a}: {e}", a=address, e=e.strerror or e)
            for _ in range(20):
                try:
                    self._current = self._adopt(bind_socket(old_spec))
                    break
                except OSError:
                    await task.deferLater(self.reactor, 0.05, lambda: None)
            else:
                self._fail(f"could not listen again on {self.bound_address}")
            return None
