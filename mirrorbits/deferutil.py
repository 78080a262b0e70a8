"""Small Deferred helpers shared by the background services."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure


def follow(d: defer.Deferred[Any], *, consume: bool = False) -> defer.Deferred[Any]:
    """A new Deferred with ``d``'s result, so several waiters can share ``d``, and cancelling a
    waiter does not cancel ``d`` (which may be waiting for a Redis reply).

    ``consume=True`` leaves ``None`` on ``d``'s own chain (the follower reports the failure, so ``d``
    does not log it again as unhandled); by default ``d`` keeps its result for its other users.
    """
    follower: defer.Deferred[Any] = defer.Deferred()

    def forward(result: Any) -> Any:
        if not follower.called:
            if isinstance(result, Failure):
                follower.errback(result)
            else:
                follower.callback(result)
        return None if consume else result

    d.addBoth(forward)
    return follower
