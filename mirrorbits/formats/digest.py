"""RFC 3230 ``Digest`` / ``Want-Digest`` and RFC 9530 ``Repr-Digest`` / ``Want-Repr-Digest``.

Why: download clients (aria2, Kodi, curl scripts) verify what a mirror served against a digest
they got from the redirector itself, the one party that hashed the file.  The index holds hex
digests (``FILE_<path>`` ``sha1``/``sha256``/``md5``); both headers carry the raw digest in base64.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator

from mirrorbits.model import FileInfo

__all__ = ["digest_header", "parse_want_digest", "parse_want_repr_digest", "repr_digest_header",
           "weighted_items"]

#: RFC 3230 algorithm names (case-insensitive) -> the FileInfo field holding its hex digest, in
#: the order offered when the client weighs them equally (strongest first).
_RFC3230 = (("SHA-256", "sha256"), ("SHA", "sha1"), ("MD5", "md5"))
#: RFC 9530 algorithm keys -> FileInfo field.  Only ``sha-256`` is both registered as active and
#: held by the index (``sha`` and ``md5`` are deprecated as insecure for this header).
_RFC9530 = (("sha-256", "sha256"),)


def _b64(hex_digest: str) -> str | None:
    try:
        return base64.b64encode(binascii.unhexlify(hex_digest)).decode("ascii")
    except (binascii.Error, ValueError):
        return None


def weighted_items(values: list[bytes]) -> Iterator[tuple[str, float]]:
    """The items of comma-separated header lines with their ``q`` weight (RFC 9110 style, also
    RFC 3230's): ``"SHA-256;q=0.5, MD5"`` gives ``("sha-256", 0.5), ("md5", 1.0)``.  Names are
    lower-cased; a malformed or out-of-range q reads as 0 (not wanted)."""
    for line in values:
        for item in line.decode("latin-1").split(","):
            name, _, params = item.partition(";")
            name = name.strip().lower()
            if not name:
                continue
            q = 1.0
            for param in params.split(";"):
                key, _, val = param.partition("=")
                if key.strip().lower() == "q":
                    try:
                        q = float(val.strip())
                    except ValueError:
                        q = 0.0
                    if not 0.0 <= q <= 1.0:
                        q = 0.0
            yield name, q


def parse_want_digest(values: list[bytes]) -> dict[str, float]:
    """``Want-Digest: SHA-256;q=1, SHA;q=0.1`` -> ``{"sha-256": 1.0, "sha": 0.1}``."""
    out: dict[str, float] = {}
    for name, q in weighted_items(values):
        out[name] = max(q, out.get(name, 0.0))
    return out


def digest_header(info: FileInfo, want: dict[str, float]) -> bytes | None:
    """The ``Digest`` value for the wanted algorithms the index holds, highest q first (ties in
    strength order); ``*`` stands for every algorithm not named.  None when nothing matches."""
    star = want.get("*", 0.0)
    picks: list[tuple[float, int, str]] = []
    for rank, (name, attr) in enumerate(_RFC3230):
        q = want.get(name.lower(), star)
        hex_digest = getattr(info, attr)
        if q <= 0 or not hex_digest:
            continue
        value = _b64(hex_digest)
        if value is not None:
            picks.append((-q, rank, f"{name}={value}"))
    if not picks:
        return None
    picks.sort()
    return ",".join(p[2] for p in picks).encode("ascii")


def parse_want_repr_digest(values: list[bytes]) -> dict[str, int]:
    """``Want-Repr-Digest: sha-256=1, sha-512=3`` (a structured-field dictionary of integers 0..10,
    0 = not acceptable) -> ``{"sha-256": 1, "sha-512": 3}``; a malformed member is skipped."""
    out: dict[str, int] = {}
    for line in values:
        for item in line.decode("latin-1").split(","):
            key, sep, val = item.strip().partition("=")
            key = key.strip()
            if not key:
                continue
            if not sep:
                out[key] = 1  # a bare key is the boolean true: acceptable
                continue
            try:
                weight = int(val.split(";")[0].strip())
            except ValueError:
                continue
            if 0 <= weight <= 10:
                out[key] = weight
    return out


def repr_digest_header(info: FileInfo, want: dict[str, int]) -> bytes | None:
    """The ``Repr-Digest`` value (``sha-256=:<base64>:``) for the acceptable algorithms the index
    holds, or None."""
    members = []
    for key, attr in _RFC9530:
        hex_digest = getattr(info, attr)
        if want.get(key, 0) > 0 and hex_digest:
            value = _b64(hex_digest)
            if value is not None:
                members.append(f"{key}=:{value}:")
    return ", ".join(members).encode("ascii") if members else None
