"""Redis Sentinel: asking where the master is, and reading the sentinels' failover announcements.

The client (:mod:`mirrorbits.redis.connection`) asks the sentinels for the master on every dial and
subscribes to their event channels, so that every connection — commands, the redirector view's bulk
reads, pub/sub — moves to the new master when Sentinel switches, instead of writing to a demoted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirrorbits.reactor import IDaemonReactor
from mirrorbits.redis.errors import Unreachable
from mirrorbits.redis.protocol import Reply, connect

#: Sentinel events that announce a failover of our master, and those that abort one.
FAILOVER_START_EVENTS = ("+try-failover", "+selected-slave", "+failover-state-send-slaveof-noone")
FAILOVER_ABORT_EVENTS = ("-failover-abort-not-elected", "-failover-abort-no-good-slave",
                         "-failover-abort-slave-timeout", "-failover-abort-master-not-down")
SWITCH_MASTER = "+switch-master"
#: Every channel the client watches on the sentinels.
EVENT_CHANNELS = (SWITCH_MASTER, *FAILOVER_START_EVENTS, *FAILOVER_ABORT_EVENTS)
#: How long a sentinel may take to answer one question.
QUERY_TIMEOUT = 1.0


def role_of(reply: Reply) -> str:
    """The role named by a ``ROLE`` reply (``master``, ``slave``, ``sentinel``), else ``""``."""
    if isinstance(reply, list) and reply:
        return str(reply[0])
    return ""


async def ask_master(reactor: IDaemonReactor, sentinel: str, master_name: str) -> str:
    """The ``host:port`` address ``sentinel`` gives for ``master_name``."""
    conn = await connect(reactor, sentinel)
    try:
        if role_of(await conn.execute("ROLE", timeout=QUERY_TIMEOUT)) != "sentinel":
            raise Unreachable(f"{sentinel} is not a sentinel")
        reply = await conn.execute("SENTINEL", "get-master-addr-by-name", master_name,
                                   timeout=QUERY_TIMEOUT)
        if not isinstance(reply, list) or len(reply) < 2:
            raise Unreachable(f"sentinel {sentinel} does not know {master_name}")
        host, port = str(reply[0]), str(reply[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """What a sentinel announcement means for our master: ``kind`` is ``switched`` (``new_address``
    is the new master), ``started`` or ``aborted``."""

    kind: str
    master_name: str
    new_address: str = ""
    channel: str = ""


def read_event(channel: str, message: str, master_name: str) -> FailoverEvent | None:
    """The event for ``master_name`` in a sentinel message, or None when it is about another master
    or not a failover step."""
    parts = message.split()
    if channel == SWITCH_MASTER:
        # "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
        if not parts or parts[0] != master_name:
            return None
        return FailoverEvent("switched", master_name, ":".join(parts[3:5]), channel)
    # "<type> <name> <ip> <port> [@ <master-name> <master-ip> <master-port>]"
    name = parts[parts.index("@") + 1] if "@" in parts[:-1] else (parts[1] if len(parts) > 1 else "")
    if name != master_name:
        return None
    if channel in FAILOVER_START_EVENTS:
        return FailoverEvent("started", name, channel=channel)
    if channel in FAILOVER_ABORT_EVENTS:
        return FailoverEvent("aborted", name, channel=channel)
    return None
