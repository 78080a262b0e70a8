"""Typed readings of decoded replies (:data:`~mirrorbits.redis.protocol.Reply`).

A reply is a union (string, integer, nil, array, error value); these turn the shapes the daemon's
commands return into plain Python types, in one place, instead of each caller re-deciding what an
HGETALL or a nil looks like.  An error value raises it; a reply of an unexpected shape raises
ValueError (a Redis bug or a key of the wrong type would otherwise crash far from here).
"""

from __future__ import annotations

from mirrorbits.redis.errors import ResponseError
from mirrorbits.redis.protocol import Reply


def _check(reply: Reply) -> Reply:
    if isinstance(reply, ResponseError):
        raise reply
    return reply


def hash_dict(reply: Reply) -> dict[str, str]:
    """An ``HGETALL`` reply (``[field, value, ...]``) as a dict; nil reads as an empty hash."""
    reply = _check(reply)
    if reply is None:
        return {}
    if not isinstance(reply, list):
        raise ValueError(f"expected a hash, got {reply!r}")
    it = iter(reply)
    return {str(k): str(v) for k, v in zip(it, it, strict=False)}


def as_str(reply: Reply) -> str | None:
    """A bulk or status string; nil is None."""
    reply = _check(reply)
    if reply is None or isinstance(reply, str):
        return reply
    if isinstance(reply, int):
        return str(reply)
    raise ValueError(f"expected a string, got {reply!r}")


def as_int(reply: Reply) -> int:
    """An integer reply, or a decimal bulk string (``GET`` of a counter); nil reads as 0."""
    reply = _check(reply)
    if reply is None:
        return 0
    if isinstance(reply, int):
        return reply
    if isinstance(reply, str):
        return int(reply)
    raise ValueError(f"expected an integer, got {reply!r}")


def as_list(reply: Reply) -> list[Reply]:
    """An array reply; nil reads as an empty array."""
    reply = _check(reply)
    if reply is None:
        return []
    if not isinstance(reply, list):
        raise ValueError(f"expected an array, got {reply!r}")
    return reply


def as_str_list(reply: Reply) -> list[str]:
    """An array of strings (``SMEMBERS``, ``KEYS``); nil elements read as empty strings."""
    return ["" if v is None else str(v) for v in as_list(reply)]
