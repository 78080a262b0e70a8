"""The mirror and file records, as stored in Redis by the Go original (schema v2).

Plain frozen values, no I/O: ``from_redis`` turns a Redis reply into a record with the Go readers'
semantics, ``*_to_redis`` gives the exact field/value text the Go writers produce.  Callers own the
connection and the commands.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

from mirrorbits.gocompat import (
    Float32,
    Zone,
    format_duration,
    format_float32,
    format_go_datetime,
    format_rfc3339nano,
    go_fields,
    go_json_marshal,
    parse_go_bool,
    parse_go_float,
    parse_go_int,
    parse_gts_offset,
    parse_rfc3339nano,
    zone_of_parsed_offset,
)

__all__ = [
    "MIRROR_FIELDS",
    "MIRROR_FIELD_BY_GO",
    "MIRROR_FIELD_BY_REDIS",
    "EmptyMirrorHash",
    "FieldKind",
    "FileInfo",
    "LOG_ADDED",
    "LOG_DISABLED",
    "LOG_EDITED",
    "LOG_ENABLED",
    "LOG_ERROR",
    "LOG_SCAN_COMPLETED",
    "LOG_SCAN_STARTED",
    "LOG_STATE_CHANGED",
    "Mirror",
    "MirrorField",
    "PROTO_HTTP",
    "PROTO_HTTPS",
    "PROTO_UNDEFINED",
    "SCANNER_FTP",
    "SCANNER_RSYNC",
    "mirror_log_json",
    "normalize_codes",
    "normalize_url",
    "render_mirror_log",
]

#: Scanner types (``lastSuccessfulSyncProtocol``, log ``Typ``).
SCANNER_RSYNC = 0
SCANNER_FTP = 1

#: Protocols of a state change log entry (``Proto``).
PROTO_UNDEFINED = 0
PROTO_HTTP = 1
PROTO_HTTPS = 2

#: Per-mirror log entry types (``MIRRORLOGS_<id>`` ``Type``).
LOG_ERROR = 1
LOG_ADDED = 2
LOG_EDITED = 3
LOG_ENABLED = 4
LOG_DISABLED = 5
LOG_STATE_CHANGED = 6
LOG_SCAN_STARTED = 7
LOG_SCAN_COMPLETED = 8


class EmptyMirrorHash(ValueError):
    """``HGETALL MIRROR_<id>`` returned nothing: the mirror does not exist (or was removed)."""


def _text(v: str | bytes) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v


def normalize_codes(s: str) -> str:
    """Country/continent code lists as the RPC save stores them: commas become spaces, split on
    white space, upper-cased, joined by single spaces (``fr,de  be`` -> ``FR DE BE``)."""
    # Go strings.ToUpper maps rune by rune; keep characters whose upper case is not one rune.
    return " ".join(
        "".join(c.upper() if len(c.upper()) == 1 else c for c in code)
        for code in go_fields(s.replace(",", " "))
    )


def normalize_url(url: str) -> str:
    """Scan and HTTP URLs get a trailing ``/`` on save (an empty URL stays empty)."""
    return url + "/" if url and not url.endswith("/") else url


def _p_int64(s: str) -> int:
    return parse_go_int(s, 64)


def _parse_f32(s: str) -> float:
    return Float32(parse_go_float(s, 32))


def _bool_text(b: bool) -> str:
    return "1" if b else "0"


@dataclass(frozen=True, slots=True)
class Mirror:
    """One ``MIRROR_<id>`` hash.  Times are Unix seconds, ``None`` when the field is absent (Go's
    zero time); ``0`` is a real time (1970-01-01).  Latitude/longitude are float32 values."""

    id: int = 0
    name: str = ""
    http_url: str = ""
    rsync_url: str = ""
    ftp_url: str = ""
    sponsor_name: str = ""
    sponsor_url: str = ""
    sponsor_logo_url: str = ""
    admin_name: str = ""
    admin_email: str = ""
    custom_data: str = ""
    continent_only: bool = False
    country_only: bool = False
    as_only: bool = False
    score: int = 0
    latitude: float = 0.0
    longitude: float = 0.0
    continent_code: str = ""
    country_codes: str = ""
    excluded_country_codes: str = ""
    asnum: int = 0
    comment: str = ""
    enabled: bool = False
    http_up: bool = False
    https_up: bool = False
    http_down_reason: str = ""
    https_down_reason: str = ""
    state_since: int | None = None
    #: 0 = follow the global DisallowRedirects, 1 = allowed, 2 = forbidden.
    allow_redirects: int = 0
    #: Offset between the mirror's clock and ours, milliseconds.
    tz_offset: int = 0
    last_sync: int | None = None
    last_successful_sync: int | None = None
    #: SCANNER_RSYNC or SCANNER_FTP.
    last_successful_sync_protocol: int = 0
    #: Precision of the mtimes of the last successful scan, nanoseconds (0 = exact).
    last_successful_sync_precision: int = 0
    last_mod_time: int | None = None

    def __post_init__(self) -> None:
        # Go holds these as float32: keep them rounded and tagged so JSON writes the short form.
        object.__setattr__(self, "latitude", Float32(self.latitude))
        object.__setattr__(self, "longitude", Float32(self.longitude))

    # -- reading ------------------------------------------------------------------------------

    @classmethod
    def from_redis(cls, h: Mapping[str, str] | Mapping[bytes, bytes] | Mapping[str | bytes, str | bytes]) -> Mirror:
        """Build from an ``HGETALL MIRROR_<id>`` reply with the Go reader's rules: a missing field
        takes the zero value, unknown fields are ignored, and any field that fails to parse fails
        the whole load (ValueError naming the field).  An empty hash raises EmptyMirrorHash."""
        if not h:
            raise EmptyMirrorHash("mirror hash is empty")
        kwargs: dict[str, object] = {}
        for key, value in h.items():
            field = _text(key)
            spec = MIRROR_FIELD_BY_REDIS.get(field)
            if spec is None:
                continue
            text = _text(value)
            try:
                kwargs[spec.attr] = spec.parse(text)
            except ValueError as exc:
                raise ValueError(f"mirror field {field!r}: cannot parse {text!r}: {exc}") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    # -- writing ------------------------------------------------------------------------------

    def normalized(self) -> Mirror:
        """The record as the RPC save stores it (codes upper-cased and space-separated, URLs
        ending with ``/``).  ``config_fields_to_redis`` does not normalise by itself."""
        return replace(
            self,
            http_url=normalize_url(self.http_url),
            rsync_url=normalize_url(self.rsync_url),
            ftp_url=normalize_url(self.ftp_url),
            continent_code=normalize_codes(self.continent_code),
            country_codes=normalize_codes(self.country_codes),
            excluded_country_codes=normalize_codes(self.excluded_country_codes),
        )

    def config_fields_to_redis(self) -> list[tuple[str, str]]:
        """The field/value pairs of the RPC save's ``HMSET MIRROR_<id>``, in the Go order, plus the
        forced-down flag of the protocol an ``http://``/``https://``-only URL does not serve."""
        pairs = [
            ("ID", str(self.id)),
            ("name", self.name),
            ("http", self.http_url),
            ("rsync", self.rsync_url),
            ("ftp", self.ftp_url),
            ("sponsorName", self.sponsor_name),
            ("sponsorURL", self.sponsor_url),
            ("sponsorLogo", self.sponsor_logo_url),
            ("adminName", self.admin_name),
            ("adminEmail", self.admin_email),
            ("customData", self.custom_data),
            ("continentOnly", _bool_text(self.continent_only)),
            ("countryOnly", _bool_text(self.country_only)),
            ("asOnly", _bool_text(self.as_only)),
            ("score", str(self.score)),
            ("latitude", format_float32(self.latitude)),
            ("longitude", format_float32(self.longitude)),
            ("continentCode", self.continent_code),
            ("countryCodes", self.country_codes),
            ("excludedCountryCodes", self.excluded_country_codes),
            ("asnum", str(self.asnum)),
            ("comment", self.comment),
            ("allowredirects", str(self.allow_redirects)),
            ("enabled", _bool_text(self.enabled)),
        ]
        if self.http_url.startswith("http://"):
            pairs.append(("httpsUp", "0"))
        elif self.http_url.startswith("https://"):
            pairs.append(("httpUp", "0"))
        return pairs

    def to_redis(self) -> list[tuple[str, str]]:
        """Every field of the record in Go's encodings (absent times are left out), e.g. to
        write a fixture exactly as a Go node would have left it."""
        out: list[tuple[str, str]] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            redis_field = _ATTR_TO_FIELD[f.name]
            if isinstance(value, bool):
                out.append((redis_field, _bool_text(value)))
            elif isinstance(value, float):
                out.append((redis_field, format_float32(value)))
            else:
                out.append((redis_field, str(value)))
        return out

    # -- protocol rules -----------------------------------------------------------------------

    def is_up(self) -> bool:
        """Go ``IsUp``: both flags agree -> that value; else the flag of the URL's only scheme;
        a scheme-less URL with one protocol up and one down is *not* up."""
        if self.http_up == self.https_up:
            return self.http_up
        if self.http_url.startswith("http://"):
            return self.http_up
        if self.http_url.startswith("https://"):
            return self.https_up
        return False

    @property
    def country_list(self) -> list[str]:
        """``CountryCodes`` split on white space (Go ``CountryFields``)."""
        return go_fields(self.country_codes)


#: How a field's text is read and written: the Go type behind it.
FieldKind = Literal["str", "bool", "int", "uint", "int8", "float32", "time", "redirects"]


def _p_int8(s: str) -> int:
    return parse_go_int(s, 8)


def _p_uint(s: str) -> int:
    return parse_go_int(s, 64, signed=False)


_PARSERS: dict[str, Callable[[str], object]] = {
    "str": str,
    "bool": parse_go_bool,
    "int": _p_int64,
    "uint": _p_uint,
    "int8": _p_int8,
    "float32": _parse_f32,
    "time": _p_int64,
    "redirects": _p_int64,
}


@dataclass(frozen=True, slots=True)
class MirrorField:
    """One field of the Go ``Mirror`` struct: its ``MIRROR_<id>`` hash field (``redis``), the
    :class:`Mirror` attribute, the Go name (YAML key of ``show``/``edit``, JSON key of the
    answers and exports) and its kind.  ``yaml`` marks the fields of the editable document."""

    redis: str
    attr: str
    go: str
    kind: FieldKind
    yaml: bool = True

    @property
    def parse(self) -> Callable[[str], object]:
        """The redigo reader of the field's text (ValueError when it does not parse)."""
        return _PARSERS[self.kind]


#: Every stored mirror field, in the Go struct's order: the one table the readers, the writers,
#: the CLI documents and selection derive from.
MIRROR_FIELDS: tuple[MirrorField, ...] = (
    MirrorField("ID", "id", "ID", "int", yaml=False),
    MirrorField("name", "name", "Name", "str"),
    MirrorField("http", "http_url", "HttpURL", "str"),
    MirrorField("rsync", "rsync_url", "RsyncURL", "str"),
    MirrorField("ftp", "ftp_url", "FtpURL", "str"),
    MirrorField("sponsorName", "sponsor_name", "SponsorName", "str"),
    MirrorField("sponsorURL", "sponsor_url", "SponsorURL", "str"),
    MirrorField("sponsorLogo", "sponsor_logo_url", "SponsorLogoURL", "str"),
    MirrorField("adminName", "admin_name", "AdminName", "str"),
    MirrorField("adminEmail", "admin_email", "AdminEmail", "str"),
    MirrorField("customData", "custom_data", "CustomData", "str"),
    MirrorField("continentOnly", "continent_only", "ContinentOnly", "bool"),
    MirrorField("countryOnly", "country_only", "CountryOnly", "bool"),
    MirrorField("asOnly", "as_only", "ASOnly", "bool"),
    MirrorField("score", "score", "Score", "int"),
    MirrorField("latitude", "latitude", "Latitude", "float32"),
    MirrorField("longitude", "longitude", "Longitude", "float32"),
    MirrorField("continentCode", "continent_code", "ContinentCode", "str"),
    MirrorField("countryCodes", "country_codes", "CountryCodes", "str"),
    MirrorField("excludedCountryCodes", "excluded_country_codes", "ExcludedCountryCodes", "str"),
    MirrorField("asnum", "asnum", "ASNum", "uint"),
    MirrorField("comment", "comment", "Comment", "str", yaml=False),
    MirrorField("enabled", "enabled", "Enabled", "bool"),
    MirrorField("httpUp", "http_up", "HttpUp", "bool", yaml=False),
    MirrorField("httpsUp", "https_up", "HttpsUp", "bool", yaml=False),
    MirrorField("httpDownReason", "http_down_reason", "HttpDownReason", "str", yaml=False),
    MirrorField("httpsDownReason", "https_down_reason", "HttpsDownReason", "str", yaml=False),
    MirrorField("stateSince", "state_since", "StateSince", "time", yaml=False),
    MirrorField("allowredirects", "allow_redirects", "AllowRedirects", "redirects"),
    MirrorField("tzoffset", "tz_offset", "TZOffset", "int", yaml=False),
    MirrorField("lastSync", "last_sync", "LastSync", "time", yaml=False),
    MirrorField("lastSuccessfulSync", "last_successful_sync", "LastSuccessfulSync", "time", yaml=False),
    MirrorField("lastSuccessfulSyncProtocol", "last_successful_sync_protocol", "LastSuccessfulSyncProtocol",
                "int8", yaml=False),
    MirrorField("lastSuccessfulSyncPrecision", "last_successful_sync_precision", "LastSuccessfulSyncPrecision",
                "int", yaml=False),
    MirrorField("lastModTime", "last_mod_time", "LastModTime", "time", yaml=False),
)
#: Hash field -> its description.
MIRROR_FIELD_BY_REDIS: dict[str, MirrorField] = {f.redis: f for f in MIRROR_FIELDS}
#: Go name (YAML/JSON key) -> its description.
MIRROR_FIELD_BY_GO: dict[str, MirrorField] = {f.go: f for f in MIRROR_FIELDS}
_ATTR_TO_FIELD = {f.attr: f.redis for f in MIRROR_FIELDS}


# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A ``FILE_<path>`` (or ``FILEINFO_<id>_<path>``) hash.  ``mod_time_ns`` is epoch
    nanoseconds, ``None`` for Go's zero time; ``mod_time_offset`` is the UTC offset (seconds)
    written in the stored string, which the JSON ``ModTime`` keeps."""

    path: str
    size: int = 0
    mod_time_ns: int | None = None
    sha1: str = ""
    sha256: str = ""
    md5: str = ""
    mod_time_offset: int = 0

    @classmethod
    def from_redis(cls, path: str, reply: Sequence[str | bytes | None]) -> FileInfo:
        """From ``HMGET <key> size modTime sha1 sha256 md5`` (missing entries are ``None``; a
        shorter reply, e.g. ``HMGET … size modTime``, leaves the hashes empty).  Like the Go cache
        this never fails: an invalid size reads as 0, an unparseable modTime as the zero time."""
        vals = [("" if v is None else _text(v)) for v in reply] + [""] * (5 - len(reply))
        size_text, mod_text, sha1, sha256, md5 = vals[:5]
        try:
            size = parse_go_int(size_text, 64)
        except ValueError:
            size = 0
        parsed = parse_gts_offset(mod_text)
        mod_ns, offset = parsed if parsed is not None else (None, 0)
        return cls(path, size, mod_ns, sha1, sha256, md5, offset)

    def mod_time_rfc3339(self) -> str:
        """The JSON ``ModTime``: RFC 3339 in the offset that was stored (``Z`` when 0)."""
        return format_rfc3339nano(self.mod_time_ns, self.mod_time_offset)


# ---------------------------------------------------------------------------------------------------
# MIRRORLOGS_<id>


def mirror_log_json(type_: int, mirror_id: int, timestamp_ns: int, /, *, zone: Zone = "local",
                    **extra: object) -> str:
    """One ``MIRRORLOGS_<id>`` element exactly as Go's ``json.Marshal`` writes it: keys ``Type``,
    ``MirrorID``, ``Timestamp`` (RFC 3339 with nanoseconds in the daemon's zone), then the extra
    keys in the order given, e.g. ``Proto=2, Up=False, Reason="Unreachable"``."""
    doc: dict[str, object] = {
        "Type": type_,
        "MirrorID": mirror_id,
        "Timestamp": format_rfc3339nano(timestamp_ns, zone),
    }
    doc.update(extra)
    return go_json_marshal(doc)


def _log_int(obj: Mapping[str, object], key: str) -> int:
    v = obj.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and v != int(v)):
        raise ValueError(key)
    return int(v)


def _log_str(obj: Mapping[str, object], key: str) -> str:
    v = obj.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ValueError(key)
    return v


def _log_bool(obj: Mapping[str, object], key: str) -> bool:
    v = obj.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ValueError(key)
    return v


def _log_text(typ: int, obj: Mapping[str, object]) -> str:
    if typ == LOG_ERROR:
        return "Error: " + _log_str(obj, "Err")
    if typ == LOG_ADDED:
        return "Mirror added"
    if typ == LOG_EDITED:
        return "Mirror edited"
    if typ == LOG_ENABLED:
        return "Mirror enabled"
    if typ == LOG_DISABLED:
        return "Mirror disabled"
    if typ == LOG_STATE_CHANGED:
        proto = _log_int(obj, "Proto")
        subject = {PROTO_HTTP: "HTTP mirror", PROTO_HTTPS: "HTTPS mirror"}.get(proto, "Mirror")
        reason = _log_str(obj, "Reason")
        family = _log_str(obj, "Family")  # not a Go key: a per-family state (SelectByIPFamily)
        if family:
            if _log_bool(obj, "NoAddress"):
                return f"{subject} has no {family} address"
            subject = f"{subject} over {family}"
        if _log_bool(obj, "Up"):
            return f"{subject} is up"
        return f"{subject} is down: {reason}" if reason else f"{subject} is down"
    if typ == LOG_SCAN_STARTED:
        scanner = _log_int(obj, "Typ")
        if scanner == SCANNER_RSYNC:
            return "RSYNC scan started"
        if scanner == SCANNER_FTP:
            return "FTP scan started"
        return "Scan started using a unknown protocol"
    if typ == LOG_SCAN_COMPLETED:
        files, known, removed = (_log_int(obj, k) for k in ("FilesIndexed", "KnownIndexed", "Removed"))
        text = f"Scan completed: {files} files ({known} known), {removed} removed"
        tz = _log_int(obj, "TZOffset")
        if tz:
            text += f" (corrected timezone offset: {format_duration(tz * 1_000_000)})"
        return text
    raise ValueError("unknown type")


def render_mirror_log(line: str | bytes) -> str | None:
    """``<timestamp>: <text>`` for one stored log element, as ``mirrorbits logs`` prints it
    (timestamp ``2006-01-02 15:04:05 MST`` in the zone carried by the stored value).  ``None``
    for an element Go would skip with a warning (bad JSON, unknown type, wrong field types)."""
    try:
        obj = json.loads(_text(line))
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    typf = obj.get("Type")
    if isinstance(typf, bool) or not isinstance(typf, (int, float)) or not math.isfinite(typf):
        return None
    try:
        text = _log_text(int(typf), obj)
    except ValueError:
        return None
    ts = obj.get("Timestamp")
    if ts is None:
        stamp = format_go_datetime(None)
    else:
        if not isinstance(ts, str):
            return None
        parsed = parse_rfc3339nano(ts)
        if parsed is None:
            return None
        ns, offset = parsed
        stamp = format_go_datetime(ns, zone_of_parsed_offset(ns, offset))
    return f"{stamp}: {text}"
