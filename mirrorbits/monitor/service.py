"""The monitor as a Twisted service: started after Redis, stopped before it."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer

from mirrorbits.monitor.scheduler import Monitor


class MonitorService(service.Service):
    """Runs the :class:`~mirrorbits.monitor.scheduler.Monitor` (only with ``-monitor``, the default).

    Stopping cancels the health-check requests in flight (their results are discarded) and aborts
    the running scans, which clean up and release their ``SCANNING_<id>`` locks before the Redis
    service below stops.
    """

    name = "monitor"

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.monitor.start()

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        super().stopService()
        return defer.Deferred.fromCoroutine(self.monitor.stop())
