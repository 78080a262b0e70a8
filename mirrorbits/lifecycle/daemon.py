"""How a daemon process is started: ``mirrorbits daemon`` (the Go flags), an HTTP worker process, and
the log level of ``twistd mirrorbits`` / ``mirrorbits.tac``.

Every way runs the same service tree (one ``makeService``); ``mirrorbits daemon`` in the foreground
with Go's start-up order: config, logs, pid file, banner, services, signals, serve.  An HTTP worker
(``python -m mirrorbits.worker``, spawned by the main process when ``Workers`` > 1) runs the worker
flavour of that tree, logging where its parent logs, at its parent's level.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from collections.abc import Sequence
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile

from mirrorbits import VERSION
from mirrorbits.admin.usage import daemon_flagset
from mirrorbits.app import DaemonOptions, WorkerSpec
from mirrorbits.config import ConfigError
from mirrorbits.lifecycle.pidfile import pidfile_path, remove_pidfile, retry_pidfile, write_pidfile
from mirrorbits.lifecycle.signals import EarlySignals
from mirrorbits.lifecycle.worker import LISTEN_FD, parse_worker_arguments
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.service import MirrorbitsService, load_options_config, makeService

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


def log_observer(stream: IO[str] | ReopenableLog | LogFile, debug: bool) -> ILogObserver:
    """Twisted's text log lines on ``stream``, debug events only with ``debug`` (``-debug``)."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.debug if debug else LogLevel.info)
    return FilteringLogObserver(textFileLogObserver(stream), [predicate])  # type: ignore[arg-type]


def start_logging(log_file: str, debug: bool) -> IO[str] | ReopenableLog:
    stream: IO[str] | ReopenableLog = ReopenableLog(log_file) if log_file else sys.stderr
    globalLogBeginner.beginLoggingTo([log_observer(stream, debug)], redirectStandardIO=False)
    return stream


def twistd_log_stream(logfile: str | None, nodaemon: bool) -> IO[str] | LogFile:
    """Where twistd would log (``--logfile``: a path, ``-`` for stdout; by default stdout in the
    foreground, ``twistd.log`` daemonized).  Ours to choose once an application has an observer
    (twistd logs every level, so without one at our level ``twistd mirrorbits`` would log debug
    events whether ``--debug`` is given or not)."""
    if logfile == "-" or (not logfile and nodaemon):
        return sys.stdout
    return LogFile.fromFullPath(logfile or "twistd.log")


def twistd_log_observer(root: MirrorbitsService, debug: bool, logfile: str | None,
                        nodaemon: bool) -> ILogObserver:
    """The observer, at our level, for the twistd application ``root`` joins; a log file of ours is
    reopened by the lifecycle on SIGUSR1/SIGHUP (twistd's own rotation handler is not installed for
    an application that brings its observer)."""
    stream = twistd_log_stream(logfile, nodaemon)
    if isinstance(stream, LogFile):
        root.app.get_lifecycle().add_log_reopener(stream.reopen)
    return log_observer(stream, debug)


#: Seconds from the start of the stop to a forced exit: above the service tree's own bounds (its stop
#: budget, and the embedded Redis' snapshot, killed after 20 s), for what they do not cover (a
#: thread the reactor or the interpreter joins on the way out).
EXIT_WATCHDOG = 45.0


def arm_exit_watchdog(timeout: float = EXIT_WATCHDOG) -> None:
    """If the process still runs ``timeout`` seconds from now, write every thread's stack to stderr
    (the log) and exit with status 1: a stop request always ends the process, and the stacks say
    what held it.  A C-level timer (``faulthandler``): it fires even while the interpreter shuts
    down or the reactor thread is blocked."""
    faulthandler.dump_traceback_later(timeout, exit=True)


def serve(root: MirrorbitsService, reactor: IDaemonReactor) -> int:
    """Run the reactor with ``root`` started, stop the tree on shutdown; the process's exit status."""
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", arm_exit_watchdog)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()
    return root.app.exit_code


def run_daemon(arguments: Sequence[str], reactor: IDaemonReactor | None = None) -> int:
    """Parse the daemon flags, build the services and run the reactor; returns the exit status."""
    early = EarlySignals().install()
    parsed = daemon_flagset().parse(list(arguments))
    if not parsed.ok:
        sys.stderr.write(parsed.stderr)
        return parsed.exit_code
    pidfile = pidfile_path(parsed.get_str("p") or None)
    options = DaemonOptions(config=parsed.get_str("config") or None,
                            pidfile=pidfile,
                            debug=parsed.get_bool("debug"),
                            monitor=parsed.get_bool("monitor"),
                            log_file=parsed.get_str("log") or None)
    try:
        holder = load_options_config(options)
    except ConfigError as e:
        if str(e).startswith("Configuration could not be found"):
            print("Configuration could not be found.\n\tUse -config <path>")
        else:
            sys.stderr.write(f"{e}\n")
        return 1
    stream = start_logging(options.log_file or "", options.debug)
    pid_written = True
    if "OLD_FD" not in os.environ:
        # An upgraded child writes it once it has taken over (Lifecycle), so that a child that
        # fails to start leaves the running parent's pid in the file.
        pid_written = write_pidfile(pidfile)
    sys.stdout.write(banner())
    sys.stdout.flush()
    reactor = reactor if reactor is not None else default_reactor()
    try:
        root = makeService(options, reactor=reactor, config=holder, early=early)
    except (ConfigError, ValueError) as e:
        sys.stderr.write(f"{e}\n")
        remove_pidfile(pidfile)
        return 1
    root.app.hard_exit_on_fatal = False
    lifecycle = root.app.get_lifecycle()
    if isinstance(stream, ReopenableLog):
        lifecycle.add_log_reopener(stream.reopen)
    if not pid_written:
        retry_pidfile(reactor, pidfile)
    status = serve(root, reactor)
    remove_pidfile(pidfile)
    return status


def run_worker(arguments: Sequence[str], reactor: IDaemonReactor | None = None) -> int:
    """One HTTP worker process: the worker flavour of the daemon's service tree on the listening
    socket its parent passed as fd :data:`~mirrorbits.lifecycle.worker.LISTEN_FD`."""
    early = EarlySignals().install()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    opts = parse_worker_arguments(arguments)
    options = DaemonOptions(config=opts.config, debug=opts.debug, monitor=False,
                            log_file=opts.log or None,
                            worker=WorkerSpec(opts.index, LISTEN_FD, opts.ready_fd,
                                              metrics_socket=opts.metrics_socket))
    stream = start_logging(opts.log, opts.debug)
    try:
        holder = load_options_config(options)
        root = makeService(options, reactor=reactor if reactor is not None else default_reactor(),
                           config=holder, early=early)
    except (ConfigError, ValueError) as e:
        sys.stderr.write(f"HTTP worker {opts.index}: {e}\n")
        return 1
    lifecycle = root.app.get_lifecycle()
    if isinstance(stream, ReopenableLog):
        lifecycle.add_log_reopener(stream.reopen)
    return serve(root, root.app.reactor)
