"""Answers of the mirror handler: the 302 redirect, the JSON document, Go's plain errors.

Why a module of its own: the byte-level details (header sets, Go JSON field order and number
formats, Location escaping) are the compatibility contract with existing clients, and they are
shared by the mirror-list page and the download log, which take the same :class:`Results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.web.iweb import IRequest

from mirrorbits.geo import EMPTY_RECORD, GeoRecord
from mirrorbits.gocompat import ZERO_RFC3339, Float32, format_rfc3339nano, go_json_dumps
from mirrorbits.model import FileInfo, Mirror
from mirrorbits.selection import Candidate, Chosen, Excluded
from mirrorbits.twistedcompat import header_table

__all__ = [
    "REDIRECT",
    "JSON",
    "MIRRORLIST",
    "Results",
    "escape_location",
    "file_info_document",
    "mirror_document",
    "plain_error",
    "redirect_header_parts",
    "redirect_parts",
    "redirect_pieces",
    "render_json",
    "render_redirect",
    "results_document",
]

#: Renderer type names, as the download log writes them.
REDIRECT = "REDIRECT"
JSON = "JSON"
MIRRORLIST = "MIRRORLIST"

_TEXT_PLAIN = b"text/plain; charset=utf-8"
_TEXT_HTML = b"text/html; charset=utf-8"
_APPLICATION_JSON = b"application/json; charset=utf-8"
_NO_CACHE = b"private, no-cache"


@dataclass(slots=True)
class Results:
    """Go's ``mirrors.Results``: everything a renderer, the page and the log line need.

    ``ip`` is the client IP string exactly as extracted; ``client`` the GeoIP record;
    ``mirror_list`` in redirect-priority order; ``excluded`` in filter order; ``error`` the
    selection error text (not serialised).
    """

    file_info: FileInfo
    ip: str = ""
    client: GeoRecord = EMPTY_RECORD
    mirror_list: list[Chosen] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    fallback: bool = False
    local_js_path: str = ""
    error: str | None = None


def plain_error(request: IRequest, code: int, text: str) -> bytes:
    """Go's ``http.Error``: text/plain, nosniff, body ``<text>\\n``."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", _TEXT_PLAIN)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    return (text + "\n").encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------
# Redirect

_LOC_ESCAPES = tuple(chr(b) if b < 0x80 else f"%{b:02x}" for b in range(256))


def escape_location(url: str) -> bytes:
    """Go ``hexEscapeNonASCII``: bytes >= 0x80 become ``%xx`` (lower-case hex); ASCII is kept."""
    return _escape_raw(url.encode("utf-8", "surrogateescape"))


def _escape_raw(raw: bytes) -> bytes:
    """:func:`escape_location` of a URL already encoded."""
    if raw.isascii():
        return raw
    return "".join([_LOC_ESCAPES[b] for b in raw]).encode("ascii")


def _header_safe(value: bytes) -> bytes:
    """What twisted's ``setRawHeaders`` stores: CR/LF line breaks become single spaces."""
    return b" ".join(value.splitlines()) if b"\r" in value or b"\n" in value else value


_PRIORITIES = [b"%d" % k for k in range(64)]

#: Of one mirror for one file: (``Location`` value, ``Link`` value up to ``pri=``, ``; geo=cc``,
#: then the same two ``Link`` parts as wire pieces: ``Link: `` before, CRLF after).
HeaderParts = tuple[bytes, bytes, bytes, bytes, bytes]


def redirect_header_parts(ch: Chosen, rel: str) -> HeaderParts:
    """The :data:`HeaderParts` for one chosen mirror, already as twisted would store them (see
    :func:`render_redirect`)."""
    cc = ch.candidate.country_list
    geo = _geo_parts(cc[0] if cc else "")
    raw = (ch.absolute_url + rel).encode("utf-8", "surrogateescape")
    link = _header_safe(b"<" + raw + b">; rel=duplicate; pri=")
    return (_header_safe(_escape_raw(raw)), link, geo[0], b"Link: " + link, geo[1])


#: ``; geo=cc`` of a mirror's first country code, and the same with CRLF, per code.  Why: a
#: cold file formats the parts of each mirror it redirects to, and the codes are a handful.
_GEO_PARTS: dict[str, tuple[bytes, bytes]] = {}


def _geo_parts(code: str) -> tuple[bytes, bytes]:
    parts = _GEO_PARTS.get(code)
    if parts is None:
        geo = _header_safe(f"; geo={code.lower()}".encode("utf-8", "surrogateescape"))
        if len(_GEO_PARTS) >= 4096:
            _GEO_PARTS.clear()
        parts = _GEO_PARTS[code] = (geo, geo + b"\r\n")
    return parts


def redirect_parts(results: Results, max_link_headers: int,
                   parts_cache: dict[Candidate, HeaderParts] | None = None) -> list[HeaderParts]:
    """The header parts (:func:`redirect_header_parts`) of a redirect's mirrors: the first one
    (``Location``), then the alternatives for the next ``max_link_headers`` (``Link``, by
    priority 1, 2, …).

    ``parts_cache``: per-candidate parts kept by the caller for one file and one scheme option
    (the redirector keeps them on its file plan), so the hot path formats no URL.
    """
    mlist = results.mirror_list
    cache: dict[Candidate, HeaderParts] = {} if parts_cache is None else parts_cache
    out = []
    for ch in mlist[:max_link_headers + 1] if max_link_headers > 0 else mlist[:1]:
        p = cache.get(ch.candidate)
        if p is None:
            p = cache[ch.candidate] = redirect_header_parts(ch, _relative(results))
        out.append(p)
    return out


def _relative(results: Results) -> str:
    """The file's path as it follows a mirror's base URL."""
    path = results.file_info.path
    return path[1:] if path.startswith("/") else path


def _priority(k: int) -> bytes:
    """The ``pri=`` value of the k-th alternative."""
    return _PRIORITIES[k] if k < len(_PRIORITIES) else b"%d" % k


def render_redirect(request: IRequest, results: Results, max_link_headers: int,
                    parts_cache: dict[Candidate, HeaderParts] | None = None) -> bytes:
    """302 to the first mirror, ``Link`` alternatives for the next ``max_link_headers``, empty body.

    The values (:func:`redirect_parts`) go straight into the response's header table
    (:func:`~mirrorbits.twistedcompat.header_table`): they were checked when made.
    """
    parts = redirect_parts(results, max_link_headers, parts_cache)
    headers = header_table(request.responseHeaders)
    if len(parts) > 1:
        headers[b"Link"] = [p[1] + _priority(k) + p[2] for k, p in enumerate(parts[1:], 1)]
    headers[b"Content-Type"] = [_TEXT_HTML]
    headers[b"Cache-Control"] = [_NO_CACHE]
    headers[b"Location"] = [parts[0][0]]
    request.setResponseCode(302)
    return b""


#: What follows the ``Link`` lines of :func:`render_redirect`'s headers, up to ``Location``'s value.
_REDIRECT_MIDDLE = (b"Content-Type: " + _TEXT_HTML + b"\r\nCache-Control: " + _NO_CACHE
                    + b"\r\nLocation: ")


def redirect_pieces(results: Results, max_link_headers: int,
                    parts_cache: dict[Candidate, HeaderParts] | None, out: list[bytes]) -> None:
    """Append to ``out`` the header lines :func:`render_redirect` sets, in its order, as they go
    on the wire (each ending with CRLF), in pieces for one join: the lean lane writes them
    without a request object.  (:func:`redirect_parts`' walk is written out here: this runs for
    every redirect of the lean lane.)"""
    mlist = results.mirror_list
    if not mlist:
        raise ValueError("a redirect needs a mirror")
    cache: dict[Candidate, HeaderParts] = {} if parts_cache is None else parts_cache
    get = cache.get
    location = b""
    for k, ch in enumerate(mlist[:max_link_headers + 1] if max_link_headers > 0 else mlist[:1]):
        p = get(ch.candidate)
        if p is None:
            p = cache[ch.candidate] = redirect_header_parts(ch, _relative(results))
        if k:
            out += (p[3], _PRIORITIES[k] if k < 64 else b"%d" % k, p[4])
        else:
            location = p[0]
    out += (_REDIRECT_MIDDLE, location, b"\r\n")


# ---------------------------------------------------------------------------------------------
# JSON


def _time(secs: int | None) -> str:
    """A Unix-seconds time of a mirror hash, in the server's local zone; None = zero time."""
    if secs is None:
        return ZERO_RFC3339
    return format_rfc3339nano(secs * 1_000_000_000, "local")


def _mirror_head_tail(m: Mirror) -> tuple[list[tuple[str, object]], list[tuple[str, object]]]:
    head: list[tuple[str, object]] = [
        ("ID", m.id), ("Name", m.name), ("HttpURL", m.http_url), ("RsyncURL", m.rsync_url),
        ("FtpURL", m.ftp_url), ("SponsorName", m.sponsor_name), ("SponsorURL", m.sponsor_url),
        ("SponsorLogoURL", m.sponsor_logo_url), ("AdminName", m.admin_name),
        ("AdminEmail", m.admin_email), ("CustomData", m.custom_data),
        ("ContinentOnly", m.continent_only), ("CountryOnly", m.country_only), ("ASOnly", m.as_only),
        ("Score", m.score), ("Latitude", Float32(m.latitude)), ("Longitude", Float32(m.longitude)),
        ("ContinentCode", m.continent_code), ("CountryCodes", m.country_codes),
        ("ExcludedCountryCodes", m.excluded_country_codes), ("Asnum", m.asnum),
        ("Comment", m.comment), ("Enabled", m.enabled),
    ]
    if m.http_down_reason:
        head.append(("HttpDownReason", m.http_down_reason))
    if m.https_down_reason:
        head.append(("HttpsDownReason", m.https_down_reason))
    head.append(("StateSince", _time(m.state_since)))
    if m.allow_redirects:
        head.append(("AllowRedirects", m.allow_redirects))
    tail: list[tuple[str, object]] = [
        ("LastSync", _time(m.last_sync)), ("LastSuccessfulSync", _time(m.last_successful_sync)),
        ("LastSuccessfulSyncProtocol", m.last_successful_sync_protocol),
        ("LastSuccessfulSyncPrecision", m.last_successful_sync_precision),
        ("LastModTime", _time(m.last_mod_time)),
    ]
    return head, tail


def _pseudo_mirror(ch: Chosen | Excluded) -> Mirror:
    """A fallback pseudo-mirror as a record (everything but ID, name, URL and codes is zero)."""
    c = ch.candidate
    return Mirror(id=c.id, name=c.name, http_url=c.http_url, country_codes=c.country_codes,
                  continent_code=c.continent_code)


def mirror_document(ch: Chosen | Excluded) -> dict[str, object]:
    """One Mirror object in Go's field order."""
    src = ch.candidate.source
    if src is not None:
        parts = src.json_parts
        if parts is None:
            parts = src.json_parts = _mirror_head_tail(ch.candidate.mirror)
    else:
        parts = _mirror_head_tail(_pseudo_mirror(ch))
    head, tail = parts
    doc = dict(head)
    doc["Distance"] = Float32(ch.distance)
    doc["ComputedScore"] = ch.computed_score if isinstance(ch, Chosen) else 0
    doc.update(tail)
    doc["AbsoluteURL"] = ch.absolute_url
    reason = ch.reason if isinstance(ch, Excluded) else ""
    if reason:
        doc["ExcludeReason"] = reason
    return doc


def file_info_document(fi: FileInfo) -> dict[str, object]:
    doc: dict[str, object] = {"Path": fi.path}
    if fi.size:
        doc["Size"] = fi.size
    doc["ModTime"] = fi.mod_time_rfc3339()
    if fi.sha1:
        doc["Sha1"] = fi.sha1
    if fi.sha256:
        doc["Sha256"] = fi.sha256
    if fi.md5:
        doc["Md5"] = fi.md5
    return doc


def _client_document(rec: GeoRecord) -> dict[str, object]:
    return {
        "CountryCode": rec.country_code, "ContinentCode": rec.continent_code, "City": rec.city,
        "Country": rec.country, "Latitude": Float32(rec.latitude),
        "Longitude": Float32(rec.longitude), "ASName": rec.as_name, "ASNum": rec.as_num,
    }


def results_document(results: Results) -> dict[str, object]:
    """The JSON renderer's document, keys in Go's order."""
    doc: dict[str, object] = {
        "FileInfo": file_info_document(results.file_info),
        "IP": results.ip,
        "ClientInfo": _client_document(results.client),
        "MirrorList": [mirror_document(ch) for ch in results.mirror_list],
    }
    if results.excluded:
        doc["ExcludedList"] = [mirror_document(ex) for ex in results.excluded]
    if results.fallback:
        doc["Fallback"] = True
    doc["LocalJSPath"] = results.local_js_path
    return doc


def render_json(request: IRequest, results: Results, pretty: bool) -> bytes:
    """200 with the Results document; ``?pretty`` is indented and gets a Content-Length."""
    body = go_json_dumps(results_document(results), pretty=pretty).encode("utf-8", "surrogateescape")
    request.setHeader(b"Content-Type", _APPLICATION_JSON)
    request.setHeader(b"Cache-Control", _NO_CACHE)
    request.setResponseCode(200)
    return body
