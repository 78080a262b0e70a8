"""BitTorrent v1 metainfo (BEP 3) with web seeds (BEP 19), magnet links (BEP 9) and info-hashes.

Why the ``info`` dictionary stands apart: its SHA-1 is the torrent's identity (the info-hash), so it
holds only what describes the content (name, length, piece length, piece hashes) and is the same
bytes for every client, restart and node; the client-dependent parts (web seeds, trackers) live
outside it.  The web layer keeps the bencoded ``info`` per file record.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Sequence
from urllib.parse import quote

__all__ = ["bencode", "info_dict", "info_hash", "magnet", "metainfo"]

Bencodable = int | bytes | str | list["Bencodable"] | dict[bytes, "Bencodable"]


def bencode(value: Bencodable) -> bytes:
    """Bencoding; dictionary keys are sorted as raw bytes, as BEP 3 requires."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Bencodable, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        _encode(value.encode("utf-8", "surrogateescape"), out)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        out.append(b"d")
        for key in sorted(value):
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")


def info_dict(name: str, size: int, piece_length: int, sha1_pieces_hex: str) -> bytes:
    """The bencoded ``info`` dictionary of a single-file torrent."""
    return bencode({b"name": name, b"length": size, b"piece length": piece_length,
                    b"pieces": binascii.unhexlify(sha1_pieces_hex)})


def info_hash(info: bytes) -> str:
    """The v1 info-hash: SHA-1 of the bencoded ``info``, lowercase hex."""
    return hashlib.sha1(info, usedforsecurity=False).hexdigest()


def metainfo(info: bytes, *, web_seeds: Sequence[str], trackers: Sequence[Sequence[str]],
             nodes: Sequence[str], creation_date: int, created_by: str) -> bytes:
    """The ``.torrent`` document around an already bencoded ``info`` (spliced in as is, so the
    info-hash is the one of those exact bytes)."""
    outer: dict[bytes, Bencodable] = {b"created by": created_by, b"creation date": creation_date}
    tiers = [list(t) for t in trackers if t]
    if tiers:
        outer[b"announce"] = tiers[0][0]
        outer[b"announce-list"] = [[str(u) for u in t] for t in tiers]
    if nodes:
        pairs: list[Bencodable] = []
        for node in nodes:
            host, _, port = node.rpartition(":")
            pairs.append([host.strip("[]"), int(port)])
        outer[b"nodes"] = pairs
    if web_seeds:
        outer[b"url-list"] = [str(u) for u in web_seeds]
    out: list[bytes] = [b"d"]
    for key in sorted([*outer, b"info"]):
        _encode(key, out)
        if key == b"info":
            out.append(info)
        else:
            _encode(outer[key], out)
    out.append(b"e")
    return b"".join(out)


def magnet(btih: str, *, name: str, size: int, web_seeds: Sequence[str],
           trackers: Sequence[Sequence[str]]) -> str:
    """``magnet:?xt=urn:btih:<hex>&dn=…&xl=…`` then one ``tr=`` per tracker and ``ws=`` per seed."""
    parts = [f"xt=urn:btih:{btih}", "dn=" + quote(name, safe=""), f"xl={size}"]
    parts.extend("tr=" + quote(u, safe="") for tier in trackers for u in tier)
    parts.extend("ws=" + quote(u, safe="") for u in web_seeds)
    return "magnet:?" + "&".join(parts)
