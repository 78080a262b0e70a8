"""Waiting for a Deferred without owning it.

Some work must never be cancelled half-way by whoever waits for it: a Redis command (it was sent:
cancelling the wait does not take it back, and its caller must still see what it did), a load that
fills the view for the next request, a connection draining.  Its waiters, though, come and go: a scan is aborted, an HTTP
request gives up after two seconds, the daemon stops.  :func:`follow` gives each waiter its own
Deferred, and :func:`wait_at_most` adds a deadline to that wait, so the one rule "cancelling or
timing out a waiter leaves the source running" is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")


def follow(d: defer.Deferred[T], *, consume: bool = False,
           on_cancel: Callable[[], object] | None = None) -> defer.Deferred[T]:
    """A new Deferred with ``d``'s result, so several waiters can share ``d``, and cancelling a
    waiter does not cancel ``d`` (which may be waiting for a Redis reply).

    ``consume=True`` leaves ``None`` on ``d``'s own chain (the follower reports the failure, so ``d``
    does not log it again as unhandled); by default ``d`` keeps its result for its other users.
    ``on_cancel`` runs when the follower is cancelled, for a softer way to stop the work than
    cancelling ``d`` (e.g. aborting a scan's listing so that the scan cleans up and fails).
    """
    def cancelled(_: defer.Deferred[T]) -> None:
        if on_cancel is not None:
            on_cancel()

    follower: defer.Deferred[T] = defer.Deferred(cancelled)

    def forward(result: T | Failure) -> T | Failure | None:
        if not follower.called:
            if isinstance(result, Failure):
                follower.errback(result)
            else:
                follower.callback(result)
        return None if consume else result

    d.addBoth(forward)
    return follower


class _Settled:
    """``d``'s outcome, success or failure, as a success value: :func:`defer.race` takes the first
    *success*, and a source that fails must end the wait at once too."""

    __slots__ = ("result",)

    def __init__(self, result: object) -> None:
        self.result = result


def wait_at_most(d: defer.Deferred[T], seconds: float, clock: IReactorTime, *,
                 consume: bool = False, message: str = "") -> defer.Deferred[T]:
    """``d``'s result if it comes within ``seconds`` (measured on ``clock``), else
    :class:`defer.TimeoutError` (with ``message``, or a default).  ``d`` itself is never cancelled:
    neither by the timeout nor by cancelling the returned Deferred (which fails with
    :class:`defer.CancelledError`); ``consume`` is :func:`follow`'s.
    """
    settled = follow(d, consume=consume).addBoth(_Settled)
    timer = task.deferLater(clock, seconds, lambda: None)
    # race() cancels the loser: the follower (never ``d``) or the pending timer call.
    raced = defer.race([cast("defer.Deferred[object]", settled), cast("defer.Deferred[object]", timer)])

    def outcome(won: tuple[int, object]) -> T | Failure:
        index, value = won
        if index == 1:
            raise defer.TimeoutError(message or f"no result within {seconds}s")
        return cast("T | Failure", cast(_Settled, value).result)

    return raced.addCallback(outcome)
