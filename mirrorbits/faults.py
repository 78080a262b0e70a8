"""Named fault points: where the crash-consistency tests SIGKILL the daemon.

A multi-step write (a scan commit, a counter flush, a health state change, an admin ``edit`` or
``remove``) calls :func:`point` with a name between two of its Redis steps.  In production that
call does nothing: :data:`point` is bound once, at import, to a no-op function, because the
environment variable below is never set outside the tests.

``MIRRORBITS_FAULT_POINT=<name>:<n>`` arms one point: the process sends itself ``SIGKILL`` (no
clean-up, no flush, no ``finally``; what the OOM killer or a power loss does to the process) when it
passes ``<name>`` for the ``n``-th time (counted from 1 since the start of the process).  Just
before, it writes ``fault point <name>:<n> reached`` to file descriptor 2, so the test knows the kill
was its own.  A malformed value arms nothing.

Where a step is one Lua script or one ``MULTI``/``EXEC``, Redis applies all of it or none of it, so
a kill lands only before or after it: the points sit on both sides of such steps.

The points and the steps they separate are listed in ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

__all__ = ["ENV", "arm", "point"]

ENV = "MIRRORBITS_FAULT_POINT"


def _noop(name: str) -> None:
    """Production: a fault point costs one call of this function."""


def arm(spec: str | None) -> Callable[[str], None]:
    """The function a fault point calls for this setting: the no-op unless ``spec`` is
    ``<name>:<n>`` with ``n`` >= 1."""
    if not spec or ":" not in spec:
        return _noop
    name, _, count = spec.rpartition(":")
    try:
        target = int(count)
    except ValueError:
        return _noop
    if not name or target < 1:
        return _noop
    passages = 0

    def kill_at(point_name: str) -> None:
        nonlocal passages
        if point_name != name:
            return
        passages += 1
        if passages == target:
            try:
                os.write(2, f"fault point {name}:{target} reached\n".encode())
            except OSError:
                pass
            os.kill(os.getpid(), signal.SIGKILL)

    return kill_at


#: Call ``point("<name>")`` between two steps of a multi-step write.
point: Callable[[str], None] = arm(os.environ.get(ENV))
