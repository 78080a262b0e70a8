"""``twistd mirrorbits``: run the Mirrorbits download redirector under twistd."""

from __future__ import annotations

from twisted.application.service import IService, IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Geographical download redirector: sends each download to the best mirror for the "
                "client (Go Mirrorbits compatible: same config, Redis data and HTTP behaviour).")
    optParameters = [
        ["config", "c", None,
         "Path of the YAML configuration (default: /etc/mirrorbits.conf if it exists)."],
        ["listen", "l", None, "Override ListenAddress (Go syntax :8080, host:port, unix:/path, "
                              "or a Twisted endpoint description)."],
    ]
    optFlags = [
        ["debug", "d", "Log at debug level."],
        ["no-monitor", None, "Do not run the monitor (health checks, scans, repository rescans)."],
    ]


@implementer(IServiceMaker, IPlugin)
class MirrorbitsServiceMaker:
    tapname = "mirrorbits"
    description = "Mirrorbits: a geographical download redirector."
    options = Options

    def makeService(self, options: usage.Options) -> IService:  # noqa: N802 - twisted's interface
        import sys

        from mirrorbits.lifecycle.signals import EarlySignals

        # First thing: from here on a SIGHUP/SIGUSR1 during start-up is kept for later instead of
        # killing the process (twistd installs no handler for them).
        early = EarlySignals().install()

        from mirrorbits.config import ConfigError
        from mirrorbits.lifecycle.daemon import twistd_log_observer
        from mirrorbits.service import DaemonOptions, makeService

        debug = bool(options["debug"])
        try:
            root = makeService(DaemonOptions(config=options["config"], listen=options["listen"],
                                             debug=debug, monitor=not options["no-monitor"]),
                               early=early)
        except ConfigError as e:
            sys.stderr.write(f"{e}\n")
            raise SystemExit(1) from None
        # twistd logs every level; our observer (where twistd would log) drops debug events unless
        # --debug.  twistd's own --logger or --syslog choice is left alone.
        twistd = options.parent
        if twistd is not None and not twistd.get("logger") and not twistd.get("syslog"):
            root.log_observer = twistd_log_observer(root, debug, twistd.get("logfile"),
                                                    bool(twistd.get("nodaemon")))
        return root


serviceMaker = MirrorbitsServiceMaker()
