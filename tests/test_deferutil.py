"""Waiting for a Deferred without owning it: :func:`follow` and :func:`wait_at_most`, on a fake clock."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.trial import unittest

from mirrorbits.deferutil import follow, wait_at_most


def _source() -> tuple[defer.Deferred[str], list[bool]]:
    """A Deferred that records whether anyone cancelled it."""
    cancelled: list[bool] = []
    return defer.Deferred(lambda d: cancelled.append(True)), cancelled


class WaitAtMostTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()

    def test_timeout_fires_and_leaves_the_source_running(self) -> None:
        source, cancelled = _source()
        wait = wait_at_most(source, 2.0, self.clock, message="too slow")
        self.clock.advance(1.9)
        self.assertNoResult(wait)
        self.clock.advance(0.1)
        failure = self.failureResultOf(wait, defer.TimeoutError)
        self.assertEqual(str(failure.value), "too slow")
        self.assertEqual(cancelled, [])
        # The source goes on for its other users and keeps its result.
        source.callback("late")
        self.assertEqual(self.successResultOf(source), "late")

    def test_default_message_says_how_long(self) -> None:
        source, _ = _source()
        wait = wait_at_most(source, 3.0, self.clock)
        self.clock.advance(3.0)
        self.assertIn("3.0s", str(self.failureResultOf(wait, defer.TimeoutError).value))

    def test_result_before_the_timeout(self) -> None:
        source, cancelled = _source()
        wait = wait_at_most(source, 2.0, self.clock)
        self.clock.advance(1.0)
        source.callback("value")
        self.assertEqual(self.successResultOf(wait), "value")
        # The timer is gone: nothing left on the clock to fire later.
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(cancelled, [])

    def test_already_fired_source_answers_at_once(self) -> None:
        wait = wait_at_most(defer.succeed(7), 2.0, self.clock)
        self.assertEqual(self.successResultOf(wait), 7)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_source_failure_propagates_before_the_timeout(self) -> None:
        source, _ = _source()
        wait = wait_at_most(source, 2.0, self.clock, consume=True)
        source.errback(ValueError("boom"))
        self.assertEqual(str(self.failureResultOf(wait, ValueError).value), "boom")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # consume=True: the source's own chain holds no failure to be logged as unhandled.
        self.assertIsNone(self.successResultOf(source))

    def test_cancelling_the_wait_does_not_cancel_the_source(self) -> None:
        source, cancelled = _source()
        wait = wait_at_most(source, 2.0, self.clock)
        wait.cancel()
        self.failureResultOf(wait, defer.CancelledError)
        self.assertEqual(cancelled, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        source.callback("still delivered")
        self.assertEqual(self.successResultOf(source), "still delivered")

    def test_without_consume_the_source_keeps_its_result(self) -> None:
        source, _ = _source()
        wait = wait_at_most(source, 2.0, self.clock)
        source.callback("shared")
        self.assertEqual(self.successResultOf(wait), "shared")
        self.assertEqual(self.successResultOf(source), "shared")


class FollowTests(unittest.SynchronousTestCase):
    def test_cancelling_a_follower_runs_on_cancel_not_the_source_canceller(self) -> None:
        source, cancelled = _source()
        aborted: list[bool] = []
        first = follow(source, on_cancel=lambda: aborted.append(True))
        second = follow(source)
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.assertEqual((aborted, cancelled), ([True], []))
        source.callback("x")
        self.assertEqual(self.successResultOf(second), "x")

    def test_consume_keeps_the_failure_off_the_source(self) -> None:
        source, _ = _source()
        follower = follow(source, consume=True)
        source.errback(ValueError("once"))
        self.failureResultOf(follower, ValueError)
        result = self.successResultOf(source)
        self.assertNotIsInstance(result, Failure)
