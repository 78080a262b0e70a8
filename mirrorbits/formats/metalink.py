"""Metalink documents: RFC 5854 (``.meta4``, ``application/metalink4+xml``) and Metalink 3.0
(``.metalink``, ``application/metalink+xml``).

Why two halves: everything but the mirror URLs (name, size, dates, hashes, piece hashes, origin) is
the same for every client of one file, so the web layer keeps that *head* per file record and
appends only the client's URLs (:func:`metalink4`, :func:`metalink3`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from mirrorbits.model import FileInfo

__all__ = [
    "METALINK3_TYPE",
    "METALINK4_TYPE",
    "MirrorURL",
    "Pieces",
    "metalink3",
    "metalink3_head",
    "metalink4",
    "metalink4_head",
]

METALINK4_TYPE = b"application/metalink4+xml"
METALINK3_TYPE = b"application/metalink+xml"

#: (RFC 5854 name, Metalink 3 name, FileInfo field), in the order the documents list them.
_HASHES = (("sha-256", "sha256", "sha256"), ("sha-1", "sha1", "sha1"), ("md5", "md5", "md5"))


@dataclass(frozen=True, slots=True)
class MirrorURL:
    """One mirror's URL for the file, and its country (lower-case ISO 3166 code, or empty)."""

    url: str
    location: str = ""


@dataclass(frozen=True, slots=True)
class Pieces:
    """Piece hashes of one file: ``length`` bytes each (the last may be shorter), hex digests of
    the algorithm named ``type`` in RFC 5854 terms (``sha-1``, ``sha-256``)."""

    length: int
    type: str
    hashes: Sequence[str]


def _rfc3339(mod_time_ns: int | None) -> str:
    secs = (mod_time_ns or 0) // 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))


def _rfc822(mod_time_ns: int | None) -> str:
    secs = (mod_time_ns or 0) // 1_000_000_000
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(secs))


def _location(code: str) -> str:
    """The ``location`` attribute: two ASCII letters or nothing (the schema allows only that)."""
    code = code.strip().lower()
    return code if len(code) == 2 and code.isascii() and code.isalpha() else ""


def metalink4_head(info: FileInfo, name: str, *, origin: str, generator: str,
                   pieces: Sequence[Pieces] = (), metaurls: Sequence[tuple[str, str]] = ()) -> str:
    """The RFC 5854 document up to the file's ``<url>`` elements.  ``metaurls`` are
    (mediatype, URL) pairs, e.g. ``("torrent", ".../file.iso.torrent")``."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        '<metalink xmlns="urn:ietf:params:xml:ns:metalink">\n',
        f"  <generator>{escape(generator)}</generator>\n",
        f'  <origin dynamic="true">{escape(origin)}</origin>\n',
    ]
    if info.mod_time_ns is not None:
        stamp = _rfc3339(info.mod_time_ns)
        out.append(f"  <published>{stamp}</published>\n  <updated>{stamp}</updated>\n")
    out.append(f"  <file name={quoteattr(name)}>\n")
    if info.mod_time_ns is not None:
        out.append(f"    <size>{info.size}</size>\n")
    for rfc_name, _, attr in _HASHES:
        value = getattr(info, attr)
        if value:
            out.append(f'    <hash type="{rfc_name}">{escape(value)}</hash>\n')
    for p in pieces:
        out.append(f'    <pieces length="{p.length}" type="{escape(p.type)}">\n')
        out.extend(f"      <hash>{escape(h)}</hash>\n" for h in p.hashes)
        out.append("    </pieces>\n")
    for mediatype, url in metaurls:
        out.append(f"    <metaurl mediatype={quoteattr(mediatype)}>{escape(url)}</metaurl>\n")
    return "".join(out)


def metalink4(head: str, urls: Sequence[MirrorURL]) -> bytes:
    """Head plus one ``<url>`` per mirror, ``priority`` 1 for the first (the redirect's choice)."""
    out = [head]
    for i, m in enumerate(urls, 1):
        loc = _location(m.location)
        attr = f' location="{loc}"' if loc else ""
        out.append(f'    <url{attr} priority="{i}">{escape(m.url)}</url>\n')
    out.append("  </file>\n</metalink>\n")
    return "".join(out).encode("utf-8", "surrogateescape")


def metalink3_head(info: FileInfo, name: str, *, origin: str, generator: str,
                   pieces: Sequence[Pieces] = ()) -> str:
    """The Metalink 3.0 document up to the ``<url>`` elements of its ``<resources>``."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic"'
        f" origin={quoteattr(origin)} generator={quoteattr(generator)}",
    ]
    if info.mod_time_ns is not None:
        out.append(f' pubdate="{_rfc822(info.mod_time_ns)}"')
    out.append(f">\n  <files>\n    <file name={quoteattr(name)}>\n")
    if info.mod_time_ns is not None:
        out.append(f"      <size>{info.size}</size>\n")
    hashes = [(v3, getattr(info, attr)) for _, v3, attr in _HASHES if getattr(info, attr)]
    if hashes or pieces:
        out.append("      <verification>\n")
        out.extend(f'        <hash type="{v3}">{escape(value)}</hash>\n' for v3, value in hashes)
        for p in pieces:
            v3type = p.type.replace("-", "")
            out.append(f'        <pieces length="{p.length}" type="{escape(v3type)}">\n')
            out.extend(f'          <hash piece="{i}">{escape(h)}</hash>\n' for i, h in enumerate(p.hashes))
            out.append("        </pieces>\n")
        out.append("      </verification>\n")
    out.append("      <resources>\n")
    return "".join(out)


def metalink3(head: str, urls: Sequence[MirrorURL]) -> bytes:
    """Head plus one ``<url>`` per mirror, ``preference`` 100 for the first and one less for each
    next one (Metalink 3 ranks by preference, higher first, 1..100)."""
    out = [head]
    for i, m in enumerate(urls):
        loc = _location(m.location)
        attr = f' location="{loc}"' if loc else ""
        scheme = m.url.partition(":")[0].lower() or "http"
        out.append(f'        <url type="{escape(scheme)}"{attr} preference="{max(100 - i, 1)}">'
                   f"{escape(m.url)}</url>\n")
    out.append("      </resources>\n    </file>\n  </files>\n</metalink>\n")
    return "".join(out).encode("utf-8", "surrogateescape")
