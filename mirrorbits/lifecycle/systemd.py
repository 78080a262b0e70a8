"""systemd integration without libsystemd: ``sd_notify`` and socket activation (``LISTEN_FDS``).

Why no library: both protocols are a few lines (a datagram to ``$NOTIFY_SOCKET``; fds from 3 on,
described by ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``), and a missing systemd must cost
nothing.  READY=1 is sent once serving, as the Go original does; we also send RELOADING/STOPPING/MAINPID, which the Go
original does not (they only make systemd's view more accurate).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from twisted.logger import Logger

from mirrorbits.twistedcompat import systemd_inherited_fds

log = Logger(namespace="mirrorbits.systemd")

#: The first fd systemd passes (``SD_LISTEN_FDS_START``).
LISTEN_FDS_START = 3


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one ``sd_notify`` message (``READY=1``, ...) if ``$NOTIFY_SOCKET`` is set.

    Never raises: a service manager that went away must not stop the daemon.  The variable is left
    set (Go does not unset it either), so a reload or an upgraded child can notify again.
    """
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warn("sd_notify({message!r}) failed: {error}", message=message, error=e)
        return False


def ready(pid: int | None = None) -> bool:
    """``READY=1`` with our pid as MAINPID (so an upgraded child becomes systemd's main process)."""
    return notify(f"READY=1\nMAINPID={pid or os.getpid()}")


def reloading() -> bool:
    """``RELOADING=1``; MONOTONIC_USEC lets ``Type=notify-reload`` match it to the signal."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> bool:
    return notify("STOPPING=1")


def main_pid(pid: int) -> bool:
    """Tell systemd that ``pid`` (the upgraded child) is now the main process."""
    return notify(f"MAINPID={pid}")


@dataclass(frozen=True)
class ActivatedSocket:
    fd: int
    name: str


def listen_fds(environ: MutableMapping[str, str] | None = None, *, unset: bool = True,
               pid: int | None = None) -> list[ActivatedSocket]:
    """The sockets systemd passed us (``sd_listen_fds``), or ``[]``.

    ``LISTEN_PID`` must be our pid (the variables may have leaked from a parent).  With ``unset``
    the variables are removed so that our own children (workers, rsync, an upgraded daemon) do not
    mistake them for theirs.  The fds are marked close-on-exec: an upgrade passes the HTTP socket
    explicitly.
    """
    env = os.environ if environ is None else environ
    if "LISTEN_FDS" not in env and environ is None:
        return _from_twisted()
    try:
        if int(env.get("LISTEN_PID", "")) != (pid or os.getpid()):
            return []
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    return _checked([(LISTEN_FDS_START + i, names[i] if i < len(names) else "unknown")
                     for i in range(max(0, count))])


def _from_twisted() -> list[ActivatedSocket]:
    """What Twisted read of ``LISTEN_FDS`` (see :func:`mirrorbits.twistedcompat.systemd_inherited_fds`):
    once any module has imported ``twisted.internet.endpoints``, that is the only record left."""
    return _checked(systemd_inherited_fds())


def _checked(fds: list[tuple[int, str]]) -> list[ActivatedSocket]:
    result = []
    for fd, name in fds:
        try:
            os.set_inheritable(fd, False)
        except OSError:
            log.warn("systemd passed fd {fd} ({name}), but it is not open", fd=fd, name=name)
            continue
        result.append(ActivatedSocket(fd, name))
    return result
