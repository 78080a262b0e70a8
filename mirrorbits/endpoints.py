"""Go-style listen addresses (``:8080``, ``host:port``, ``[v6]:port``, ``unix:/path``) as Twisted
endpoint descriptions, so the config keeps the Go syntax and the code uses ``serverFromString``;
and :class:`ConfiguredListener`, the service of a port a config key names (the admin channel, the
manhole), whose failure to listen at start-up ends the daemon instead of leaving it half up."""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="mirrorbits.endpoints")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::", 0))
        return True
    except OSError:
        return False


def listen_description(address: str) -> str:
    """A Twisted server endpoint description for a Go listen address.

    ``:8080`` listens on every address like Go does (IPv6 socket accepting IPv4 too, where the host
    has IPv6).  A value that already is an endpoint description (``tcp:``, ``tcp6:``, ``unix:``,
    ``systemd:``, ``ssl:``) is passed through, which is how a systemd socket or TLS is configured.
    """
    if not address:
        raise ValueError("empty listen address")
    for prefix in ("tcp:", "tcp6:", "ssl:", "systemd:", "unix:"):
        if address.startswith(prefix):
            if prefix == "unix:":
                return "unix:" + _escape(address[5:])
            return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {address!r} (expected host:port, :port or unix:/path)")
    if host.startswith("[") and host.endswith("]"):
        return f"tcp6:{port}:interface={_escape(host[1:-1])}"
    if not host:
        return f"tcp6:{port}:interface=\\:\\:" if ipv6_available() else f"tcp:{port}"
    if ":" in host:
        return f"tcp6:{port}:interface={_escape(host)}"
    return f"tcp:{port}:interface={host}"


def listen_problem(address: str, key: str, reason: object) -> str:
    """The one-line message of a port that cannot be opened: the address, the config key that
    names it, and the system's reason ("Address already in use"), without Twisted's wrapping."""
    why: object = reason
    if isinstance(reason, CannotListenError) and isinstance(reason.socketError, OSError):
        why = reason.socketError.strerror or reason.socketError
    elif isinstance(reason, OSError) and reason.strerror:
        why = reason.strerror
    return f"cannot listen on {address} ({key}): {why}"


class ConfiguredListener(service.Service):
    """Serves ``factory`` on the address of config key ``key``.

    Twisted's ``strports.service`` only logs a port it cannot open, and the daemon would run on
    without its admin channel; here the first start reports it to ``failed(message)`` (the
    daemon's fatal path).  A later start (the admin channel re-opened after a failed upgrade) only
    logs: the daemon is serving by then and must go on.
    """

    def __init__(self, key: str, address: str, factory: IProtocolFactory, reactor: IReactorCore,
                 failed: Callable[[str], None] | None = None) -> None:
        self.key = key
        self.address = address
        self.factory = factory
        self.reactor = reactor
        self.failed = failed
        self.port: IListeningPort | None = None
        self._waiting: defer.Deferred[IListeningPort] | None = None
        self._started_before = False

    def privilegedStartService(self) -> None:  # noqa: N802
        """twistd calls this before it drops privileges (``--uid``): a port below 1024 is bound
        here, as Twisted's own ``strports`` service does."""
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if self._waiting is None:
            self._listen()

    def refusal(self) -> str | None:
        """Why this address must not be served with the current config (None: it may be)."""
        return None

    def _listen(self) -> None:
        first, self._started_before = not self._started_before, True
        refused = self.refusal()
        if refused is not None:
            self._waiting = defer.Deferred()  # never fires: started, and not listening
            self._waiting.addErrback(lambda _: None)  # its cancellation at stop
            if first and self.failed is not None:
                self.failed(refused)
            else:
                log.error("{message}", message=refused)
            return
        try:
            endpoint = endpoints.serverFromString(self.reactor, listen_description(self.address))
            waiting = endpoint.listen(self.factory)
        except Exception as e:  # noqa: BLE001 - a bad address: reported like a busy port
            waiting = defer.fail(e)
        self._waiting = waiting
        waiting.addCallbacks(self._listening, self._not_listening, errbackArgs=(first,))

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        log.debug("{key} listening on {address}", key=self.key, address=self.address)

    def _not_listening(self, failure: Failure, first: bool) -> None:
        if failure.check(defer.CancelledError):
            return
        message = listen_problem(self.address, self.key, failure.value)
        if first and self.failed is not None:
            self.failed(message)
        else:
            log.error("{message}", message=message)

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802
        super().stopService()
        port, self.port = self.port, None
        waiting, self._waiting = self._waiting, None
        if port is not None:
            stopped = port.stopListening()
            return stopped if stopped is not None else defer.succeed(None)
        if waiting is not None and not waiting.called:
            waiting.cancel()
        return None
