# Run with: twistd -ny mirrorbits.tac
# The config path comes from $MIRRORBITS_CONFIG, else /etc/mirrorbits.conf; $MIRRORBITS_LISTEN
# overrides ListenAddress; MIRRORBITS_DEBUG=1 logs at debug level (twistd itself logs every level:
# this file's observer filters them, on stdout or in $MIRRORBITS_LOGFILE).
import os

from twisted.application import service
from twisted.logger import ILogObserver

from mirrorbits.lifecycle.daemon import twistd_log_observer
from mirrorbits.service import DaemonOptions, makeService

debug = os.environ.get("MIRRORBITS_DEBUG", "") not in ("", "0", "false")
application = service.Application("mirrorbits")
root = makeService(DaemonOptions(config=os.environ.get("MIRRORBITS_CONFIG"),
                                 listen=os.environ.get("MIRRORBITS_LISTEN"), debug=debug))
application.setComponent(ILogObserver, twistd_log_observer(
    root, debug, os.environ.get("MIRRORBITS_LOGFILE") or "-", nodaemon=True))
root.setServiceParent(application)
