"""The pid file, as the Go original writes it."""

from __future__ import annotations

import os

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


def write_pidfile(path: str) -> bool:
    """Decimal pid, no newline, mode 0644; parent dirs 0755.  Failures are logged, not fatal."""
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return True
    except OSError as e:
        log.error("Unable to write pid file: {error}", error=e)
        return False


def remove_pidfile(path: str) -> None:
    """Remove the file only if it still holds our pid (an upgraded child's file is left alone)."""
    try:
        with open(path) as f:
            content = f.read().strip()
        if content == str(os.getpid()):
            os.unlink(path)
    except OSError:
        pass
