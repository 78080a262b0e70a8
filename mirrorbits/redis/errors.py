"""What can go wrong talking to Redis, as exception classes the rest of the daemon catches.

Why a module of its own: the HTTP side, the scanners and the admin commands all tell "no usable Redis
right now" (fall back, retry later) from "Redis answered with an error" (a bug or bad data), and they
should not need the client to do so.
"""

from __future__ import annotations


class ResponseError(Exception):
    """An error reply (``-ERR ...``, ``-WRONGTYPE ...``).  A leading ``ERR`` is dropped from the text,
    so messages read as Redis' own ("unknown command ...")."""


class RedisUnavailable(Exception):
    """Base of the errors that mean "no usable Redis right now" (the HTTP side falls back)."""


class NotReady(RedisUnavailable):
    """The schema check or upgrade has not finished yet."""

    def __init__(self) -> None:
        super().__init__("database not ready")


class Unreachable(RedisUnavailable):
    """No master could be reached, or the connection broke while a command waited for its reply."""


class CommandTimeout(RedisUnavailable):
    """Redis did not answer within the command's deadline (a hung or paused server)."""


class UnsupportedRedis(Exception):
    """The server is older than 3.2.0: fatal, as in the Go original."""
