"""The twisted.web root resource: Go mux rules, request dispatch and the mirror handler.

Why one leaf resource: the Go original mounts a single handler on ``/`` and dispatches on the query, and a leaf keeps twisted.web's traversal cost at zero.

Hot path: when the in-memory view (:mod:`mirrorbits.cache`) holds the file, :meth:`render` answers
synchronously (returns bytes).  Otherwise it returns ``NOT_DONE_YET`` and answers when the view has
loaded the path — or at once with the fallbacks when Redis cannot be used (never a 500 with a raw
Redis error: Go quirks 1–2 are fixed, see :meth:`RedirectorResource._selection`).

The other endpoints and the per-request side effects are parts the hub
(:class:`mirrorbits.app.Mirrorbits`) hands out, fetched on first use (so a test can build the
resource on a hub with only the view):

* ``app.get_pages()`` (:class:`mirrorbits.web.pages.Endpoints`): ``file_stats`` (``?stats``),
  ``mirror_stats`` (``?mirrorstats``), ``checksum`` (``?md5``/``?sha1``/``?sha256``),
  ``mirrors_json`` (``?mirrors``, not a Go type: checked last), each ``handler(request, ctx)`` with
  ``ctx`` a :class:`RequestContext`, and ``mirrorlist(request, results) -> bytes`` (``?mirrorlist``);
* ``app.get_download_stats().count_download(results, ranged, user_agent)`` after a GET redirect with a
  non-empty list (dedupe on Range, first mirror, local size are the callee's business);
* ``app.get_download_log().log(renderer_type, status, method, results)``.
"""

from __future__ import annotations

import calendar
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.logger import Logger
from twisted.web import http, resource, server
from twisted.web.iweb import IRequest

from mirrorbits import VERSION
from mirrorbits.cache import LRU, MirrorView, PathEntry
from mirrorbits.config import Config
from mirrorbits.geo import GeoIP, GeoRecord
from mirrorbits.ipfamily import Family, client_family
from mirrorbits.model import FileInfo
from mirrorbits.redis import schema
from mirrorbits.redis.replies import Reply
from mirrorbits.selection import (
    Chosen,
    ClientLocation,
    FilePlan,
    LocationPlan,
    Secure,
    Selection,
    document_order,
    draw_redirect,
    fallback_choices,
    plan_file,
    redirect_order,
    redirect_pool,
    select_mirrors,
    verdict_index,
)
from mirrorbits.twistedcompat import canonical_header_name, header_table
from mirrorbits.web import clientinfo, paths
from mirrorbits.web.formats import (
    FormatAnswers,
    PieceHashes,
    accept_format,
    document_size,
    query_format,
    split_suffix,
    wants_format_headers,
)
from mirrorbits.web.render import (
    JSON,
    MIRRORLIST,
    REDIRECT,
    Results,
    plain_error,
    redirect_pieces,
    render_json,
    render_redirect,
)
from mirrorbits.web.site import DATES, FastAnswer, LeanRequest, deliver, gzip_answer, response_bytes

if TYPE_CHECKING:
    from mirrorbits.app import Mirrorbits
    from mirrorbits.web.downloadlog import DownloadLog
    from mirrorbits.web.pages import Endpoints
    from mirrorbits.web.stats import DownloadStats

__all__ = [
    "CHECKSUM",
    "FILESTATS",
    "MIRRORSTATS",
    "RedirectorResource",
    "RequestContext",
    "STANDARD",
    "parse_http_date",
    "parse_query",
    "request_type",
]

log = Logger(namespace="mirrorbits.web")

STANDARD = "STANDARD"
FILESTATS = "FILESTATS"
MIRRORSTATS = "MIRRORSTATS"
CHECKSUM = "CHECKSUM"
#: Not a Go type: ``?mirrors``, the JSON list of all mirrors (web/mirrorsjson.py).
MIRRORSJSON = "MIRRORSJSON"

#: Longest client IP text we accept from X-Forwarded-For (IPv6 with zone is < 64).
MAX_IP_TEXT = 256

# Request headers the lean lane reads, by the name its parsed heads use.
_IF_MODIFIED_SINCE = canonical_header_name(b"if-modified-since")
_WANT_DIGEST = canonical_header_name(b"want-digest")
_WANT_REPR_DIGEST = canonical_header_name(b"want-repr-digest")
_ACCEPT = canonical_header_name(b"accept")
_ACCEPT_ENCODING = canonical_header_name(b"accept-encoding")
_X_FORWARDED_FOR = canonical_header_name(b"x-forwarded-for")
_X_FORWARDED_PROTO = canonical_header_name(b"x-forwarded-proto")
_RANGE = canonical_header_name(b"range")
_USER_AGENT = canonical_header_name(b"user-agent")
#: Headers that change a file's answer: a request with any of them is not the lean lane's.
_DECLINED_HEADERS = frozenset((_IF_MODIFIED_SINCE, _WANT_DIGEST, _WANT_REPR_DIGEST))
#: The query of a request without one (the lean lane takes only those).
_NO_QUERY: dict[str, list[str]] = {}
_FOUND = b" 302 " + http.RESPONSES[302] + b"\r\n"
_CONNECTION_CLOSE = b"Connection: close\r\n"
#: The end of a GET redirect's head (its body is empty).
_NO_CONTENT = b"Content-Length: 0\r\n\r\n"

_BAD_QUERY_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

#: The ``kind`` label of the request metrics for each request type.
METRICS_KINDS = {STANDARD: "redirect", MIRRORLIST: "mirrorlist", FILESTATS: "stats",
                 MIRRORSTATS: "mirrorstats", CHECKSUM: "checksum", MIRRORSJSON: "mirrors"}

FALLBACKS = Counter("mirrorbits_fallbacks", "Answers made of the configured fallbacks, by reason "
                    "(redis: Redis could not answer; no_mirror: no mirror has the file)", ["reason"])
FALLBACK_REDIS = FALLBACKS.labels("redis")
FALLBACK_NO_MIRROR = FALLBACKS.labels("no_mirror")
FAMILY_FALLBACKS = Counter("mirrorbits_family_fallbacks", "Answers chosen as for any address family "
                           "because no mirror with the file answers over the client's "
                           "(SelectByIPFamily), by the client's family (IPv4, IPv6)", ["family"])


class RedirectCounts(Collector):
    """Requests by client country, downloads and bytes redirected per mirror.

    Why plain integers read at scrape time instead of a ``Counter`` child per label: these are
    counted on every redirect, and a library counter's increment (a lock, a check, a method call)
    costs several times a dict update; the families below are what a ``Counter`` would expose.
    The scrape runs in a thread: it copies each dict (one C-level call) before walking it.
    """

    def __init__(self) -> None:
        #: GeoIP country code ("" when not located) -> requests for files.
        self.countries: dict[str, int] = {}
        #: Mirror name -> [downloads redirected to it, their bytes].
        self.mirrors: dict[str, list[int]] = {}

    def collect(self) -> Iterator[Metric]:
        clients = CounterMetricFamily("mirrorbits_http_client_requests", "Requests for files, by the "
                                      "client's country (GeoIP; \"unknown\" when not located)",
                                      labels=["country"])
        for country, n in dict(self.countries).items():
            clients.add_metric([country or "unknown"], n)
        yield clients
        redirects = CounterMetricFamily("mirrorbits_mirror_redirects", "Downloads (GET) redirected "
                                        "to a mirror", labels=["mirror"])
        sizes = CounterMetricFamily("mirrorbits_mirror_redirected_bytes", "Size of the files whose "
                                    "downloads were redirected to a mirror", labels=["mirror"])
        for mirror, (n, size) in dict(self.mirrors).items():
            redirects.add_metric([mirror], n)
            sizes.add_metric([mirror], size)
        yield redirects
        yield sizes


@dataclass(slots=True)
class RequestContext:
    """What dispatch learned about a request: decoded URL path, query values, the config."""

    url_path: str
    query: dict[str, list[str]]
    config: Config
    request_type: str


def parse_query(raw: str) -> dict[str, list[str]]:
    """Go ``url.ParseQuery``: ``&``-separated, ``+`` is a space; a pair with ``;`` or a bad
    escape is skipped (Go records an error and keeps the other pairs)."""
    out: dict[str, list[str]] = {}
    if not raw:
        return out
    for part in raw.split("&"):
        if not part or ";" in part or _BAD_QUERY_ESCAPE.search(part):
            continue
        k, _, v = part.partition("=")
        key = unquote_plus(k, errors="surrogateescape")
        out.setdefault(key, []).append(unquote_plus(v, errors="surrogateescape"))
    return out


def request_type(query: dict[str, list[str]]) -> str:
    """The request type, from the query like the Go mux: the first matching parameter decides."""
    if not query:
        return STANDARD
    if "mirrorlist" in query:
        return MIRRORLIST
    if "stats" in query:
        return FILESTATS
    if "mirrorstats" in query:
        return MIRRORSTATS
    if "md5" in query or "sha1" in query or "sha256" in query:
        return CHECKSUM
    if "mirrors" in query:
        return MIRRORSJSON
    return STANDARD


_HTTP_DATE_FORMATS = ("%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y")


def parse_http_date(value: bytes | str) -> int | None:
    """Go ``http.ParseTime`` (RFC 1123 with GMT, RFC 850, asctime) -> Unix seconds, or None."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    for fmt in _HTTP_DATE_FORMATS:
        try:
            t = time.strptime(text.replace("  ", " 0") if fmt.startswith("%a %b") else text, fmt)
        except ValueError:
            continue
        return calendar.timegm(t)
    return None


def _http_date(secs: int) -> bytes:
    """``Last-Modified`` text: RFC 1123 in UTC with ``GMT``."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(secs)).encode("ascii")


class _ConfigState:
    """Values derived from one config object, rebuilt when a reload swaps the config."""

    __slots__ = ("config", "server", "server_line", "repository", "fallbacks", "outdated", "mode",
                 "by_family")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.server = f"Mirrorbits/{VERSION}".encode()
        self.server_line = b"Server: " + self.server + b"\r\n"
        self.repository = config.Repository
        self.fallbacks = tuple(config.Fallbacks)
        self.outdated = tuple((r.Prefix, r.Minutes) for r in config.AllowOutdatedFiles)
        self.mode = config.OutputMode
        self.by_family = config.SelectByIPFamily


class RedirectorResource(resource.Resource):
    """The root of the site: every request comes here (see the module docstring)."""

    isLeaf = True
    #: Entries of the redirect selection memo (see :meth:`_redirect_selection`); 0 disables the
    #: fast path and the memo (every request runs the full selection).
    memo_size = 16384
    #: Client locations whose :class:`LocationPlan` is kept (each ~60 small tuples).
    location_plans = 4096
    #: Client IPs whose GeoIP record and location are kept (see :meth:`_client_location`).
    client_locations = 16384
    #: Request targets whose lean-lane URL path is kept (see :func:`_lean_url_path`).
    lean_targets = 16384

    def __init__(self, app: Mirrorbits, *, rng: random.Random | None = None) -> None:
        super().__init__()
        self.app = app
        self.rng = rng or random.Random()
        self._state: _ConfigState | None = None
        self._memo: LRU[tuple[str, int, tuple[str, str, int, int]],
                        tuple[object, object, list[Chosen], Family]] = LRU(self.memo_size)
        self._loc_plans: dict[tuple[str, str, int, int], tuple[int, MirrorView, LocationPlan]] = {}
        self.memo_stats = {"hits": 0, "misses": 0}
        self._locations: dict[str, tuple[int, GeoRecord, ClientLocation]] = {}
        self._forwarded_clients: dict[bytes, tuple[int, str, tuple[GeoRecord, ClientLocation]]] = {}
        self._lean_targets: dict[bytes, str] = {}
        #: Per-country and per-mirror counts (exported by the metrics listener, when there is one).
        self.redirect_counts = RedirectCounts()
        self._countries = self.redirect_counts.countries
        self._mirror_redirects = self.redirect_counts.mirrors
        self.dispatch: dict[str, Callable[[server.Request, RequestContext], bytes | int]] = {
            STANDARD: self._mirror_handler,
            MIRRORLIST: self._mirror_handler,
            FILESTATS: lambda request, ctx: self.pages.file_stats(request, ctx),
            MIRRORSTATS: lambda request, ctx: self.pages.mirror_stats(request, ctx),
            CHECKSUM: lambda request, ctx: self.pages.checksum(request, ctx),
            MIRRORSJSON: lambda request, ctx: self.pages.mirrors_json(request, ctx),
        }

    # -- helpers ---------------------------------------------------------------------------------

    def _config_state(self) -> _ConfigState:
        config = self.app.config
        st = self._state
        if st is None or st.config is not config:
            st = self._state = _ConfigState(config)
        return st

    # The hub's parts, fetched once (the hub builds each once; a plain attribute on the hot path).

    @cached_property
    def view(self) -> MirrorView:
        return self.app.get_cache()

    @cached_property
    def geoip(self) -> GeoIP:
        return self.app.get_geoip()

    @cached_property
    def pages(self) -> Endpoints:
        return self.app.get_pages()

    @cached_property
    def formats(self) -> FormatAnswers:
        """The format answers; piece hashes are read with the hub's Redis client, on first use."""
        async def read_pieces(path: str) -> Reply:
            return await self.app.get_redis().execute(
                "HMGET", schema.file_pieces_key(path), "size", "modTime", "length", "sha1", "sha256")
        return FormatAnswers(read_pieces, self.app.reactor)

    @cached_property
    def download_log(self) -> DownloadLog:
        return self.app.get_download_log()

    @cached_property
    def download_stats(self) -> DownloadStats:
        return self.app.get_download_stats()

    def _client_location(self, ip: str) -> tuple[GeoRecord, ClientLocation]:
        """The GeoIP record and selection location of a client IP, kept per IP.

        Why: a download site sees the same clients again (Range requests, retries, several files),
        and a lookup plus a :class:`ClientLocation` cost several times this one dict hit.  Entries
        are valid for one generation of the GeoIP databases (a reload swaps them: every entry is
        then stale), and the table is emptied when it reaches :attr:`client_locations` entries.
        """
        geoip = self.geoip
        generation = geoip.generation
        hit = self._locations.get(ip)
        if hit is not None and hit[0] == generation:
            return hit[1], hit[2]
        rec = geoip.lookup(ip)
        loc = ClientLocation(rec.country_code, rec.continent_code, rec.as_num, rec.latitude,
                             rec.longitude)
        if len(self._locations) >= self.client_locations:
            self._locations.clear()
        self._locations[ip] = (generation, rec, loc)
        return rec, loc

    # -- entry point -----------------------------------------------------------------------------

    def render(self, request: server.Request) -> bytes | int:
        """Go's ServeMux rules, then dispatch.  Never raises: a bug gives a plain 500."""
        try:
            return self._render(request)
        except Exception:
            log.failure("Request {uri!r} failed", uri=request.uri)
            return plain_error(request, 500, "Internal Server Error")

    def _render(self, request: server.Request) -> bytes | int:
        st = self._config_state()
        try:
            target = paths.parse_request_target(request.uri)
        except paths.BadRequest:
            # Go's server answers before any handler: no Server header, connection closed.
            request.responseHeaders.removeHeader(b"Server")
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Connection", b"close")
            # ... and closes it: nothing pipelined after such a request is answered.
            request.channel.persistent = False
            return b"400 Bad Request"
        url_path = target.path
        location = paths.canonical_location(url_path, target.raw_query)
        if location is not None:
            return self._moved_permanently(request, location)
        header_table(request.responseHeaders)[b"Server"] = [st.server]  # checked once
        query = parse_query(target.raw_query)
        rtype = request_type(query)
        if isinstance(request, LeanRequest):
            request.metrics_kind = METRICS_KINDS[rtype]
        ctx = RequestContext(url_path, query, st.config, rtype)
        body = self.dispatch[rtype](request, ctx)
        if isinstance(body, int):  # NOT_DONE_YET
            return body
        return gzip_answer(request, body, st.config.Gzip)

    def _moved_permanently(self, request: server.Request, location: str) -> bytes:
        """ServeMux's 301 for a non-canonical path: no Server header, never gzipped."""
        request.responseHeaders.removeHeader(b"Server")
        request.setResponseCode(301)
        request.setHeader(b"Location", location.encode("ascii", "backslashreplace"))
        if request.method in (b"GET", b"HEAD"):
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        if request.method == b"GET":
            return paths.moved_permanently_body(location).encode("utf-8", "surrogateescape")
        return b""

    # -- lean lane ------------------------------------------------------------------------------

    def fast_answer(self, method: bytes, target: bytes, version: bytes,
                    headers: dict[bytes, list[bytes]], channel: http.HTTPChannel,
                    close: bool) -> FastAnswer | None:
        """The whole answer to a plain GET or HEAD of a file the view holds, from the parts of the
        request's head, without a twisted ``Request`` (see :class:`~mirrorbits.web.site.FastLane`).

        Why: for such a request twisted.web's ``Request`` object, its header look-ups and
        ``setHeader`` calls and the generic render path cost more than the redirect itself.  Only
        requests whose answer is certain from here take this lane: GET or HEAD, an origin-form
        target without a query that needs no 301, a path that sanitises to a file the view holds
        (no Redis read), a usable client IP, and none of the headers that change the answer
        (``If-Modified-Since``, ``Want-Digest``, ``Want-Repr-Digest``, a Metalink ``Accept``,
        ``Accept-Encoding: gzip`` with ``Gzip`` on).  Anything else returns None before any
        side effect, and twisted.web answers it as always.  The rules after that (location,
        selection, fallbacks, the log line and the counts) are :meth:`_choose` and
        :meth:`_record`, the twisted path's own; the bytes are those ``LeanRequest`` writes.  A bug
        answers a plain 500, as :meth:`render` does (:meth:`_lean_failure`).
        """
        try:
            if method != b"GET" and method != b"HEAD" or not _DECLINED_HEADERS.isdisjoint(headers):
                return None
            accept_lines = headers.get(_ACCEPT)
            accept = accept_lines[0] if accept_lines else None
            if accept is not None and b"metalink" in accept:
                return None
            st = self._config_state()
            config = st.config
            if config.Gzip:
                encodings = headers.get(_ACCEPT_ENCODING)
                if encodings and any(b"gzip" in a for a in encodings):
                    return None
            targets = self._lean_targets
            url_path = targets.get(target)
            if url_path is None:
                url_path = _lean_url_path(target)
                if len(targets) >= self.lean_targets:
                    targets.clear()
                targets[target] = url_path
            if not url_path:
                return None
            try:
                path = paths.sanitize_path(st.repository, url_path)
            except paths.PathError:
                return None
            view = self.view
            entry = view.lookup(path)
            if entry is None:
                return None
            info = entry.info
            if info is None or info.mod_time_ns is None:
                return None
            forwarded = headers.get(_X_FORWARDED_FOR)
            client = self._lean_client(forwarded[0] if forwarded else None, channel)
            if client is None:
                return None
            rtype = _renderer(st.mode, accept)

            # The request is this lane's from here on: the twisted path's steps, in its order.
            view.stats["hits"] += 1
            proto = headers.get(_X_FORWARDED_PROTO)
            chosen = self._choose(path, info, entry, client[1], _NO_QUERY, proto[0] if proto else None, rtype,
                                  None, st, client[2])
            kind = "json" if rtype == JSON else "redirect"
            if chosen is None:
                return self._lean_answer(channel, method, version, close, st, None, rtype, None), kind, 503, False
            results, plan = chosen
            if rtype == REDIRECT:
                code = 302
                out = [version, _FOUND, _CONNECTION_CLOSE if close else b"", DATES.now_line(), st.server_line]
                redirect_pieces(results, config.MaxLinkHeaders,
                                plan.extra if plan is not None and not results.fallback else None, out)
                out.append(_NO_CONTENT if method == b"GET" else b"\r\n")
                data = b"".join(out)
            else:
                code = 200
                data = self._lean_answer(channel, method, version, close, st, results, rtype, plan)
            ranged = _RANGE in headers
            agents = headers.get(_USER_AGENT) if ranged else None
            self._record(rtype, code, method, results, info, ranged, agents[0] if agents else None)
            return data, kind, code, results.fallback
        except Exception:
            return self._lean_failure(method, target, version, headers, channel, close)

    def _lean_failure(self, method: bytes, target: bytes, version: bytes,
                      headers: dict[bytes, list[bytes]], channel: http.HTTPChannel,
                      close: bool) -> FastAnswer:
        """The lane's answer to its own bug: a plain 500, the bytes :meth:`render` gives (the
        ``Server`` header is set on the twisted path before anything can fail)."""
        log.failure("Request {uri!r} failed", uri=target)
        st = self._config_state()
        accept = headers.get(_ACCEPT)
        kind = "json" if _renderer(st.mode, accept[0] if accept else None) == JSON else "redirect"
        return (self._lean_answer(channel, method, version, close, st, None, REDIRECT, None, 500),
                kind, 500, False)

    def _lean_client(self, forwarded: bytes | None,
                     channel: http.HTTPChannel) -> tuple[int, str, tuple[GeoRecord, ClientLocation]] | None:
        """(GeoIP generation, client IP, its record and location) of a lean-lane request, or None
        when the IP is not usable (the twisted path answers 400).

        Why kept per ``X-Forwarded-For`` line: behind a proxy every request carries one, and the IP
        it names is a pure function of the line's bytes; one dict hit then replaces the decode,
        split, checks and the per-IP location look-up.  Entries are valid for one generation of
        the GeoIP databases, as :meth:`_client_location`'s, and the table is emptied when it
        reaches :attr:`client_locations` entries.  Without the header the peer decides, as
        :func:`~mirrorbits.web.clientinfo.client_ip` says.
        """
        generation = self.geoip.generation
        clients = self._forwarded_clients
        if forwarded is not None:
            hit = clients.get(forwarded)
            if hit is not None and hit[0] == generation:
                return hit
            ip = clientinfo.ip_from_forwarded_for(forwarded)
            if ip:
                if not _usable_ip(ip):
                    return None
                client = (generation, ip, self._client_location(ip))
                if len(clients) >= self.client_locations:
                    clients.clear()
                clients[forwarded] = client
                return client
        ip = clientinfo.ip_from_peer(clientinfo.peer_host(channel.getPeer()))
        if not _usable_ip(ip):
            return None
        return generation, ip, self._client_location(ip)

    def _lean_answer(self, channel: http.HTTPChannel, method: bytes, version: bytes, close: bool,
                     st: _ConfigState, results: Results | None, rtype: str, plan: FilePlan | None,
                     error: int = 503) -> bytes:
        """The lean lane's less common answers (JSON; without ``results``, Go's plain ``error``:
        503 or 500), made by the twisted path's renderers on a bare ``server.Request`` (never
        processed nor queued) and written as ``LeanRequest`` writes them."""
        request = server.Request(channel)
        request.method = method
        request.clientproto = version
        table = header_table(request.responseHeaders)
        if close:
            table[b"Connection"] = [b"close"]
        table[b"Date"] = DATES.now()
        table[b"Server"] = [st.server]
        if results is None:
            body = plain_error(request, error, http.RESPONSES[error].decode("ascii"))
        else:
            body = self._render_file(request, rtype, results, plan, False, st.config)
        return response_bytes(version, request.code, request.code_message, table, body,
                              method == b"HEAD", request.defaultContentType)[0]

    # -- mirror handler -----------------------------------------------------------------------

    def _mirror_handler(self, request: server.Request, ctx: RequestContext) -> bytes | int:
        st = self._config_state()
        # A download format (Metalink) is asked for by ?meta4 / ?metalink, by a format suffix on a
        # path that is not itself a file of the repository, or by an Accept that prefers it.
        torrents = st.config.Torrent.Enabled
        fmt = query_format(ctx.query, torrents) if ctx.query and ctx.request_type == STANDARD else None
        try:
            path = paths.sanitize_path(st.repository, ctx.url_path)
        except paths.NotFound as exc:
            split = split_suffix(ctx.url_path, torrents) if ctx.request_type == STANDARD else None
            if split is None:
                return plain_error(request, exc.status, exc.text)
            try:
                path = paths.sanitize_path(st.repository, split[0])
            except paths.PathError:
                return plain_error(request, exc.status, exc.text)
            fmt = split[1]
        except paths.PathError as exc:
            return plain_error(request, exc.status, exc.text)
        if fmt is None and ctx.request_type == STANDARD:
            accept = request.requestHeaders.getRawHeaders(b"accept")
            if accept and b"metalink" in accept[0]:
                fmt = accept_format(accept[0])[0]
        view = self.view
        entry = view.lookup(path)
        if fmt is not None and torrents:
            if entry is not None:  # answered at once when the piece hashes are known too
                info = entry.info if entry.info is not None else FileInfo(path)
                known, pieces = self.formats.cached_pieces(info)
                if known:
                    return self._format_answer(request, ctx, path, entry, info, None, fmt, pieces)
            return deliver(request, st.config.Gzip, self._format_with_pieces(request, ctx, path, fmt))
        if entry is not None:
            view.stats["negative" if entry.info is None or entry.info.mod_time_ns is None else "hits"] += 1
            if torrents and ctx.request_type == MIRRORLIST and entry.info is not None \
                    and not self.formats.cached_pieces(entry.info)[0]:
                # The page links the torrent only once its piece hashes are known to exist.
                return deliver(request, st.config.Gzip, self._load_and_answer(request, ctx, path, fmt, entry))
            return self._answer(request, ctx, path, entry, None, fmt)
        return deliver(request, st.config.Gzip, self._load_and_answer(request, ctx, path, fmt))

    async def _load_entry(self, path: str) -> tuple[PathEntry | None, str | None]:
        """The view's entry for ``path`` loaded from Redis, or (None, why) when Redis cannot answer."""
        try:
            # The view owns the deadline (MirrorView.load_timeout): past it, load() fails with
            # CommandTimeout and this request is answered with the fallbacks.
            entry = await self.view.load(path)
        except Exception as exc:  # Redis down, loading, not ready, timeout: fallbacks
            error = str(exc) or exc.__class__.__name__
            log.debug("Cannot load {path}: {err}", path=path, err=error)
            return None, error
        return entry, None

    async def _load_and_answer(self, request: server.Request, ctx: RequestContext, path: str,
                               fmt: str | None = None, entry: PathEntry | None = None) -> bytes:
        """The answer once the view's entry (when not given) and, for a mirror list page with
        torrents on, the file's piece hashes are known."""
        error: str | None = None
        if entry is None:
            entry, error = await self._load_entry(path)
        if ctx.request_type == MIRRORLIST and ctx.config.Torrent.Enabled and entry is not None \
                and entry.info is not None:
            await self.formats.pieces(entry.info)
        return self._answer(request, ctx, path, entry, error, fmt)

    async def _format_with_pieces(self, request: server.Request, ctx: RequestContext, path: str,
                                  fmt: str) -> bytes:
        """A format answer when torrents are on: the file's piece hashes may need a Redis read."""
        entry = self.view.lookup(path)
        error: str | None = None
        if entry is None:
            entry, error = await self._load_entry(path)
        info = entry.info if entry is not None and entry.info is not None else FileInfo(path)
        pieces = await self.formats.pieces(info)
        return self._format_answer(request, ctx, path, entry, info, error, fmt, pieces)

    def _answer(self, request: server.Request, ctx: RequestContext, path: str, entry: PathEntry | None,
                load_error: str | None, fmt: str | None = None) -> bytes:
        """The answer for a file once the view has answered (or Redis failed: ``entry`` None).

        ``fmt``: the download format asked for (:mod:`mirrorbits.web.formats`), None for the
        redirect, JSON or mirror list answer."""
        st = self._config_state()
        config = st.config
        info = entry.info if entry is not None and entry.info is not None else FileInfo(path)
        method = request.method
        if fmt is not None:
            return self._format_answer(request, ctx, path, entry, info, load_error, fmt)

        # 3. If-Modified-Since, GET and HEAD only.
        mod_ns = info.mod_time_ns
        if mod_ns is not None and mod_ns != 0 and (method == b"GET" or method == b"HEAD"):
            ims = request.requestHeaders.getRawHeaders(b"if-modified-since")
            if ims:
                since = parse_http_date(ims[0])
                if since is not None and mod_ns // 1_000_000_000 <= since:
                    request.setResponseCode(304)
                    request.setHeader(b"Last-Modified", _http_date(mod_ns // 1_000_000_000))
                    for h in (b"Content-Type", b"Content-Length", b"Content-Encoding"):
                        request.responseHeaders.removeHeader(h)
                    return b""

        # 4. Client IP (fromip for the mirror list).
        ip = clientinfo.request_client_ip(request)
        if not _usable_ip(ip):
            return plain_error(request, 400, "Bad Request")
        is_list = ctx.request_type == MIRRORLIST
        if is_list:
            values = ctx.query.get("fromip")
            ip = clientinfo.fromip_override(ip, values[0] if values else None)

        # 9 (decided early: it does not depend on the selection). Renderer.
        if is_list:
            rtype = MIRRORLIST
        else:
            rtype = _renderer(st.mode, _first(request, b"accept"))
            if rtype == JSON and isinstance(request, LeanRequest):
                request.metrics_kind = "json"

        # 5-7. Location, selection, then fallbacks or 503.
        chosen = self._choose(path, info, entry, ip, ctx.query, _first(request, b"x-forwarded-proto"),
                              rtype, load_error, st)
        if chosen is None:
            return plain_error(request, 503, "Service Unavailable")
        results, plan = chosen
        if results.fallback and isinstance(request, LeanRequest):
            request.metrics_fallback = True

        # 10. Render.
        if rtype == MIRRORLIST:
            request.setHeader(b"Cache-Control", b"private, no-cache")
            torrent = config.Torrent.Enabled and self.formats.cached_pieces(info)[1] is not None
            return self.pages.mirrorlist(request, results, torrent)
        body = self._render_file(request, rtype, results, plan, "pretty" in ctx.query, config)
        if wants_format_headers(request):
            self.formats.add_headers(request, info, config.Torrent.Enabled and self.formats.has_torrent(info))

        # 11–12. Log line and download counting.
        ranged = request.requestHeaders.hasHeader(b"range")
        self._record(rtype, request.code, method, results, info, ranged,
                     _first(request, b"user-agent") if ranged else None)
        return body

    def _choose(self, path: str, info: FileInfo, entry: PathEntry | None, ip: str,
                query: dict[str, list[str]], forwarded_proto: bytes | None, rtype: str,
                load_error: str | None, st: _ConfigState,
                located: tuple[GeoRecord, ClientLocation] | None = None) -> tuple[Results, FilePlan | None] | None:
        """The client's location, secure option and family, the selection, then the fallbacks when
        it has none: the request-independent core of a file answer, shared by the twisted path
        and the lean lane (:meth:`fast_answer`) so both apply the same rules and consume the rng
        alike.  Counts the client's country.  ``located``: :meth:`_client_location` of ``ip``, when
        the caller has it already.  None: no mirror and no fallback (503)."""
        config = st.config
        rec, loc = located if located is not None else self._client_location(ip)
        countries = self._countries
        countries[rec.country_code] = countries.get(rec.country_code, 0) + 1
        # Neither X-Forwarded-Proto nor a query (the common request): no call to learn it.
        secure = Secure.UNDEFINED if forwarded_proto is None and not query else clientinfo.secure_option(
            forwarded_proto, query.get("https"), config.AllowHTTPToHTTPSRedirects)
        family = client_family(ip, query) if st.by_family else Family.ANY
        sel = None
        plan = None
        if rtype == REDIRECT and loc.valid and entry is not None and self.memo_size > 0:
            fast = self._redirect_selection(path, info, entry, loc, secure, config, st, family)
            if fast is not None:
                sel, plan = fast
        if sel is None:
            sel = self._selection(path, info, entry, loc, secure, rtype == MIRRORLIST, config, st, family)
        results = self._results(info, ip, rec, loc, secure, sel, load_error, st)
        if results is None:
            return None
        return results, plan

    @staticmethod
    def _render_file(request: IRequest, rtype: str, results: Results, plan: FilePlan | None,
                     pretty: bool, config: Config) -> bytes:
        """The redirect or JSON answer of a file (status, headers, body) set on ``request``."""
        if rtype == JSON:
            return render_json(request, results, pretty)
        return render_redirect(request, results, config.MaxLinkHeaders,
                               plan.extra if plan is not None and not results.fallback else None)

    def _record(self, rtype: str, code: int, method: bytes, results: Results, info: FileInfo,
                ranged: bool, user_agent: bytes | None) -> None:
        """What follows a file answer on either path: the download log line, and for a GET
        redirect the download counts and the per-mirror redirect counts."""
        self.download_log.log(rtype, code, method.decode("latin-1"), results)
        if rtype == REDIRECT and method == b"GET" and results.mirror_list:
            self.download_stats.count_download(results, ranged, user_agent)
            if not results.fallback:
                self._count_redirect(results.mirror_list[0].candidate.name, info.size)

    def _count_redirect(self, mirror: str, size: int | None) -> None:
        counts = self._mirror_redirects.get(mirror)
        if counts is None:
            counts = self._mirror_redirects[mirror] = [0, 0]
        counts[0] += 1
        counts[1] += size or 0

    def _format_answer(self, request: server.Request, ctx: RequestContext, path: str,
                       entry: PathEntry | None, info: FileInfo, load_error: str | None, fmt: str,
                       pieces: PieceHashes | None = None) -> bytes:
        """A Metalink document: the file's record and every mirror the redirector would choose
        for this client, in its order (the fallbacks when none is usable).  A path the index does
        not hold (a directory, an unknown file) is 404; when Redis cannot answer, the document
        lists the fallbacks."""
        st = self._config_state()
        config = st.config
        if entry is not None and info.mod_time_ns is None:
            return plain_error(request, 404, "Not Found")
        ip = clientinfo.request_client_ip(request)
        if not _usable_ip(ip):
            return plain_error(request, 400, "Bad Request")
        rec, loc = self._client_location(ip)
        secure = clientinfo.secure_option(
            _first(request, b"x-forwarded-proto"), ctx.query.get("https"),
            config.AllowHTTPToHTTPSRedirects)
        family = client_family(ip, ctx.query) if st.by_family else Family.ANY
        sel = self._document_selection(path, info, entry, loc, secure, document_size(request, fmt, config),
                                       config, st, family)
        results = self._results(info, ip, rec, loc, secure, sel, load_error, st)
        if results is None:
            return plain_error(request, 503, "Service Unavailable")
        if results.fallback and isinstance(request, LeanRequest):
            request.metrics_fallback = True
        return self.formats.render(request, fmt, results, config, pieces)

    def _document_selection(self, path: str, info: FileInfo, entry: PathEntry | None, loc: ClientLocation,
                            secure: Secure, limit: int, config: Config, st: _ConfigState,
                            family: Family = Family.ANY) -> Selection:
        """The mirrors of a download document, up to ``limit``: what the redirect would choose for
        this client first (one draw, the same rng calls), then the other usable mirrors in the
        mirror list's order (:func:`~mirrorbits.selection.document_order`).

        Why through the redirect's plans: a document answer then costs what a redirect costs, not
        a full :func:`select_mirrors` (the file and location halves are the redirect's own, cached
        under the same validity rules).  Without a client location the redirect is a uniform
        random sample: the document is a uniform random order of every usable mirror."""
        wdr = config.WeightDistributionRange
        if loc.valid and entry is not None and self.memo_size > 0 and entry.pairs is not None \
                and info.mod_time_ns is not None:
            plan = self._file_plan(path, info, entry, secure, config, st, family)
            lplan = self._location_plan(loc)
            pool = redirect_pool(plan, lplan, wdr)
            drawn = draw_redirect(pool, self.rng) if pool is not None else []
            listed = document_order(plan, lplan, drawn, limit, wdr)
            if not listed and family != Family.ANY and not plan.family_fallback:
                # Mirrors of the family carry the file, but none suits this client's location:
                # as select_mirrors does, the choice for any family.
                sel = self._document_selection(path, info, entry, loc, secure, limit, config, st)
                if sel.selected:
                    sel.family_fallback = family
                return sel
            return Selection(listed, [], family_fallback=plan.family_fallback)
        if not loc.valid:
            return self._selection(path, info, entry, loc, secure, True, config, st, family)
        sel = self._selection(path, info, entry, loc, secure, False, config, st, family)
        if sel.error is None and len(sel.selected) < limit:
            taken = {ch.candidate for ch in sel.selected}
            column = Family.ANY if sel.family_fallback else family  # the family the draw used
            ranked = self._selection(path, info, entry, loc, secure, True, config, st, column).selected
            sel.selected.extend(ch for ch in ranked if ch.candidate not in taken)
        return sel

    def _results(self, info: FileInfo, ip: str, rec: GeoRecord,
                 loc: ClientLocation, secure: Secure, sel: Selection, load_error: str | None,
                 st: _ConfigState) -> Results | None:
        """The selection's mirrors, or the fallbacks when it has none; None (503) without any."""
        if sel.family_fallback:
            FAMILY_FALLBACKS.labels(sel.family_fallback.label).inc()
        mlist = sel.selected
        fallback = False
        if sel.error is not None or not mlist:
            if not st.fallbacks:
                return None
            # Go appends the fallbacks to a partial, unfiltered list after a network error
            # (quirk 1); a partial list is never used here, so the fallbacks stand alone.
            mlist = fallback_choices(st.fallbacks, loc, secure, self.rng)
            fallback = True
            (FALLBACK_REDIS if sel.error is not None or load_error is not None
             else FALLBACK_NO_MIRROR).inc()
        return Results(info, ip, rec, mlist, sel.excluded, fallback, st.config.LocalJSPath,
                       sel.error or load_error)

    def _redirect_selection(self, path: str, info: FileInfo, entry: PathEntry, loc: ClientLocation,
                            secure: Secure, config: Config, st: _ConfigState,
                            family: Family = Family.ANY) -> tuple[Selection, FilePlan | None] | None:
        """Selection for a redirect through the exact fast path of :mod:`mirrorbits.selection`.

        Why: a full :func:`select_mirrors` costs ~60 us for 50 mirrors, and a realistic mix has
        too many distinct (file, client location) pairs for a memo of whole selections (a 20 s
        Zipf run meets ~35% new pairs).  So the file half of the filter is kept per view entry
        (:class:`FilePlan`, per secure option), the client half per location
        (:class:`LocationPlan`, per mirror generation of the view), and each request intersects
        a short weighted list with the file's eligible mirrors, then draws (same rng calls as
        select_mirrors).  Plans are valid while the view entry's composed pairs, the view's
        mirror generation and the config are the very ones they were built from, so every
        invalidation and every reload applies at once.

        When fewer than two mirrors get a weight there is no draw: the sorted list
        (:func:`~mirrorbits.selection.redirect_order`, from the same plans) is memoised per
        (path, scheme option, client location), same validity rule.  Returns None to make the
        caller run the full selection.
        """
        pairs = entry.pairs
        if pairs is None or info.mod_time_ns is None:
            return None
        plan = self._file_plan(path, info, entry, secure, config, st, family)
        lplan = self._location_plan(loc)
        wdr = config.WeightDistributionRange
        pool = redirect_pool(plan, lplan, wdr)
        if pool is not None:
            return Selection(draw_redirect(pool, self.rng), [], family_fallback=plan.family_fallback), plan

        key = (path, verdict_index(secure, family), (loc.country, loc.continent, loc.asnum, loc.geo_key))
        memo = self._memo
        hit = memo.get(key)
        if hit is None or hit[0] is not pairs or hit[1] is not st:
            self.memo_stats["misses"] += 1
            # select_mirrors' list without a draw, from the same plans (~5 us, not ~60).
            listed = redirect_order(plan, lplan, max(1, config.MaxLinkHeaders + 1), wdr)
            if not listed and family != Family.ANY and not plan.family_fallback:
                # The family's mirrors carry the file but none suits this client: as
                # select_mirrors does, the choice for any family (a draw, if any, is not kept).
                chosen = self._redirect_selection(path, info, entry, loc, secure, config, st)
                if chosen is None or not chosen[0].selected:
                    return Selection([], []), plan
                chosen[0].family_fallback = family
                return chosen[0], plan
            hit = (pairs, st, listed, plan.family_fallback if listed else Family.ANY)
            memo.set(key, hit)
        else:
            self.memo_stats["hits"] += 1
        return Selection([Chosen(ch.candidate, ch.absolute_url, ch.distance, ch.computed_score,
                                 ch.weight) for ch in hit[2]], [], family_fallback=hit[3]), plan

    def _file_plan(self, path: str, info: FileInfo, entry: PathEntry, secure: Secure, config: Config,
                   st: _ConfigState, family: Family = Family.ANY) -> FilePlan:
        """The file half of the fast path for ``entry`` (whose pairs and modTime are known), kept on
        the view entry per secure option and client family while its pairs and the config are the
        same."""
        pairs = entry.pairs or ()
        plans = entry.plans
        if plans is None or plans[0] is not pairs or plans[1] is not st:
            plans = (pairs, st, {})
            entry.plans = plans
        by_column = plans[2]
        column = verdict_index(secure, family)
        plan = by_column.get(column)
        if plan is None:
            plan = by_column[column] = plan_file(
                path, info.size, info.mod_time_ns, pairs, secure=secure, allow_outdated=st.outdated,
                fix_timezone_offsets=config.FixTimezoneOffsets, family=family)
        return plan

    def _location_plan(self, loc: ClientLocation) -> LocationPlan:
        """The client half of the fast path for a valid location, kept per location while the
        view's mirror generation is the same."""
        lkey = (loc.country, loc.continent, loc.asnum, loc.geo_key)
        view = self.view
        gen = view.gen
        lp_hit = self._loc_plans.get(lkey)
        if lp_hit is None or lp_hit[0] != gen or lp_hit[1] is not view:
            if len(self._loc_plans) >= self.location_plans:
                self._loc_plans.clear()
            lp_hit = (gen, view, LocationPlan(loc, view.mirrors().values()))
            self._loc_plans[lkey] = lp_hit
        return lp_hit[2]

    def _selection(self, path: str, info: FileInfo, entry: PathEntry | None, loc: ClientLocation,
                   secure: Secure, is_list: bool, config: Config, st: _ConfigState,
                   family: Family = Family.ANY) -> Selection:
        pairs = entry.pairs if entry is not None and entry.pairs is not None else ()
        return select_mirrors(
            path, info.size, info.mod_time_ns, pairs, loc,
            secure=secure, for_mirrorlist=is_list,
            weight_distribution_range=config.WeightDistributionRange,
            allow_outdated=st.outdated, fix_timezone_offsets=config.FixTimezoneOffsets,
            family=family, rng=self.rng,
        )


def _first(request: server.Request, name: bytes) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[0] if values else None


def _lean_url_path(target: bytes) -> str:
    """The decoded path of a request target the lean lane may answer: origin form, no query, and
    canonical (no ServeMux 301); ``""`` otherwise (twisted.web answers it; an origin-form path is
    never empty).  A pure function of the target, so the lane keeps its results."""
    try:
        parsed = paths.parse_request_target(target)
    except paths.BadRequest:
        return ""
    if not parsed.path.startswith("/") or parsed.raw_query \
            or paths.canonical_location(parsed.path) is not None:
        return ""
    return parsed.path


def _usable_ip(ip: str) -> bool:
    """A client IP text selection may take (else the answer is 400)."""
    return len(ip) <= MAX_IP_TEXT and ip.isascii() and ip.isprintable()


def _renderer(mode: str, accept: bytes | None) -> str:
    """The renderer of a file answer (not a mirror list) for the ``OutputMode``: in ``auto`` mode,
    JSON when the first ``Accept`` line contains ``application/json`` (no q-values)."""
    if mode == "json" or (mode == "auto" and accept is not None and b"application/json" in accept):
        return JSON
    return REDIRECT
