"""The daemon's stop is bounded as a whole: parts stuck on Redis share one budget.

Each part's stop used to be bounded on its own (30 s), so two parts waiting on Redis at once (the
final counter flush and a scan's commit while Redis restarts) added their waits and held the exit
past what a supervisor (or a test waiting 30 s for the exit) allows.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer, task
from twisted.trial import unittest

from mirrorbits.app import Mirrorbits
from mirrorbits.config import Config, ConfigHolder
from mirrorbits.service import MirrorbitsService


class StuckStop(service.Service):
    """A part whose stop waits for something that never comes (a reply of a hung Redis)."""

    def __init__(self, name: str, stopped: list[str]) -> None:
        self.setName(name)
        self.stopped = stopped
        self.waiting: defer.Deferred[None] = defer.Deferred()

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        self.stopped.append(self.name)
        return self.waiting


class QuickStop(service.Service):
    def __init__(self, name: str, stopped: list[str]) -> None:
        self.setName(name)
        self.stopped = stopped

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        self.stopped.append(self.name)


class StopBudgetTests(unittest.TestCase):
    def tree(self, *children: service.Service) -> tuple[MirrorbitsService, task.Clock]:
        clock = task.Clock()
        app = Mirrorbits(ConfigHolder(Config()), clock, monitor=False)  # type: ignore[arg-type]
        root = MirrorbitsService(app)
        for child in children:
            child.setServiceParent(root)
        service.Service.startService(root)
        for child in children:
            child.startService()
        return root, clock

    def test_stuck_parts_share_one_budget(self) -> None:
        stopped: list[str] = []
        redis, first, second = (QuickStop("redis", stopped), StuckStop("monitor", stopped),
                                StuckStop("stats", stopped))
        root, clock = self.tree(redis, first, second)
        done = root.stopService()
        clock.advance(root.stop_budget)  # the first stuck part used the whole budget
        self.assertEqual(stopped, ["stats", "monitor"])
        self.assertFalse(done.called)
        clock.advance(root.child_stop_floor)  # the next one only gets the floor
        self.assertEqual(stopped, ["stats", "monitor", "redis"])
        self.assertTrue(done.called)
        self.assertLess(clock.seconds(), root.child_stop_timeout)

    def test_embedded_redis_keeps_its_own_bound(self) -> None:
        stopped: list[str] = []
        embedded, stuck = StuckStop("embedded-redis", stopped), StuckStop("stats", stopped)
        root, clock = self.tree(embedded, stuck)
        done = root.stopService()
        clock.advance(root.stop_budget)
        self.assertEqual(stopped, ["stats", "embedded-redis"])
        clock.advance(root.child_stop_floor)  # its snapshot is not cut short by the spent budget
        self.assertFalse(done.called)
        embedded.waiting.callback(None)
        self.assertTrue(done.called)

    def test_parts_that_stop_at_once_do_not_wait(self) -> None:
        stopped: list[str] = []
        root, clock = self.tree(QuickStop("redis", stopped), QuickStop("http", stopped))
        done = root.stopService()
        self.assertTrue(done.called)
        self.assertEqual(stopped, ["http", "redis"])
