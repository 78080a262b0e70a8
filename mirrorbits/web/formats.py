"""The download formats on the web: which request asks for a Metalink document, a torrent, a
magnet or an info-hash, the answer, and the digest and ``Link: rel=describedby`` headers added to a
redirect or a JSON answer.

Why opt-in everywhere: a Go node answers ``/file.iso.meta4`` with 404 and ``/file.iso?meta4`` with
the plain redirect, so a request that says nothing about these formats (no format suffix on a
missing file, no ``?meta4``/``?metalink``, no ``Accept`` preferring a metalink type, no
``Want-Digest``/``Want-Repr-Digest``, no metalink in ``Accept``) is answered exactly as before,
header for header.

Negotiation: a metalink document is served on the file's own URL only when ``Accept`` prefers a
metalink type (higher q than every other range, ``*/*`` included).  aria2's default
``Accept: */*,application/metalink4+xml,application/metalink+xml`` weighs them equally: it gets the
redirect, with the RFC 6249 ``Link`` to the ``.meta4`` and, since it also sends ``Want-Digest``,
the ``Digest`` it verifies the download with.

Torrents (``Torrent.Enabled``): ``.torrent``/``?torrent``, ``.magnet``/``?magnet`` and
``.btih``/``?btih`` need the piece hashes the local scan stores in ``FILEPIECES_<path>``; they are
read from Redis on first use and kept per file record.  Before the scan has hashed a file (or with
torrents off) these URLs are 404 like any missing file.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from mirrorbits import VERSION
from mirrorbits.cache import LRU
from mirrorbits.config import Config
from mirrorbits.formats import digest, metalink, torrent
from mirrorbits.formats.metalink import MirrorURL, Pieces
from mirrorbits.gocompat import parse_gts
from mirrorbits.model import FileInfo
from mirrorbits.redis.replies import Reply, as_list, as_str
from mirrorbits.selection import Chosen
from mirrorbits.twistedcompat import header_table
from mirrorbits.web.render import Results, plain_error

__all__ = [
    "BTIH",
    "MAGNET",
    "META4",
    "METALINK",
    "TORRENT",
    "FormatAnswers",
    "PieceHashes",
    "accept_format",
    "document_size",
    "query_format",
    "split_suffix",
    "wants_format_headers",
]

log = Logger(namespace="mirrorbits.web")

META4 = "meta4"
METALINK = "metalink"
TORRENT = "torrent"
MAGNET = "magnet"
BTIH = "btih"
#: Formats that exist only with ``Torrent.Enabled``.
TORRENT_FORMATS = (TORRENT, MAGNET, BTIH)

#: URL suffix -> format, for a path that is not itself a file of the repository.
_SUFFIXES = ((".meta4", META4), (".metalink", METALINK), (".torrent", TORRENT), (".magnet", MAGNET),
             (".btih", BTIH))
_TYPES = {META4: metalink.METALINK4_TYPE, METALINK: metalink.METALINK3_TYPE,
          TORRENT: b"application/x-bittorrent", MAGNET: b"text/plain; charset=utf-8",
          BTIH: b"text/plain; charset=utf-8"}
_TORRENT_TYPE = "application/x-bittorrent"
#: Seconds a file's missing piece hashes are remembered before Redis is asked again.
PIECES_RETRY = 30.0
_URL_SAFE = "/!$&'()*+,;=:@~"
_NO_CACHE = b"private, no-cache"
#: Longest ``Accept`` value that is parsed for q-values (longer ones are not negotiated).
_MAX_ACCEPT = 4096


def split_suffix(url_path: str, torrents: bool = False) -> tuple[str, str] | None:
    """``/a/file.iso.meta4`` -> (``/a/file.iso``, ``meta4``); None without a format suffix (the
    torrent suffixes count only when ``torrents``)."""
    for suffix, fmt in _SUFFIXES:
        if url_path.endswith(suffix) and len(url_path) > len(suffix) and url_path[-len(suffix) - 1] != "/":
            if fmt in TORRENT_FORMATS and not torrents:
                return None
            return url_path[:-len(suffix)], fmt
    return None


def query_format(query: dict[str, list[str]], torrents: bool = False) -> str | None:
    """``?meta4``, ``?metalink`` and, when ``torrents``, ``?torrent``, ``?magnet``, ``?btih`` (the
    first of them in that order)."""
    for fmt in (META4, METALINK, TORRENT, MAGNET, BTIH):
        if fmt in query and (torrents or fmt not in TORRENT_FORMATS):
            return fmt
    return None


def _accept_weights(accept: bytes) -> tuple[float, float, float]:
    """(q of metalink4, q of metalink 3, best q of anything else) in one ``Accept`` value."""
    q4 = q3 = other = 0.0
    for media, q in digest.weighted_items([accept]):
        if media == "application/metalink4+xml":
            q4 = max(q4, q)
        elif media == "application/metalink+xml":
            q3 = max(q3, q)
        else:
            other = max(other, q)
    return q4, q3, other


def accept_format(accept: bytes | None) -> tuple[str | None, bool]:
    """(the metalink format ``Accept`` prefers over everything else or None, whether it accepts a
    metalink type at all)."""
    if accept is None or b"metalink" not in accept or len(accept) > _MAX_ACCEPT:
        return None, False
    q4, q3, other = _accept_weights(accept)
    if q4 > 0 and q4 > other and q4 >= q3:
        return META4, True
    if q3 > 0 and q3 > other:
        return METALINK, True
    return None, q4 > 0 or q3 > 0


def wants_format_headers(request: IRequest) -> bool:
    """Whether the redirect or JSON answer gets digest or describedby headers (cheap: three header
    lookups on a plain request)."""
    headers = request.requestHeaders
    if headers.hasHeader(b"want-digest") or headers.hasHeader(b"want-repr-digest"):
        return True
    accept = headers.getRawHeaders(b"accept")
    return bool(accept) and b"metalink" in accept[0]


def _document_base(request: IRequest, path: str) -> str:
    """This file's URL on this server as the client reached it (``Host``, and the scheme from
    ``X-Forwarded-Proto`` or the connection), the base of the ``.meta4`` origin and links."""
    scheme = "https" if request.isSecure() else "http"
    proto = request.requestHeaders.getRawHeaders(b"x-forwarded-proto")
    if proto and proto[0].strip().lower() in (b"http", b"https"):
        scheme = proto[0].strip().lower().decode("ascii")
    host_values = request.requestHeaders.getRawHeaders(b"host")
    host = host_values[0].decode("latin-1") if host_values else ""
    if not host or not host.isascii() or not host.isprintable() or any(c in host for c in ' "<>\\/'):
        addr = request.getHost()
        host = f"{getattr(addr, 'host', '127.0.0.1')}:{getattr(addr, 'port', 80)}"
    return f"{scheme}://{host}{quote(path, safe=_URL_SAFE)}"


def _mirror_urls(results: Results, limit: int) -> list[MirrorURL]:
    path = results.file_info.path
    rel = quote(path[1:] if path.startswith("/") else path, safe=_URL_SAFE)
    out = []
    ch: Chosen
    for ch in results.mirror_list[:limit]:
        cc = ch.candidate.country_list
        out.append(MirrorURL(ch.absolute_url + rel, cc[0] if cc else ""))
    return out


def _limit(request: IRequest, config: Config) -> int:
    """``MetalinkMaxURLs``, lowered (never raised) by a valid ``X-Metalink-Limit`` request header."""
    limit = config.MetalinkMaxURLs
    values = request.requestHeaders.getRawHeaders(b"x-metalink-limit")
    if values:
        text = values[0].strip()
        if text.isdigit() and len(text) < 10:
            limit = min(limit, int(text))
    return max(limit, 0)


def document_size(request: IRequest, fmt: str, config: Config) -> int:
    """How many mirrors to select for the ``fmt`` answer: as many as it lists (the Metalink URL
    limit, the torrent's and magnet's web seeds), and at least one, since whether any mirror can
    serve the file decides the answer's status like a redirect's (mirrors, else the fallbacks,
    else 503), even for a document that lists none (an info-hash, ``X-Metalink-Limit: 0``)."""
    if fmt in (META4, METALINK):
        return max(_limit(request, config), 1)
    if fmt == BTIH:
        return 1
    return max(config.Torrent.MaxWebSeeds, 1)


@dataclass(frozen=True, slots=True)
class PieceHashes:
    """A file's piece hashes as the local scan stored them (``FILEPIECES_<path>``)."""

    length: int
    sha1: str
    sha256: str


def _parse_pieces(info: FileInfo, reply: Reply) -> PieceHashes | None:
    """The stored record, when it describes the content of ``info`` (same size and modification
    instant, as many pieces as the size asks for); None otherwise."""
    values = [as_str(v) or "" for v in as_list(reply)] + [""] * 5
    size, mod_time, length_text, sha1, sha256 = values[:5]
    if size != str(info.size) or not length_text.isdigit() or info.size <= 0:
        return None
    if parse_gts(mod_time) != info.mod_time_ns:
        return None
    length = int(length_text)
    if length <= 0:
        return None
    count = -(-info.size // length)
    if len(sha1) != 40 * count or len(sha256) != 64 * count:
        return None
    return PieceHashes(length, sha1, sha256)


#: Reads ``HMGET FILEPIECES_<path> size modTime length sha1 sha256`` (the hub's Redis client).
PiecesReader = Callable[[str], Awaitable[Reply]]


class FormatAnswers:
    """Renders the format documents and headers.  Keeps per file what does not depend on the
    client, each in a bounded LRU and valid while the file record is the same: the document heads
    (see :mod:`mirrorbits.formats.metalink`), the piece hashes and the bencoded ``info``."""

    cache_size = 4096

    def __init__(self, read_pieces: PiecesReader | None = None, clock: IReactorTime | None = None) -> None:
        self.read_pieces = read_pieces
        self.clock = clock
        self._heads: LRU[tuple[str, str, str], tuple[FileInfo, PieceHashes | None, str]] = LRU(self.cache_size)
        self._pieces: LRU[str, tuple[FileInfo, PieceHashes | None, float]] = LRU(self.cache_size)
        self._infos: LRU[str, tuple[FileInfo, PieceHashes, bytes, str]] = LRU(self.cache_size)

    def cached_pieces(self, info: FileInfo) -> tuple[bool, PieceHashes | None]:
        """(known, piece hashes): known when the answer needs no Redis read."""
        if info.mod_time_ns is None or self.read_pieces is None:
            return True, None
        hit = self._pieces.get(info.path)
        if hit is None or hit[0] != info:
            return False, None
        if hit[1] is not None:
            return True, hit[1]
        now = self.clock.seconds() if self.clock is not None else 0.0
        return now - hit[2] < PIECES_RETRY, None

    def has_torrent(self, info: FileInfo) -> bool:
        """Whether ``info``'s torrent is known to exist, without waiting: when its piece hashes
        are not known yet they are read in the background, for the next answers."""
        known, found = self.cached_pieces(info)
        if not known:
            Deferred.fromCoroutine(self.pieces(info)).addErrback(
                lambda f: log.failure("Reading the piece hashes of {path} failed", f, path=info.path))
        return found is not None

    async def pieces(self, info: FileInfo) -> PieceHashes | None:
        """The piece hashes of ``info``'s content, or None (not computed yet, or Redis failed)."""
        known, found = self.cached_pieces(info)
        if known or self.read_pieces is None:
            return found
        try:
            reply = await self.read_pieces(info.path)
        except Exception as exc:  # Redis down: no pieces this time, ask again next time
            log.debug("Cannot read the piece hashes of {path}: {err}", path=info.path, err=exc)
            return None
        found = _parse_pieces(info, reply)
        now = self.clock.seconds() if self.clock is not None else 0.0
        self._pieces.set(info.path, (info, found, now))
        return found

    def _head(self, fmt: str, info: FileInfo, base: str, pieces: PieceHashes | None) -> str:
        key = (info.path, fmt, base)
        hit = self._heads.get(key)
        if hit is not None and hit[0] == info and hit[1] == pieces:
            return hit[2]
        name = os.path.basename(info.path) or "file"
        generator = f"Mirrorbits/{VERSION}"
        if fmt == META4:
            head = metalink.metalink4_head(
                info, name, origin=base + ".meta4", generator=generator,
                pieces=[Pieces(pieces.length, "sha-256", _split(pieces.sha256, 64))] if pieces else (),
                metaurls=[("torrent", base + ".torrent")] if pieces else ())
        else:
            head = metalink.metalink3_head(
                info, name, origin=base + ".metalink", generator=generator,
                pieces=[Pieces(pieces.length, "sha-1", _split(pieces.sha1, 40))] if pieces else ())
        self._heads.set(key, (info, pieces, head))
        return head

    def _info(self, info: FileInfo, pieces: PieceHashes) -> tuple[bytes, str]:
        """The bencoded ``info`` dictionary and its info-hash."""
        hit = self._infos.get(info.path)
        if hit is not None and hit[0] == info and hit[1] == pieces:
            return hit[2], hit[3]
        name = os.path.basename(info.path) or "file"
        encoded = torrent.info_dict(name, info.size, pieces.length, pieces.sha1)
        btih = torrent.info_hash(encoded)
        self._infos.set(info.path, (info, pieces, encoded, btih))
        return encoded, btih

    def render(self, request: IRequest, fmt: str, results: Results, config: Config,
               pieces: PieceHashes | None = None) -> bytes:
        """The 200 answer with the ``fmt`` document for ``results`` (its mirrors in the
        redirector's order for this client, or the fallbacks); 404 for a torrent format without
        piece hashes."""
        info = results.file_info
        base = _document_base(request, info.path)
        name = os.path.basename(info.path) or "file"
        if fmt in TORRENT_FORMATS:
            if pieces is None:
                return plain_error(request, 404, "Not Found")
            encoded, btih = self._info(info, pieces)
            tc = config.Torrent
            seeds = [u.url for u in _mirror_urls(results, tc.MaxWebSeeds)]
            if fmt == TORRENT:
                body = torrent.metainfo(encoded, web_seeds=seeds, trackers=tc.Trackers, nodes=tc.DHTNodes,
                                        creation_date=(info.mod_time_ns or 0) // 1_000_000_000,
                                        created_by=f"Mirrorbits/{VERSION}")
            elif fmt == MAGNET:
                body = (torrent.magnet(btih, name=name, size=info.size, web_seeds=seeds,
                                       trackers=tc.Trackers) + "\n").encode("ascii")
            else:
                body = (btih + "\n").encode("ascii")
        else:
            head = self._head(fmt, info, base, pieces)
            urls = _mirror_urls(results, _limit(request, config))
            body = metalink.metalink4(head, urls) if fmt == META4 else metalink.metalink3(head, urls)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", _TYPES[fmt])
        request.setHeader(b"Cache-Control", _NO_CACHE)
        if fmt in (META4, METALINK, TORRENT):
            filename = f"{name}.{fmt}"
            request.setHeader(b"Content-Disposition",
                              b"attachment; filename*=UTF-8''" + quote(filename, safe="").encode("ascii"))
        return body

    def add_headers(self, request: IRequest, info: FileInfo, torrent: bool = False) -> None:
        """``Digest`` (``Want-Digest``), ``Repr-Digest`` (``Want-Repr-Digest``) and the
        ``rel=describedby`` link to the ``.meta4`` (``Want-Digest`` or a metalink ``Accept``),
        and to the ``.torrent`` when ``torrent`` (it exists), for a file the index knows."""
        if info.mod_time_ns is None:
            return
        rh = request.requestHeaders
        table = header_table(request.responseHeaders)
        want = rh.getRawHeaders(b"want-digest")
        if want:
            value = digest.digest_header(info, digest.parse_want_digest(want))
            if value is not None:
                table[b"Digest"] = [value]
        want_repr = rh.getRawHeaders(b"want-repr-digest")
        if want_repr:
            value = digest.repr_digest_header(info, digest.parse_want_repr_digest(want_repr))
            if value is not None:
                table[b"Repr-Digest"] = [value]
        accept = rh.getRawHeaders(b"accept")
        if want or accept_format(accept[0] if accept else None)[1]:
            base = _document_base(request, info.path)
            links = table.setdefault(b"Link", [])
            links.append(f'<{base}.meta4>; rel=describedby; type="{metalink.METALINK4_TYPE.decode()}"'
                         .encode("ascii"))
            if torrent:
                links.append(f'<{base}.torrent>; rel=describedby; type="{_TORRENT_TYPE}"'.encode("ascii"))


def _split(hexes: str, width: int) -> list[str]:
    return [hexes[i:i + width] for i in range(0, len(hexes), width)]
