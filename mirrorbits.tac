# Run with: twistd -ny mirrorbits.tac
# The config path comes from $MIRRORBITS_CONFIG, else /etc/mirrorbits.conf; $MIRRORBITS_LISTEN
# overrides ListenAddress; MIRRORBITS_DEBUG=1 logs at debug level (twistd itself logs every level:
# this file's observer filters them, on stdout or in $MIRRORBITS_LOGFILE).
# A SIGHUP/SIGUSR1 from here on (start-up) is acted on once the daemon serves, not fatal.
from mirrorbits.lifecycle.signals import EarlySignals

early = EarlySignals().install()

import os  # noqa: E402

from twisted.application import service  # noqa: E402
from twisted.logger import ILogObserver  # noqa: E402

from mirrorbits.lifecycle.daemon import twistd_log_observer  # noqa: E402
from mirrorbits.service import DaemonOptions, makeService  # noqa: E402

debug = os.environ.get("MIRRORBITS_DEBUG", "") not in ("", "0", "false")
application = service.Application("mirrorbits")
root = makeService(DaemonOptions(config=os.environ.get("MIRRORBITS_CONFIG"),
                                 listen=os.environ.get("MIRRORBITS_LISTEN"), debug=debug),
                   early=early)
application.setComponent(ILogObserver, twistd_log_observer(
    root, debug, os.environ.get("MIRRORBITS_LOGFILE") or "-", nodaemon=True))
root.setServiceParent(application)
