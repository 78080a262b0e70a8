# Run with: twistd -ny mirrorbits.tac
# The config path comes from $MIRRORBITS_CONFIG, else /etc/mirrorbits.conf.
import os

from twisted.application import service

from mirrorbits.service import DaemonOptions, makeService

application = service.Application("mirrorbits")
makeService(DaemonOptions(config=os.environ.get("MIRRORBITS_CONFIG"),
                          listen=os.environ.get("MIRRORBITS_LISTEN"))).setServiceParent(application)
