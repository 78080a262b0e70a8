"""Appending events to a mirror's log (``MIRRORLOGS_<id>``), for the scans and the monitor alike.

The log is informational: a failure to write it is logged and swallowed, so the scan or the check
that produced the event carries on.
"""

from __future__ import annotations

import time

from twisted.logger import Logger

from mirrorbits.model import mirror_log_json
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient

log = Logger(namespace="mirrorbits.mirrorlog")


async def append_log(redis: RedisClient, mirror_id: int, type_: int,
                     **extra: object) -> tuple[str, int] | None:
    """``RPUSH MIRRORLOGS_<id>`` one event in Go's JSON form (errors are logged, not raised).
    Returns the element and the log's length after it (the mirror scan's proof that nobody scanned
    since needs both), or None when it could not be written."""
    entry = mirror_log_json(type_, mirror_id, time.time_ns(), **extra)  # type: ignore[arg-type]
    try:
        length = await redis.execute("RPUSH", schema.mirror_logs_key(mirror_id), entry)
    except Exception as e:
        log.warn("Cannot write the mirror log of {id}: {err}", id=mirror_id, err=e)
        return None
    return (entry, length) if isinstance(length, int) else None
