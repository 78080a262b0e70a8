"""The two HTML pages: ``?mirrorlist`` (one file) and ``?mirrorstats`` (the network).

Why server-side: operators open these pages on hosts without internet access and with JavaScript
off, so everything they need is in the HTML — tables, and the charts drawn here as inline SVG
(the pie of selection weights, the download and byte bars).  The Leaflet map is an enhancement:
its data is embedded as JSON and a short script draws it only when Leaflet loaded (from
``LocalJSPath`` or the public CDN); without it the map stays hidden.

Templates are ``twisted.web.template`` XHTML files (``base.html``, ``mirrorlist.html``,
``mirrorstats.html``) in the ``Templates`` directory.  Go ``html/template`` files cannot be reused:
when the configured directory holds files that do not parse as Twisted templates (for example
the Go originals), the bundled templates are used and the problem is logged.  They are reloaded on
every config reload (SIGHUP); a failed reload keeps the old ones.

Fixes over Go: mirrorstats pairs counters with mirrors by mirror id, so a
mirror that fails to load shifts nothing, and the bar percentages are 0, not NaN, when all
counters are 0.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web import server
from twisted.web.iweb import IRequest
from twisted.web.template import Element, Flattenable, Tag, XMLFile, flattenString, renderer, tags

from mirrorbits import VERSION
from mirrorbits.config import Config, ConfigHolder
from mirrorbits.gocompat import Float32, f32, format_duration, format_rfc1123, go_json_marshal
from mirrorbits.history.keys import Level, last_days, last_months, parse_period, period_label
from mirrorbits.history.reader import Point, mirror_series
from mirrorbits.ipfamily import family_cells, family_states, health_cells
from mirrorbits.model import Mirror
from mirrorbits.web.charts import bar, pie_chart, sizeof, sparkline
from mirrorbits.web.checksum import FileInfoLoader, render_checksum
from mirrorbits.web.filestats import render_file_stats
from mirrorbits.web.history import HistoryBody, fetch_history, period_selector, retention_notes
from mirrorbits.web.mirrorsjson import fetch_mirror_hashes, fetch_mirrors, mirror_state, render_mirrors_json
from mirrorbits.web.render import Results, plain_error
from mirrorbits.web.site import deliver

if TYPE_CHECKING:
    from mirrorbits.app import Mirrorbits
    from mirrorbits.redis.connection import RedisClient
    from mirrorbits.selection import Candidate
    from mirrorbits.web.resource import RequestContext

__all__ = [
    "Endpoints",
    "Pages",
    "Templates",
    "MirrorStatsRow",
    "concaturl",
    "fuzzy_time",
    "mirror_state",
    "sizeof",
    "bundled_templates_dir",
]

log = Logger(namespace="mirrorbits.pages")

TEMPLATE_FILES = ("base.html", "mirrorlist.html", "mirrorstats.html")
#: Templates a directory may lack (written for an older version): the bundled one is used instead.
OPTIONAL_TEMPLATE_FILES = ("history.html",)
NO_TEMPLATES = "please set a valid path to the templates directory"
MAP_MIRRORS = 19
LEAFLET_VERSION = "1.3.4"
LEAFLET_CDN = f"https://unpkg.com/leaflet@{LEAFLET_VERSION}/dist"
_TEXT_HTML = b"text/html; charset=utf-8"

# Drawn only when Leaflet loaded.  No "<", ">" or "&" in it: the flattener escapes those in text.
_MAP_SCRIPT = """
(function () {
  var el = document.getElementById('map');
  var src = document.getElementById('map-data');
  if (!window.L || !el || !src) { return; }
  var data = JSON.parse(src.textContent);
  el.hidden = false;
  var map = L.map(el).setView([20, 10], 2);
  L.tileLayer('https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png', {
    attribution: '\\u00a9 OpenStreetMap contributors'
  }).addTo(map);
  var points = [];
  data.markers.forEach(function (m) {
    L.circleMarker([m.lat, m.lon], {radius: 7, color: m.color, fillColor: m.color, fillOpacity: 0.8})
      .addTo(map).bindTooltip(m.label);
    points.push([m.lat, m.lon]);
  });
  if (data.client) {
    L.marker([data.client.lat, data.client.lon]).addTo(map).bindTooltip(data.client.label);
    points.push([data.client.lat, data.client.lon]);
  }
  if (data.line) { L.polyline(data.line, {color: '#555', dashArray: '4 4'}).addTo(map); }
  if (points.length) { map.fitBounds(points, {padding: [30, 30], maxZoom: 6}); }
})();
"""


# ---------------------------------------------------------------------------------------------
# Helpers of the Go templates


def concaturl(base: str, path: str) -> str:
    """Join with exactly one ``/`` between the parts."""
    if base.endswith("/") and path.startswith("/"):
        return base + path[1:]
    if base.endswith("/") or path.startswith("/"):
        return base + path
    return base + "/" + path


def fuzzy_time(seconds: float) -> str:
    """Go ``FuzzyTimeStr`` of a duration; N truncated, ``s`` added when N > 1."""
    minutes = seconds / 60
    hours = seconds / 3600

    def fmt(n: float, unit: str) -> str:
        k = int(n)
        return f"{k} {unit}{'s' if k > 1 else ''} ago"

    if int(minutes) == 0:
        return "up-to-date"
    if minutes < 0:
        return "in the future"
    if hours < 1:
        return fmt(minutes, "minute")
    if hours < 24:
        return fmt(hours, "hour")
    if hours / 24 / 365 > 1:
        return fmt(hours / 24 / 365, "year")
    return fmt(hours / 24, "day")


STATE_COLORS = {"up": "#27ae60", "down": "#c0392b", "degraded": "#e67e22", "disabled": "#000000"}


def bundled_templates_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")


class Marker(TypedDict):
    """One point of the map (a mirror, or the client)."""

    lat: float
    lon: float
    label: str
    color: str


class ClientMarker(TypedDict):
    lat: float
    lon: float
    label: str


def map_block(markers: list[Marker], local_js_path: str, client: ClientMarker | None = None,
              line: list[list[float]] | None = None) -> list[Tag]:
    """The hidden map container, its JSON data and the scripts that may draw it."""
    base = local_js_path.rstrip("/") + f"/leaflet/{LEAFLET_VERSION}" if local_js_path else LEAFLET_CDN
    data: dict[str, object] = {"markers": markers, "client": client, "line": line}
    return [
        tags.link(rel="stylesheet", href=f"{base}/leaflet.css"),
        tags.div(id="map", hidden=""),
        # go_json_marshal escapes <, > and & as \\u003c..., so the JSON cannot end the script.
        tags.script(go_json_marshal(data), type="application/json", id="map-data"),
        tags.script(src=f"{base}/leaflet.js", defer=""),
        tags.script(_MAP_SCRIPT, defer=""),
    ]


# ---------------------------------------------------------------------------------------------
# Templates


class Templates:
    """The three parsed template files of one directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.loaders: dict[str, XMLFile] = {}
        for name in TEMPLATE_FILES:
            loader = XMLFile(FilePath(os.path.join(directory, name)))
            loader.load()  # parse now: a missing or broken file fails here, not on a request
            self.loaders[name] = loader
        for name in OPTIONAL_TEMPLATE_FILES:
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                path = os.path.join(bundled_templates_dir(), name)
            loader = XMLFile(FilePath(path))
            loader.load()
            self.loaders[name] = loader

    @classmethod
    def load(cls, directory: str) -> Templates:
        """The templates of ``directory``, or the bundled ones when those cannot be used."""
        try:
            return cls(directory)
        except Exception as e:
            bundled = bundled_templates_dir()
            if os.path.abspath(directory) == bundled:
                raise
            log.error("Templates: cannot use {dir} ({err}); using the bundled templates "
                      "(Go html/template files are not supported)", dir=directory, err=e)
            return cls(bundled)


class _Base(Element):
    """``base.html``: header bar, headline, body, footer."""

    def __init__(self, templates: Templates, title: str, headline: str, body: Element,
                 head: Sequence[Flattenable] = ()) -> None:
        super().__init__(templates.loaders["base.html"])
        self.title = title
        self.headline = headline
        self.content = body
        self.head_extra = list(head)

    @renderer
    def head(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return self.head_extra

    @renderer
    def body(self, request: IRequest | None, tag: Tag) -> Tag:
        return tag(self.content)


async def _flatten(templates: Templates, title: str, headline: str, body: Element,
                   head: Sequence[Flattenable], hostname: str) -> bytes:
    page = _Base(templates, title, headline, body, head)
    root = tags.transparent(page)
    root.fillSlots(title=title, headline=headline, version=VERSION, hostname=hostname)
    out = await flattenString(None, root)
    return b"<!DOCTYPE html>\n" + out


# ---------------------------------------------------------------------------------------------
# ?mirrorlist


def _selection(weight: float) -> str:
    if weight >= 1:
        return f"{weight:.0f}%"
    if weight > 0:
        return "<1%"
    return "n/a"


def _candidate_label(cand: Candidate) -> str:
    return cand.mirror.sponsor_name or cand.name


class MirrorListBody(Element):
    """``mirrorlist.html`` for one :class:`~mirrorbits.web.render.Results`."""

    def __init__(self, templates: Templates, results: Results, torrents: bool = False) -> None:
        super().__init__(templates.loaders["mirrorlist.html"])
        self.results = results
        self.torrents = torrents
        #: A listed mirror was probed per address family (SelectByIPFamily): IPv4/IPv6 columns.
        self.has_families = any(ch.candidate.families for ch in results.mirror_list) \
            or any(ex.candidate.families for ex in results.excluded)

    def render(self, request: IRequest | None) -> Flattenable:
        r = self.results
        c = r.client
        if c.valid:
            if c.city:
                location = f"near {c.city} in {c.country}"
            else:
                location = f"somewhere in {c.country}"
        else:
            location = "unknown: mirrors were chosen at random"
        network = f"{c.as_name} (ASN{c.as_num})" if (c.as_name or c.as_num) else "unknown"
        return tags.transparent(super().render(request)).fillSlots(
            ip=r.ip or "unknown", network=network, location=location)

    @renderer
    def file_details(self, request: IRequest | None, tag: Tag) -> Flattenable:
        fi = self.results.file_info
        if fi.mod_time_ns is None:
            return tags.p("This file has not been scanned yet.", class_="muted")
        return tag.fillSlots(size=f"{sizeof(fi.size)} ({fi.size} bytes)",
                             modified=format_rfc1123(fi.mod_time_ns, "UTC"))

    @renderer
    def formats(self, request: IRequest | None, tag: Tag) -> Flattenable:
        """Links to the file's download descriptions: the Metalink always, the torrent and the
        magnet when the file has one (torrents on, piece hashes computed)."""
        fi = self.results.file_info
        if fi.mod_time_ns is None:
            return ""
        name = quote(os.path.basename(fi.path))
        links: list[Flattenable] = [tags.a("Metalink", href=name + ".meta4")]
        if self.torrents:
            links += [" · ", tags.a("Torrent", href=name + ".torrent"),
                      " · ", tags.a("Magnet", href=name + ".magnet")]
        return tag(*links)

    @renderer
    def hashes(self, request: IRequest | None, tag: Tag) -> Iterator[Tag]:
        fi = self.results.file_info
        for name, value in (("MD5", fi.md5), ("SHA1", fi.sha1), ("SHA256", fi.sha256)):
            yield tag.clone().fillSlots(name=name, value=value or "N/A")

    @renderer
    def pie(self, request: IRequest | None, tag: Tag) -> Tag:
        slices = [(ch.candidate.name, ch.weight) for ch in self.results.mirror_list if ch.weight > 0]
        return pie_chart(slices or [("Random", 100.0)])

    @renderer
    def map(self, request: IRequest | None, tag: Tag) -> Flattenable:
        r = self.results
        markers: list[Marker] = []
        for i, ch in enumerate(r.mirror_list[:MAP_MIRRORS], 1):
            if ch.candidate.source is None:
                continue  # fallback pseudo-mirrors have no position
            markers.append({"lat": Float32(ch.candidate.latitude), "lon": Float32(ch.candidate.longitude),
                            "label": f"{i}. {ch.candidate.name}",
                            "color": "#27ae60" if ch.weight > 0 else "#2980b9"})
        client: ClientMarker | None = None
        line: list[list[float]] | None = None
        c = r.client
        if c.valid:
            lat, lon = Float32(c.latitude), Float32(c.longitude)
            client = {"lat": lat, "lon": lon, "label": "You"}
            if markers:
                line = [[lat, lon], [markers[0]["lat"], markers[0]["lon"]]]
        return map_block(markers, r.local_js_path, client, line)

    @renderer
    def fallback(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return tag if self.results.fallback else ""

    @renderer
    def families(self, request: IRequest | None, tag: Tag) -> Flattenable:
        """The IPv4/IPv6 header and cells, when a listed mirror was probed per family."""
        return tag if self.has_families else ""

    @renderer
    def mirrors(self, request: IRequest | None, tag: Tag) -> Flattenable:
        if not self.results.mirror_list:
            return tags.p(tags.em("No mirrors for this file"), id="no-mirrors")
        return tag

    @renderer
    def mirror_row(self, request: IRequest | None, tag: Tag) -> Iterator[Tag]:
        path = self.results.file_info.path
        for i, ch in enumerate(self.results.mirror_list):
            cand = ch.candidate
            ipv4, ipv6 = health_cells(cand.families)
            yield tag.clone().fillSlots(
                ipv4=ipv4, ipv6=ipv6,
                rowclass="weighted" if ch.weight > 0 else "unweighted",
                rank=f"{i + 1}.", name=_candidate_label(cand),
                href=concaturl(ch.absolute_url, path), url=ch.absolute_url,
                countries=cand.country_codes, continent=cand.continent_code,
                distance=f"{ch.distance:.0f} Km", selection=_selection(ch.weight))

    @renderer
    def excluded(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return tag if self.results.excluded else ""

    @renderer
    def excluded_row(self, request: IRequest | None, tag: Tag) -> Iterator[Tag]:
        # Plain byte-wise order of the reasons (Go sort by ExcludeReason); stable for ties.
        ordered = sorted(self.results.excluded,
                         key=lambda ex: ex.reason.encode("utf-8", "surrogateescape"))
        for ex in ordered:
            cand = ex.candidate
            ipv4, ipv6 = health_cells(cand.families)
            yield tag.clone().fillSlots(
                ipv4=ipv4, ipv6=ipv6, name=cand.name, url=ex.absolute_url, countries=cand.country_codes,
                continent=cand.continent_code, distance=f"{ex.distance:.0f} Km", reason=ex.reason)


# ---------------------------------------------------------------------------------------------
# ?mirrorstats


@dataclass(slots=True)
class MirrorStatsRow:
    """One mirror of the stats page (Go's ``MirrorStats``), counters paired by mirror id."""

    mirror: Mirror
    downloads: int
    bytes: int
    percent_d: float = 0.0
    percent_b: float = 0.0
    sync_valid: bool = False
    sync_hours: int = 0
    sync_text: str = "unknown"
    tz_offset: str = "0s"
    #: (IPv4, IPv6) cells when the mirror was checked per address family (``SelectByIPFamily``).
    families: tuple[str, str] | None = None


_f32 = f32


def build_stats_rows(mirrors: Sequence[Mirror], downloads: dict[int, int], sizes: dict[int, int],
                     now: float, families: Mapping[int, tuple[str, str]] | None = None
                     ) -> list[MirrorStatsRow]:
    """Rows sorted by downloads (descending, then name), with float32 percentages of the maxima
    (0 instead of Go's NaN when a maximum is 0); ``families``: the (IPv4, IPv6) cells of the mirrors
    checked per address family."""
    rows = []
    for m in mirrors:
        row = MirrorStatsRow(m, downloads.get(m.id, 0), sizes.get(m.id, 0),
                             tz_offset=format_duration(m.tz_offset * 1_000_000),
                             families=(families or {}).get(m.id))
        if m.last_mod_time is not None:
            elapsed = now - m.last_mod_time
            row.sync_valid = True
            row.sync_hours = int(elapsed / 3600)
            row.sync_text = fuzzy_time(elapsed)
        rows.append(row)
    rows.sort(key=lambda r: (-r.downloads, r.mirror.name, r.mirror.id))
    max_d = max((r.downloads for r in rows), default=0)
    max_b = max((r.bytes for r in rows), default=0)
    for r in rows:
        r.percent_d = _f32(r.downloads * 100 / max_d) if max_d else 0.0
        r.percent_b = _f32(r.bytes * 100 / max_b) if max_b else 0.0
    return rows


def _sync_class(row: MirrorStatsRow) -> str:
    if not row.sync_valid:
        return "sync-unknown"
    if row.sync_hours > 720:
        return "sync-red"
    if row.sync_hours > 48:
        return "sync-orange"
    return "sync-green"


SPARK_DAYS = 30
SPARK_MONTHS = 12
#: ``?mirrorstats=history``: the global history page (web.history).
HISTORY = "history"

Period = tuple[Level, date]


@dataclass
class MirrorStatsHistory:
    """What ``?mirrorstats`` shows besides Go's page: the period, its selector, retention notes and
    each mirror's sparklines (by mirror id)."""

    since: str
    selector: Tag
    notes: list[Tag]
    sparks: dict[int, tuple[Tag, Tag]]


def _spark(points: Sequence[Point], title: str) -> Tag:
    return sparkline([None if p.pruned else p.downloads for p in points],
                     [None if p.pruned else p.bytes for p in points], title)


class MirrorStatsBody(Element):
    """``mirrorstats.html``."""

    def __init__(self, templates: Templates, rows: list[MirrorStatsRow], local_js_path: str,
                 history: MirrorStatsHistory | None = None) -> None:
        super().__init__(templates.loaders["mirrorstats.html"])
        self.rows = rows
        self.local_js_path = local_js_path
        self.has_tz = any(r.mirror.tz_offset != 0 for r in rows)
        self.has_families = any(r.families is not None for r in rows)
        self.history = history

    def render(self, request: IRequest | None) -> Flattenable:
        since = self.history.since if self.history is not None else "Since 00:00 UTC"
        return tags.transparent(super().render(request)).fillSlots(
            downloads=str(sum(r.downloads for r in self.rows)),
            bytes=sizeof(sum(r.bytes for r in self.rows)), count=str(len(self.rows)), since=since)

    @renderer
    def periods(self, request: IRequest | None, tag: Tag) -> Flattenable:
        if self.history is None:
            return ""
        return [self.history.selector, *self.history.notes]

    @renderer
    def spark_header(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return tag if self.history is not None else ""

    @renderer
    def map(self, request: IRequest | None, tag: Tag) -> Flattenable:
        markers: list[Marker] = []
        for r in self.rows:
            m = r.mirror
            state = mirror_state(m)
            markers.append({"lat": Float32(m.latitude), "lon": Float32(m.longitude),
                            "label": f"{m.name} ({state})", "color": STATE_COLORS[state]})
        return map_block(markers, self.local_js_path)

    @renderer
    def mirrors(self, request: IRequest | None, tag: Tag) -> Flattenable:
        if not self.rows:
            return tags.p(tags.em("No mirrors"), id="no-mirrors")
        return tag

    @renderer
    def tz_header(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return tag if self.has_tz else ""

    @renderer
    def tz_cell(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return tag if self.has_tz else ""

    @renderer
    def families(self, request: IRequest | None, tag: Tag) -> Flattenable:
        """The IPv4/IPv6 header and cells, once a mirror was probed per family."""
        return tag if self.has_families else ""

    @renderer
    def mirror_row(self, request: IRequest | None, tag: Tag) -> Iterator[Tag]:
        for r in self.rows:
            bars = [bar(r.percent_d, "#4078C0", f"{r.downloads} downloads"),
                    bar(r.percent_b, "#7CA2D3", f"{sizeof(r.bytes)} transferred")]
            sparks: list[Flattenable] = []
            if self.history is not None:
                sparks = [tags.td(spark, class_="spark") for spark in self.history.sparks.get(r.mirror.id, ())]
            ipv4, ipv6 = r.families or ("-", "-")
            yield tag.clone().fillSlots(
                name=r.mirror.name, state=mirror_state(r.mirror), downloads=str(r.downloads),
                bars=bars, bytes=sizeof(r.bytes), sync=r.sync_text, syncclass=_sync_class(r),
                tz=r.tz_offset, sparks=sparks, ipv4=ipv4, ipv6=ipv6)


# ---------------------------------------------------------------------------------------------
# The pages object


class Pages:
    """Renders the pages for the redirector's dispatch (``get_pages()`` of the app).

    ``config`` returns the current config (``Templates``, ``LocalJSPath``); when it is a
    ``ConfigHolder`` the templates are reloaded on every reload.
    """

    def __init__(self, config: Callable[[], Config], redis: RedisClient,
                 clock: Callable[[], float] = time.time,
                 hostname: str | None = None) -> None:
        self.config = config
        self.redis = redis
        self.clock = clock
        self.hostname = socket.gethostname() if hostname is None else hostname
        self.templates: Templates | None = None
        self._templates_dir: str | None = None
        self.reload_templates()
        if isinstance(config, ConfigHolder):
            config.subscribe(self._config_changed)

    def _config_changed(self, old: Config, new: Config) -> None:
        self.reload_templates()

    def reload_templates(self) -> bool:
        """(Re)load the templates of the configured directory; on failure keep the old ones."""
        directory = self.config().Templates or bundled_templates_dir()
        try:
            self.templates = Templates.load(directory)
        except Exception as e:
            log.error("Templates: cannot load {dir}: {err}", dir=directory, err=e)
            return False
        self._templates_dir = directory
        return True

    async def render_mirrorlist(self, request: IRequest, results: Results, torrent: bool = False) -> bytes:
        """The MIRRORLIST renderer: status, headers and body for ``results``; ``torrent``: the
        file's torrent exists (the page links it and its magnet)."""
        templates = self.templates
        if templates is None:
            return plain_error(request, 500, NO_TEMPLATES)
        path = results.file_info.path
        try:
            body = await _flatten(templates, f"Mirrorlist {path}", path,
                                  MirrorListBody(templates, results, torrent), (),
                                  self.hostname)
        except Exception as e:
            log.failure("mirrorlist page failed")
            return plain_error(request, 500, str(e))
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", _TEXT_HTML)
        request.setHeader(b"Cache-Control", b"private, no-cache")
        return body

    def _period(self, query: dict[str, list[str]], default: Period) -> Period | None:
        value = (query.get("period") or [""])[0]
        return parse_period(value) if value else default

    async def _page(self, request: IRequest, templates: Templates, title: str, body: Element) -> bytes:
        try:
            out = await _flatten(templates, title, title, body, (), self.hostname)
        except Exception as e:
            log.failure("{title} page failed", title=title)
            return plain_error(request, 500, str(e))
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", _TEXT_HTML)
        return out

    async def render_mirrorstats(self, request: IRequest, query: dict[str, list[str]] | None = None) -> bytes:
        """The MIRRORSTATS page of a period (``&period=``, default today), with each mirror's last 30
        days and 12 months as sparklines; the request path is ignored."""
        templates = self.templates
        if templates is None:
            return plain_error(request, 500, NO_TEMPLATES)
        now = self.clock()
        today = datetime.fromtimestamp(now, UTC).date()
        default: Period = (Level.DAY, today)
        period = self._period(query or {}, default)
        if period is None:
            return plain_error(request, 400, "Invalid period")
        try:
            hashes = await fetch_mirror_hashes(self.redis)
        except Exception as e:
            log.debug("mirrorstats: {err}", err=e)
            return plain_error(request, 500, "Cannot fetch the list of mirrors")
        mirrors = [(i, name, m) for i, name, m, _ in hashes]
        families: dict[int, tuple[str, str]] = {}
        for i, _, _, fields in hashes:
            states = family_states(fields)
            if states:
                families[i] = family_cells((family, state) for _, family, state, _, _ in states)
        retention = self.config().StatsRetention
        days, months = last_days(today, SPARK_DAYS), last_months(today, SPARK_MONTHS)
        ids = [i for i, _, _ in mirrors]
        try:
            series = await mirror_series(self.redis, ids, [period, *days, *months], retention, today)
        except Exception as e:
            log.debug("mirrorstats: {err}", err=e)
            return plain_error(request, 500, "Cannot fetch stats")
        downloads = {i: points[0].downloads for i, points in series.items()}
        sizes = {i: points[0].bytes for i, points in series.items()}
        sparks = {i: (_spark(points[1:1 + SPARK_DAYS], "Last 30 days"),
                      _spark(points[1 + SPARK_DAYS:], "Last 12 months")) for i, points in series.items()}
        label = period_label(*period)
        notes: list[Tag] = []
        if ids:
            first = series[ids[0]]
            if first[0].pruned:
                notes.append(tags.p(f"The statistics of {label} were removed by the retention policy "
                                    "(StatsRetention).", class_="warning retention", id="period-pruned"))
            notes += retention_notes([
                ("Per-day", first[1:1 + SPARK_DAYS], f"{retention.DailyDays} days"),
                ("Per-month", first[1 + SPARK_DAYS:], f"{retention.MonthlyMonths} months")])
        history = MirrorStatsHistory(
            "Since 00:00 UTC" if period == default else f"In {label}",
            period_selector("", period, today, default), notes, sparks)
        rows = build_stats_rows([m for _, _, m in mirrors if m is not None], downloads, sizes, now, families)
        body = MirrorStatsBody(templates, rows, self.config().LocalJSPath, history)
        return await self._page(request, templates, "Mirrorstats", body)

    async def render_history(self, request: IRequest, query: dict[str, list[str]]) -> bytes:
        """``?mirrorstats=history``: the network's downloads and bytes over time (see web.history)."""
        templates = self.templates
        if templates is None:
            return plain_error(request, 500, NO_TEMPLATES)
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        default: Period = (Level.MONTH, today.replace(day=1))
        period = self._period(query, default)
        if period is None:
            return plain_error(request, 400, "Invalid period")
        try:
            mirrors = {i: m for i, _, m in await fetch_mirrors(self.redis) if m is not None}
            data = await fetch_history(self.redis, mirrors, period, self.config().StatsRetention, today)
        except Exception as e:
            log.debug("history: {err}", err=e)
            return plain_error(request, 500, "Cannot fetch stats")
        body = HistoryBody(templates.loaders["history.html"], data,
                           period_selector(HISTORY, period, today, default))
        return await self._page(request, templates, "Download history", body)


# ---------------------------------------------------------------------------------------------
# The plug-ins of the redirector's dispatch (mirrorbits.web.resource)


class Endpoints:
    """What ``app.get_pages()`` hands the redirector: the ``?stats``, ``?mirrorstats``,
    checksum and ``?mirrors`` handlers (``handler(request, ctx)`` with the dispatch's
    :class:`~mirrorbits.web.resource.RequestContext`) and the synchronous mirror-list renderer."""

    def __init__(self, app: Mirrorbits) -> None:
        self.app = app
        self.pages = Pages(app.config_holder, app.get_redis())
        self.file_info = FileInfoLoader(app.get_redis(), app.get_cache)

    def file_stats(self, request: server.Request, ctx: RequestContext) -> int:
        return deliver(request, ctx.config.Gzip, render_file_stats(
            request, self.app.get_redis(), ctx.config.Repository, ctx.url_path, query=ctx.query))

    def mirror_stats(self, request: server.Request, ctx: RequestContext) -> int:
        if (ctx.query.get("mirrorstats") or [""])[0] == HISTORY:
            return deliver(request, ctx.config.Gzip, self.pages.render_history(request, ctx.query))
        return deliver(request, ctx.config.Gzip, self.pages.render_mirrorstats(request, ctx.query))

    def checksum(self, request: server.Request, ctx: RequestContext) -> int:
        return deliver(request, ctx.config.Gzip, render_checksum(
            request, ctx.config.Repository, ctx.url_path, self.file_info, query=ctx.query))

    def mirrors_json(self, request: server.Request, ctx: RequestContext) -> int:
        return deliver(request, ctx.config.Gzip,
                       render_mirrors_json(request, self.app.get_redis(), query=ctx.query))

    def mirrorlist(self, request: server.Request, results: Results, torrent: bool = False) -> bytes:
        """The MIRRORLIST renderer, synchronous as the redirector wants it: the page has no
        asynchronous parts, so its flattening finishes at once."""
        out: list[bytes | Failure] = []
        d = defer.Deferred.fromCoroutine(self.pages.render_mirrorlist(request, results, torrent))
        d.addBoth(out.append)
        if not out:
            d.cancel()
            return plain_error(request, 500, "mirror list page did not render synchronously")
        result = out[0]
        if isinstance(result, bytes):
            return result
        log.failure("mirrorlist page failed", result)
        return plain_error(request, 500, str(result.value))
