"""The pid file, as the Go original writes it.

A pid file that cannot be written at start (a full or read-only filesystem) does not stop the
daemon, as in Go; unlike Go, it is tried again every :data:`RETRY_INTERVAL` seconds until it is
written (logrotate's ``postrotate`` and init scripts signal the pid it holds), logged once.
"""

from __future__ import annotations

import contextlib
import os

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger(namespace="mirrorbits.pidfile")


def pidfile_path(given: str | None) -> str:
    """``-p`` wins, then ``$XDG_RUNTIME_DIR/mirrorbits.pid``, then ``/run/mirrorbits/mirrorbits.pid``."""
    if given:
        return given
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "mirrorbits.pid")
    return "/run/mirrorbits/mirrorbits.pid"


#: Seconds between two attempts to write a pid file that could not be written.
RETRY_INTERVAL = 5.0


def write_pidfile(path: str, quiet: bool = False) -> bool:
    """Decimal pid, no newline, mode 0644; parent dirs 0755.  Failures are logged (unless
    ``quiet``), not fatal; no temporary file is left behind."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return True
    except OSError as e:
        if not quiet:
            log.error("Unable to write pid file: {error}", error=e)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False


def retry_pidfile(reactor: IReactorTime, path: str,
                  interval: float = RETRY_INTERVAL) -> task.LoopingCall:
    """Try writing the pid file every ``interval`` seconds until it is written (the first failure
    was logged by :func:`write_pidfile`); say when it is. A file that meanwhile holds another
    pid (an upgraded child took over) is left alone, and the attempts stop."""
    def attempt() -> None:
        with contextlib.suppress(OSError):
            with open(path) as f:
                if f.read().strip() not in ("", str(os.getpid())):
                    loop.stop()
                    return
        if write_pidfile(path, quiet=True):
            log.info("pid file {path} written", path=path)
            loop.stop()

    loop = task.LoopingCall(attempt)
    loop.clock = reactor
    loop.start(interval, now=False)
    return loop


def remove_pidfile(path: str) -> None:
    """Remove the file only if it still holds our pid (an upgraded child's file is left alone)."""
    try:
        with open(path) as f:
            content = f.read().strip()
        if content == str(os.getpid()):
            os.unlink(path)
    except OSError:
        pass
