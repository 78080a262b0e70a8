"""Signal handlers that hand the work to the reactor thread.

Why ``callFromThread``: a Python signal handler runs between two bytecodes of whatever the main
thread was doing (possibly inside the reactor), so it only schedules; the reactor's wake-up fd makes
it run at once even while the reactor sleeps.  SIGINT/SIGTERM are left to the reactor, whose own
handlers stop it, which runs the same graceful stop as SIGQUIT.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from types import FrameType

from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

log = Logger(namespace="mirrorbits.signals")

Handler = Callable[[], object]
#: What ``signal.getsignal`` returns: a Python handler, SIG_DFL/SIG_IGN, or None (not set from Python).
PythonHandler = Callable[[int, FrameType | None], object]
Previous = PythonHandler | int | signal.Handlers | None


class SignalHandlers:
    """Installs handlers and can put the previous ones back (tests, a stopped service)."""

    def __init__(self, reactor: IReactorThreads) -> None:
        self.reactor = reactor
        self._previous: dict[int, Previous] = {}

    def install(self, handlers: Mapping[int, Handler], *, chain: frozenset[int] = frozenset()) -> None:
        """``handlers[signum]()`` runs on the reactor thread for each signal received.

        For the signals in ``chain`` a previous Python-level handler is still called (e.g. twistd's
        own SIGUSR1 log rotation when it daemonized).
        """
        for signum, handler in handlers.items():
            previous = signal.getsignal(signum)
            self._previous.setdefault(signum, previous)
            earlier = previous if signum in chain and callable(previous) else None

            def on_signal(sig: int, frame: FrameType | None, handler: Handler = handler,
                          earlier: PythonHandler | None = earlier) -> None:
                if earlier is not None:
                    try:
                        earlier(sig, frame)
                    except Exception:  # noqa: BLE001 - never let a chained handler kill us
                        pass
                self.reactor.callFromThread(self._run, handler, sig)

            signal.signal(signum, on_signal)

    @staticmethod
    def _run(handler: Handler, signum: int) -> None:
        try:
            handler()
        except Exception:
            log.failure("handling signal {name} failed", name=signal.Signals(signum).name)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._previous.clear()


class EarlySignals:
    """Remembers HUP/USR1/USR2 that arrive before the daemon's handlers are installed.

    Their default action would kill the process half-started (an upgrade or a logrotate run at the
    wrong moment); instead they are replayed once the daemon is up (:meth:`SignalHandlers.install`
    of the lifecycle).  SIGQUIT before that still ends the process, as a stop request should.
    """

    SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: list[int] = []
        self.taken = False

    def install(self) -> EarlySignals:
        for signum in self.SIGNALS:
            signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # Once taken, this handler may still be called: put back on the lifecycle's stop, or
        # chained by it as "the previous handler".  A signal then is not a start-up one.
        if not self.taken and signum not in self.received:
            self.received.append(signum)

    def take(self) -> list[int]:
        """The signals received so far, in order; from now on nothing more is recorded."""
        received, self.received = self.received, []
        self.taken = True
        return received
