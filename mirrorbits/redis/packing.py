"""Packed script arguments: many values in one Redis argument, as ``<len>:<bytes>`` items.

Bulk writers (the local scan, the download counters) send one script call with a few packed
arguments instead of thousands of commands: the client encodes a handful of arguments, Redis runs the
batch atomically (like MULTI), and any byte of a path round-trips.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Lua: ``unpacker(blob)`` returns an iterator over the packed values of ``blob``.
LUA_UNPACKER = """
local function unpacker(blob)
  local pos = 1
  return function()
    if pos > #blob then return nil end
    local c = string.find(blob, ':', pos, true)
    local n = tonumber(string.sub(blob, pos, c - 1))
    local v = string.sub(blob, c + 1, c + n)
    pos = c + n + 1
    return v
  end
end
"""


def pack(values: Sequence[bytes]) -> bytes:
    """Values in the scripts' ``<len>:<bytes>`` form."""
    return b"".join([b"%d:%s" % (len(v), v) for v in values])


def unpack(data: bytes) -> list[bytes]:
    """The inverse of :func:`pack`."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        colon = data.index(b":", pos)
        n = int(data[pos:colon])
        out.append(data[colon + 1:colon + 1 + n])
        pos = colon + 1 + n
    return out
