"""Process lifecycle: signals, pid file, seamless upgrade, systemd notification, HTTP workers' ends.

The running daemon's :class:`~mirrorbits.lifecycle.control.Lifecycle` (``reload()``, ``upgrade()``,
``reopen_logs()``, ``on_upgrade(before, failed)``, ``forward_signals(forward)`` for HTTP worker
processes) is ``app.lifecycle`` of the hub (:class:`mirrorbits.app.Mirrorbits`), or None when the hub
was built without the daemon's service tree (tests, CLI).
"""
