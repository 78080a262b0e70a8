"""Seamless binary upgrade: the Go original's hand-over protocol.

Old process: spawn the same program (same argv, working directory, environment) with the HTTP
listening socket at the *same* fd number and ``OLD_FD``/``OLD_NAME``/``OLD_PPID`` set.  New process:
adopt ``OLD_FD``, serve, then send SIGQUIT to ``OLD_PPID``; the old one drains and exits.  Keeping the
protocol byte for byte lets a Go daemon hand over to this one (and back).

This module holds the mechanics; :mod:`mirrorbits.lifecycle.control` decides when.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure

from mirrorbits.lifecycle.listener import socket_from_fd, socket_name
from mirrorbits.lifecycle.systemd import listen_fds

log = Logger(namespace="mirrorbits.upgrade")

ENV_FD, ENV_NAME, ENV_PPID = "OLD_FD", "OLD_NAME", "OLD_PPID"


class UpgradeError(Exception):
    """The upgrade could not start; the running daemon keeps serving."""


@dataclass
class Inherited:
    """A listening socket we did not bind: from the previous generation, or from systemd."""

    sock: socket.socket
    #: The process to send SIGQUIT to once we serve (None for systemd's socket activation).
    parent_pid: int | None
    name: str
    source: str  # "upgrade" or "systemd"


def inherited_from_upgrade(environ: MutableMapping[str, str] | None = None) -> Inherited | None:
    """The socket of a seamless upgrade, if ``OLD_FD`` names one.

    The variables are removed from the environment once read: our own children (HTTP workers,
    rsync, the next upgrade) must not mistake them for theirs (Go leaves them; harmless there
    because it only reads them at start).  A stale ``OLD_FD`` that is not a listening socket is
    logged and ignored, and we bind ``ListenAddress`` as usual.
    """
    env = os.environ if environ is None else environ
    fd_text = env.pop(ENV_FD, None)
    name = env.pop(ENV_NAME, "")
    ppid_text = env.pop(ENV_PPID, "")
    if fd_text is None:
        return None
    try:
        fd = int(fd_text)
    except ValueError:
        log.warn("Ignoring {var}={value!r}: not a number", var=ENV_FD, value=fd_text)
        return None
    try:
        sock = socket_from_fd(fd)
    except (OSError, ValueError) as e:
        log.error("Cannot use the inherited listener {var}={fd} ({name}): {error}; binding "
                  "ListenAddress instead", var=ENV_FD, fd=fd, name=name, error=e)
        return None
    try:
        ppid: int | None = int(ppid_text)
    except ValueError:
        ppid = None
    log.info("Recovered listener {name} from fd {fd}", name=name or socket_name(sock), fd=fd)
    return Inherited(sock, ppid if ppid and ppid > 1 else None, name, "upgrade")


def inherited_from_systemd(environ: MutableMapping[str, str] | None = None) -> Inherited | None:
    """The HTTP socket of systemd socket activation: the one named ``http``, else the first."""
    activated = listen_fds(environ)
    chosen = next((s for s in activated if s.name == "http"), activated[0] if activated else None)
    if chosen is None:
        return None
    try:
        sock = socket_from_fd(chosen.fd)
    except (OSError, ValueError) as e:
        log.error("Ignoring the socket systemd passed as fd {fd}: {error}", fd=chosen.fd, error=e)
        return None
    log.info("Using the socket passed by systemd ({name})", name=socket_name(sock))
    return Inherited(sock, None, chosen.name, "systemd")


def inherited_listener(environ: MutableMapping[str, str] | None = None) -> Inherited | None:
    """``OLD_FD`` first (an upgrade of a socket-activated daemon passes it that way), then systemd."""
    return inherited_from_upgrade(environ) or inherited_from_systemd(environ)


def successor_command() -> tuple[str, list[str]]:
    """The program and argv to start: what started us (``sys.orig_argv``: interpreter, ``-m`` or
    script, arguments), so the new code on disk is what runs.  Go looks ``argv[0]`` up in PATH;
    for a Python program that is the interpreter, which we know already."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return sys.executable, argv


class SuccessorProcess(protocol.ProcessProtocol):
    """The old process's view of the new one: only when it ends matters (it shares our stdio)."""

    def __init__(self) -> None:
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self.pid: int | None = None

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.pid = getattr(self.transport, "pid", None)

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.ended.callback(code if sig is None else -sig)

    @property
    def alive(self) -> bool:
        return not self.ended.called

    def terminate(self) -> None:
        try:
            if self.transport is not None:
                self.transport.signalProcess("TERM")
        except error.ProcessExitedAlready:
            pass


def spawn_successor(reactor: IReactorProcess, sock: socket.socket, *, executable: str | None = None,
                    argv: Sequence[str] | None = None,
                    environ: dict[str, str] | None = None) -> SuccessorProcess:
    """Start the new process with ``sock`` at the same fd number (Go's ``ExtraFiles`` layout).

    Raises :class:`UpgradeError` if it cannot be started.
    """
    fd = sock.fileno()
    if fd < 3:  # Go: "FD must be >= 2"; 0-2 are the child's stdio
        raise UpgradeError(f"listening socket has fd {fd}, cannot pass it")
    default_exe, default_argv = successor_command()
    exe = executable or default_exe
    args = list(argv or default_argv)
    if not os.access(exe, os.X_OK):
        raise UpgradeError(f"{exe}: not an executable")
    env = dict(os.environ if environ is None else environ)
    env[ENV_FD] = str(fd)
    env[ENV_NAME] = f"tcp:{socket_name(sock)}->"  # "tcp:" even for Unix sockets, as Go writes it
    env[ENV_PPID] = str(os.getpid())
    proto = SuccessorProcess()
    try:
        reactor.spawnProcess(proto, exe, args, env=env, path=os.getcwd(),
                             childFDs={0: 0, 1: 1, 2: 2, fd: fd})
    except Exception as e:  # OSError from posix_spawn/fork, or Twisted's checks
        raise UpgradeError(str(e)) from e
    return proto


def ask_parent_to_quit(pid: int) -> bool:
    """SIGQUIT the previous generation (its graceful stop).  False if it is gone already."""
    log.info("Asking parent to quit")
    try:
        os.kill(pid, signal.SIGQUIT)
        return True
    except ProcessLookupError:
        log.warn("Parent {pid} is gone already", pid=pid)
    except PermissionError as e:
        log.error("Cannot signal parent {pid}: {error}", pid=pid, error=e)
    return False
