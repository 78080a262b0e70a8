"""The worker process's own ends: the fds its parent gives it and the watch on its parent.

An HTTP worker (config key ``Workers``) is the same daemon as the main process, built by the same
``makeService`` in its worker flavour; what only a worker needs is here: the fd numbers of the
shared listening socket and of the "ready" pipe, and :class:`ParentWatch`, which stops the worker
when its parent goes away (its stdin, a pipe only the parent holds open, reaches end of file), so
that no worker outlives its daemon.  The parent's side (spawning, respawning, stopping workers) is
:mod:`mirrorbits.web.workers`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

from twisted.internet import main as twisted_main
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

#: What the main process runs for a worker (``python -m``), and what a process list shows.
WORKER_MODULE = "mirrorbits.worker"
#: The fd number under which a worker receives the listening socket.
LISTEN_FD = 3
#: The worker writes a line on this pipe once its signal handlers are in place.
READY_FD = 4
#: Longest wait for the view's warm-up before a new worker starts accepting connections.
WARM_WAIT = 30.0
#: A worker's own hard bound on its whole stop (drain, final flush, Redis close).
WORKER_STOP_DEADLINE = 15.0


@implementer(IReadDescriptor)
class ParentWatch:
    """Reads the worker's stdin, a pipe only the parent holds open: end of file = parent gone."""

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self.fd = fd
        self.gone = gone
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> BaseException | None:  # type: ignore[override]  # noqa: N802
        # The posix reactors take the *exception* of a lost descriptor (as their own descriptors
        # return it), whatever the interface's annotation says.
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        return None if data else twisted_main.CONNECTION_DONE

    def connectionLost(self, reason: object) -> None:  # noqa: N802
        self.gone()

    def logPrefix(self) -> str:  # noqa: N802
        return "parent-watch"


def say_ready(fd: int) -> str | None:
    """Tell the parent (on ``fd``) that signals can be sent now; the error text if that failed."""
    try:
        os.write(fd, b"ready\n")
        os.close(fd)
    except OSError as e:
        return str(e)
    return None


def worker_arguments(index: int, config: str, *, ready_fd: int | None, debug: bool,
                     log_file: str | None, metrics_socket: str | None = None) -> list[str]:
    """The command line (after ``python -m mirrorbits.worker``) of worker ``index``."""
    args = ["--index", str(index), "--config", config]
    if ready_fd is not None:
        args += ["--ready-fd", str(ready_fd)]
    if metrics_socket:
        args += ["--metrics-socket", metrics_socket]
    if debug:
        args.append("--debug")
    if log_file:
        args += ["--log", log_file]
    return args


def parse_worker_arguments(arguments: Sequence[str]) -> argparse.Namespace:
    """What :func:`worker_arguments` wrote: ``index``, ``config``, ``ready_fd``, ``debug``, ``log``,
    ``metrics_socket``."""
    parser = argparse.ArgumentParser(prog="mirrorbits-worker")
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--log", default="")
    parser.add_argument("--metrics-socket", default=None)
    return parser.parse_args(list(arguments))
