"""The ``mirrorbits`` console script: ``daemon`` starts the server, every other word is a CLI command.

An entry point, apart from the command table (:mod:`mirrorbits.admin.cli`) that the SSH manhole
shares: only this module reaches both the client and the daemon's assembly.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.internet import defer, task

from mirrorbits.admin.cli import StdIO, run
from mirrorbits.lifecycle.daemon import run_daemon
from mirrorbits.reactor import IDaemonReactor

__all__ = ["entry_point", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``mirrorbits daemon ...`` or ``mirrorbits [options] COMMAND ...``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "daemon":
        return run_daemon(args[1:])

    result: list[int] = [1]
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "mirrorbits"

    async def go(reactor: IDaemonReactor) -> None:
        result[0] = await run(args, StdIO(), reactor, argv0=argv0)

    def react_main(reactor: IDaemonReactor) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(go(reactor))

    try:
        task.react(react_main)
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return result[0]


def entry_point() -> None:
    raise SystemExit(main())
