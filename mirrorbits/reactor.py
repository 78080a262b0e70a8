"""The reactor as the daemon's parts see it.

Every part takes its reactor as an argument (tests pass ``task.Clock`` or a memory reactor), and most
use several of Twisted's reactor interfaces at once (time, TCP, Unix sockets, processes, threads).
:class:`IDaemonReactor` names that combination once, so a parameter says ``reactor: IDaemonReactor``
instead of ``Any``; a part that only needs one facet (``IReactorTime`` for timers) should ask for that
facet alone.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorPluggableNameResolver,
    IReactorProcess,
    IReactorSocket,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUNIX,
)


class IDaemonReactor(IReactorCore, IReactorTime, IReactorTCP, IReactorUNIX, IReactorSocket,
                     IReactorProcess, IReactorFDSet, IReactorThreads, IReactorPluggableNameResolver):
    """The facets of Twisted's default reactor that the daemon uses (the epoll/poll reactors provide
    all of them)."""


def default_reactor() -> IDaemonReactor:
    """The global reactor, typed; imported on call so that importing a module never installs one."""
    from twisted.internet import reactor

    return cast(IDaemonReactor, reactor)
