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
* ``app.get_download_stats().count_download(request, results)`` after a GET redirect with a
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
from twisted.web import resource, server

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
    redirect_pool,
    select_mirrors,
    verdict_index,
)
from mirrorbits.twistedcompat import header_table
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
    render_json,
    render_redirect,
)
from mirrorbits.web.site import LeanRequest, deliver, gzip_answer

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

    __slots__ = ("config", "server", "repository", "fallbacks", "outdated", "mode", "by_family")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.server = f"Mirrorbits/{VERSION}".encode()
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

        # 4–5. Client IP (fromip for the mirror list) and its location.
        ip = clientinfo.request_client_ip(request)
        if len(ip) > MAX_IP_TEXT or not (ip.isascii() and ip.isprintable()):
            return plain_error(request, 400, "Bad Request")
        is_list = ctx.request_type == MIRRORLIST
        if is_list:
            values = ctx.query.get("fromip")
            ip = clientinfo.fromip_override(ip, values[0] if values else None)
        rec, loc = self._client_location(ip)
        countries = self._countries
        countries[rec.country_code] = countries.get(rec.country_code, 0) + 1
        secure = clientinfo.secure_option(
            _first(request, b"x-forwarded-proto"), ctx.query.get("https"),
            config.AllowHTTPToHTTPSRedirects)
        family = client_family(ip, ctx.query) if st.by_family else Family.ANY

        # 9 (decided early: it does not depend on the selection). Renderer.
        mode = st.mode
        if is_list:
            rtype = MIRRORLIST
        elif mode == "json" or (mode == "auto" and _accepts_json(request)):
            rtype = JSON
            if isinstance(request, LeanRequest):
                request.metrics_kind = "json"
        else:
            rtype = REDIRECT

        # 6–7. Selection, then fallbacks or 503.
        sel = None
        plan = None
        if rtype == REDIRECT and loc.valid and entry is not None and self.memo_size > 0:
            fast = self._redirect_selection(path, info, entry, loc, secure, config, st, family)
            if fast is not None:
                sel, plan = fast
        if sel is None:
            sel = self._selection(path, info, entry, loc, secure, is_list, config, st, family)
        results = self._results(request, info, ip, rec, loc, secure, sel, load_error, st)
        if results is None:
            return plain_error(request, 503, "Service Unavailable")
        mlist = results.mirror_list
        fallback = results.fallback

        # 10. Render.
        if rtype == MIRRORLIST:
            request.setHeader(b"Cache-Control", b"private, no-cache")
            torrent = config.Torrent.Enabled and self.formats.cached_pieces(info)[1] is not None
            return self.pages.mirrorlist(request, results, torrent)
        if rtype == JSON:
            body = render_json(request, results, "pretty" in ctx.query)
        else:
            body = render_redirect(request, results, config.MaxLinkHeaders,
                                   plan.extra if plan is not None and not fallback else None)
        if wants_format_headers(request):
            self.formats.add_headers(request, info, config.Torrent.Enabled and self.formats.has_torrent(info))

        # 11–12. Log line and download counting.
        self.download_log.log(rtype, request.code, method.decode("latin-1"), results)
        if rtype == REDIRECT and method == b"GET" and mlist:
            self.download_stats.count_download(request, results)
            if not fallback:
                self._count_redirect(mlist[0].candidate.name, info.size)
        return body

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
        if len(ip) > MAX_IP_TEXT or not (ip.isascii() and ip.isprintable()):
            return plain_error(request, 400, "Bad Request")
        rec, loc = self._client_location(ip)
        secure = clientinfo.secure_option(
            _first(request, b"x-forwarded-proto"), ctx.query.get("https"),
            config.AllowHTTPToHTTPSRedirects)
        family = client_family(ip, ctx.query) if st.by_family else Family.ANY
        sel = self._document_selection(path, info, entry, loc, secure, document_size(request, fmt, config),
                                       config, st, family)
        results = self._results(request, info, ip, rec, loc, secure, sel, load_error, st)
        if results is None:
            return plain_error(request, 503, "Service Unavailable")
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

    def _results(self, request: server.Request, info: FileInfo, ip: str, rec: GeoRecord,
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
            if isinstance(request, LeanRequest):
                request.metrics_fallback = True
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

        When fewer than two mirrors get a weight there is no draw: the sorted list is memoised
        per (path, scheme option, client location), same validity rule.  Returns None to make
        the caller run the full selection.
        """
        pairs = entry.pairs
        if pairs is None or info.mod_time_ns is None:
            return None
        plan = self._file_plan(path, info, entry, secure, config, st, family)
        pool = redirect_pool(plan, self._location_plan(loc), config.WeightDistributionRange)
        if pool is not None:
            return Selection(draw_redirect(pool, self.rng), [], family_fallback=plan.family_fallback), plan

        key = (path, verdict_index(secure, family), (loc.country, loc.continent, loc.asnum, loc.geo_key))
        memo = self._memo
        hit = memo.get(key)
        if hit is None or hit[0] is not pairs or hit[1] is not st:
            self.memo_stats["misses"] += 1
            full = self._selection(path, info, entry, loc, secure, False, config, st, family)
            if full.error is not None:
                return None
            hit = (pairs, st, full.selected[:max(1, config.MaxLinkHeaders + 1)], full.family_fallback)
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


def _accepts_json(request: server.Request) -> bool:
    """``auto`` mode: the first ``Accept`` line contains ``application/json`` (no q-values)."""
    accept = _first(request, b"accept")
    return accept is not None and b"application/json" in accept
