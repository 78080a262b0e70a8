"""Process lifecycle: signals, pid file, seamless upgrade, systemd notification.

Entry point for other parts: :func:`get_lifecycle` gives the running daemon's
:class:`~mirrorbits.lifecycle.control.Lifecycle` (``reload()``, ``upgrade()``, ``reopen_logs()``,
``on_upgrade(before, failed)``, ``forward_signals(forward)`` for HTTP worker processes), or None
when the app was built without the HTTP daemon (tests, CLI).
"""

from __future__ import annotations

from typing import Any

#: Key under which makeService registers the Lifecycle in the app's parts (``Mirrorbits._built``).
APP_KEY = "lifecycle"


def register_lifecycle(app: Any, lifecycle: Any) -> None:
    """Make ``lifecycle`` reachable from the app (the app has no ``get_lifecycle`` of its own yet)."""
    app._once(APP_KEY, lambda: lifecycle)


def get_lifecycle(app: Any) -> Any:
    """The daemon's Lifecycle, or None."""
    getter = getattr(app, "get_lifecycle", None)
    if getter is not None:
        return getter()
    built = getattr(app, "_built", None)
    return built.get(APP_KEY) if isinstance(built, dict) else None
