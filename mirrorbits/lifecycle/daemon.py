"""``mirrorbits daemon``: the Go-compatible way to start the server (flags of cli-and-admin §1.3).

Runs the same service tree as ``twistd mirrorbits`` (one ``makeService``), in the foreground, with
Go's start-up order: config, logs, pid file, banner, services, signals, serve.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from mirrorbits import VERSION

BANNER = (
    " _______ __                        __     __ __\n"
    "|   |   |__|.----.----.-----.----.|  |--.|__|  |_.-----.\n"
    "|       |  ||   _|   _|  _  |   _||  _  ||  |   _|__ --|\n"
    "|__|_|__|__||__| |__| |_____|__|  |_____||__|____|_____|  {version}\n\n"
)


def banner() -> str:
    return BANNER.format(version=VERSION)


class ReopenableLog:
    """The ``-log`` file, re-opened by name on SIGUSR1/SIGHUP so logrotate can move it away."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115

    def write(self, text: str) -> int:
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def reopen(self) -> None:
        try:
            new: IO[str] = open(self.path, "a", buffering=1)  # noqa: SIM115
        except OSError as e:
            self._file.write(f"cannot re-open {self.path}: {e}; logging on\n")
            return
        old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        self._file.close()


def start_logging(log_file: str, debug: bool) -> IO[str] | ReopenableLog:
    stream: IO[str] | ReopenableLog = ReopenableLog(log_file) if log_file else sys.stderr
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug if debug else LogLevel.info)
    observer = FilteringLogObserver(textFileLogObserver(stream), [predicate])  # type: ignore[arg-type]
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return stream


def run_daemon(arguments: Sequence[str], reactor: Any = None) -> int:
    """Parse the daemon flags, build the services and run the reactor; returns the exit status."""
    from mirrorbits.admin.usage import daemon_flagset
    from mirrorbits.config import ConfigError
    from mirrorbits.lifecycle.pidfile import pidfile_path, remove_pidfile, write_pidfile
    from mirrorbits.lifecycle.signals import EarlySignals
    from mirrorbits.service import DaemonOptions, load_options_config, makeService

    early = EarlySignals().install()
    parsed = daemon_flagset().parse(list(arguments))
    if not parsed.ok:
        sys.stderr.write(parsed.stderr)
        return parsed.exit_code
    pidfile = pidfile_path(parsed.get_str("p") or None)
    options = DaemonOptions(config=parsed.get_str("config") or None,
                            pidfile=pidfile,
                            debug=parsed.get_bool("debug"),
                            monitor=parsed.get_bool("monitor"))
    try:
        holder = load_options_config(options)
    except ConfigError as e:
        if str(e).startswith("Configuration could not be found"):
            print("Configuration could not be found.\n\tUse -config <path>")
        else:
            sys.stderr.write(f"{e}\n")
        return 1
    stream = start_logging(parsed.get_str("log"), options.debug)
    if "OLD_FD" not in os.environ:
        # An upgraded child writes it once it has taken over (Lifecycle), so that a child that
        # fails to start leaves the running parent's pid in the file.
        write_pidfile(pidfile)
    sys.stdout.write(banner())
    sys.stdout.flush()
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    try:
        root = makeService(options, reactor=reactor, config=holder)
    except (ConfigError, ValueError) as e:
        sys.stderr.write(f"{e}\n")
        remove_pidfile(pidfile)
        return 1
    app = root.app
    app.hard_exit_on_fatal = False
    from mirrorbits.lifecycle import get_lifecycle

    lifecycle = get_lifecycle(app)
    if lifecycle is not None:
        lifecycle.early = early
        if isinstance(stream, ReopenableLog):
            lifecycle.add_log_reopener(stream.reopen)
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()
    remove_pidfile(pidfile)
    return app.exit_code
