"""Recording a mirror's health and enabling/disabling it (mirror log events 4, 5 and 6).

The Go original does ``HGET`` of the previous flag, ``HMSET`` of flag, reason and (on a change)
``stateSince``, then publishes ``_mirrorbits_mirror_update`` on *every* check.  Here the read and
the write are one Lua script, for two reasons:

* a mirror removed while its check was in flight is not resurrected as a hash holding only
  ``httpUp``/``httpDownReason`` (Go's ``HMSET`` recreates it);
* two nodes that briefly both check a mirror cannot both log the same transition.

MIRROR_UPDATE is published only when the stored state changed, i.e. the up flag *or* the reason.
Nobody needs the other publishes: the Go cache and the Go/Python monitors only use the message
to reload ``MIRROR_<id>``, and a hash whose fields were rewritten with the same values reads back
identical.  With 1,000 mirrors checked every minute this saves every node ~17 useless reloads a
second.  A reason change (``Got status code 500`` -> ``Unreachable``) is still published, because
the down reason is shown by the list and stats pages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from mirrorbits import faults
from mirrorbits.ipfamily import health_fields
from mirrorbits.mirrorlog import append_log
from mirrorbits.model import (
    LOG_DISABLED,
    LOG_ENABLED,
    LOG_STATE_CHANGED,
    PROTO_HTTP,
    PROTO_HTTPS,
)
from mirrorbits.monitor.health import FamilyOutcome
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient
from mirrorbits.redis.replies import as_int, as_list

#: KEYS[1] = MIRROR_<id>; ARGV = upField, reasonField, "1"/"0", reason, now.
#: Returns {exists, previousUp, previousReason}; writes nothing when the hash is gone.
_SET_STATE = """
if redis.call('exists', KEYS[1]) == 0 then
    return {0, '', ''}
end
local prev = redis.call('hmget', KEYS[1], ARGV[1], ARGV[2])
local was = prev[1]
if was == false then was = '0' end
local wasUp = (was == '1' or was == 't' or was == 'T' or was == 'true' or was == 'TRUE' or was == 'True')
local nowUp = (ARGV[3] == '1')
if wasUp ~= nowUp then
    redis.call('hmset', KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[4], 'stateSince', ARGV[5])
else
    redis.call('hmset', KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[4])
end
local reason = prev[2]
if reason == false then reason = '' end
return {1, wasUp and '1' or '0', reason}
"""

#: KEYS[1] = MIRROR_<id>; ARGV[1] = "1"/"0".  Returns 0 when the mirror no longer exists.
_SET_ENABLED = """
if redis.call('exists', KEYS[1]) == 0 then
    return 0
end
redis.call('hmset', KEYS[1], 'enabled', ARGV[1])
return 1
"""


#: KEYS[1] = MIRROR_<id>; ARGV = now, then per family state: stateField, reasonField,
#: checkedField, state, reason.  Returns {exists, previousState1, previousReason1, ...} ('' when a
#: field was absent); writes nothing when the hash is gone.
_SET_FAMILY_STATES = """
if redis.call('exists', KEYS[1]) == 0 then
    return {0}
end
local out = {1}
for i = 2, #ARGV, 5 do
    local prev = redis.call('hmget', KEYS[1], ARGV[i], ARGV[i + 1])
    out[#out + 1] = prev[1] or ''
    out[#out + 1] = prev[2] or ''
    redis.call('hmset', KEYS[1], ARGV[i], ARGV[i + 3], ARGV[i + 1], ARGV[i + 4], ARGV[i + 2], ARGV[1])
end
return out
"""


@dataclass(frozen=True, slots=True)
class StateChange:
    """What :func:`set_mirror_state` did."""

    exists: bool
    changed: bool
    published: bool


async def set_mirror_state(redis: RedisClient, mirror_id: int, proto: int, up: bool, reason: str,
                           now: int | None = None) -> StateChange:
    """Record the health of one protocol (``PROTO_HTTP``/``PROTO_HTTPS``) of a mirror."""
    if proto == PROTO_HTTPS:
        up_field, reason_field = "httpsUp", "httpsDownReason"
    elif proto == PROTO_HTTP:
        up_field, reason_field = "httpUp", "httpDownReason"
    else:
        raise ValueError(f"unknown protocol {proto}")
    stamp = int(time.time()) if now is None else now
    reply = as_list(await redis.execute("EVAL", _SET_STATE, "1", schema.mirror_key(mirror_id),
                                        up_field, reason_field, "1" if up else "0", reason, str(stamp)))
    faults.point("health.state_written")
    exists = str(reply[0]) == "1"
    if not exists:
        return StateChange(False, False, False)
    changed = (str(reply[1]) == "1") != up
    reason_changed = str(reply[2]) != reason
    published = False
    if changed or reason_changed:
        await redis.publish(schema.CHANNEL_MIRROR_UPDATE, str(mirror_id))
        published = True
        faults.point("health.published")
    if changed:
        await append_log(redis, mirror_id, LOG_STATE_CHANGED, Proto=proto, Up=up, Reason=reason)
    return StateChange(True, changed, published)


async def set_mirror_enabled(redis: RedisClient, mirror_id: int, enabled: bool) -> bool:
    """``HMSET enabled``, publish MIRROR_UPDATE, log event 4/5; False when the mirror is gone."""
    ok = await redis.execute("EVAL", _SET_ENABLED, "1", schema.mirror_key(mirror_id),
                             "1" if enabled else "0")
    if not as_int(ok):
        return False
    await redis.publish(schema.CHANNEL_MIRROR_UPDATE, str(mirror_id))
    await append_log(redis, mirror_id, LOG_ENABLED if enabled else LOG_DISABLED)
    return True


async def set_family_states(redis: RedisClient, mirror_id: int, proto: int,
                            outcomes: Sequence[FamilyOutcome], now: int | None = None) -> bool:
    """Record the health of one protocol of a mirror over each address family
    (``SelectByIPFamily``; fields named by :func:`mirrorbits.redis.schema.family_fields`).

    Publishes MIRROR_UPDATE when a state or a reason changed (the redirector's view reloads the
    mirror with it) and logs each state change in the mirror log: a ``LOG_STATE_CHANGED`` event
    with a ``Family`` key (and ``NoAddress`` for a host without an address of the family), which a
    Go node's ``logs`` shows as a plain HTTP(S) up/down line.  A family never probed before counts
    as reachable (selection's view of it), so its first state is logged only when it is not up.
    False when the mirror is gone."""
    stamp = int(time.time()) if now is None else now
    argv = [str(stamp)]
    for o in outcomes:
        argv.extend(health_fields(proto, o.family))
        argv.extend((o.state, o.reason))
    reply = as_list(await redis.execute("EVAL", _SET_FAMILY_STATES, "1", schema.mirror_key(mirror_id),
                                        *argv))
    if str(reply[0]) != "1":
        return False
    previous = [str(x) for x in reply[1:]]
    publish = False
    changes: list[FamilyOutcome] = []
    for i, o in enumerate(outcomes):
        was_state, was_reason = previous[2 * i], previous[2 * i + 1]
        if was_state != o.state or was_reason != o.reason:
            publish = True
        if was_state != o.state and (was_state or o.state != schema.FAMILY_UP):
            changes.append(o)
    if publish:
        await redis.publish(schema.CHANNEL_MIRROR_UPDATE, str(mirror_id))
    for o in changes:
        extra: dict[str, object] = {"Proto": proto, "Up": o.state == schema.FAMILY_UP,
                                    "Reason": o.reason, "Family": o.family.label}
        if o.state == schema.FAMILY_NO_ADDRESS:
            extra["NoAddress"] = True
        await append_log(redis, mirror_id, LOG_STATE_CHANGED, **extra)
    return True
