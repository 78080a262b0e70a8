"""Back-off of an address that keeps failing the admin channel's password check.

The password is compared in constant time, but nothing stopped a client from trying passwords as fast
as the channel answers.  After ``threshold`` failures within ``window`` seconds an address is refused,
without its password being looked at, for a delay that doubles with each new episode (up to
``max_delay``); a correct password resets the address.  The table is bounded (least recently seen
addresses are forgotten first) so a flood of addresses cannot grow the daemon's memory, and each
episode is logged once, not once per refused call.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["FailureBackoff"]

log = Logger(namespace="mirrorbits.admin.backoff")


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    delay: float = 0.0
    logged: bool = False


class FailureBackoff:
    """Per-address failure counts and refusal delays, on the given clock."""

    def __init__(self, clock: IReactorTime, *, threshold: int = 5, window: float = 60.0,
                 first_delay: float = 2.0, max_delay: float = 300.0, max_addresses: int = 4096) -> None:
        self.clock = clock
        self.threshold = threshold
        self.window = window
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.max_addresses = max_addresses
        self._table: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def refused_for(self, address: str) -> float:
        """Seconds ``address`` is still refused (0: its call may be checked)."""
        record = self._table.get(address)
        if record is None:
            return 0.0
        return max(0.0, record.blocked_until - self.clock.seconds())

    def failure(self, address: str) -> None:
        """A wrong password from ``address``: a refusal starts at the ``threshold``-th in ``window``."""
        now = self.clock.seconds()
        record = self._table.pop(address, None) or _Record()
        self._table[address] = record  # most recently seen last
        while len(self._table) > self.max_addresses:
            self._table.popitem(last=False)
        record.failures = [t for t in record.failures if now - t < self.window] + [now]
        if len(record.failures) < self.threshold:
            return
        record.failures.clear()
        record.delay = min(self.max_delay, record.delay * 2 if record.delay else self.first_delay)
        record.blocked_until = now + record.delay
        if not record.logged:
            record.logged = True
            log.warn("admin channel: {threshold} wrong passwords from {address} within {window:g} s; "
                     "refusing it for a growing delay until it gives the right one",
                     threshold=self.threshold, address=address, window=self.window)

    def success(self, address: str) -> None:
        """The right password from ``address``: its failures and delay are forgotten."""
        self._table.pop(address, None)
