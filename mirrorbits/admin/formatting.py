"""Pure renderers for the ``mirrorbits`` CLI's stdout text (cli-and-admin.md §3, §5–§8).

Scripts parse the Go CLI's output, so every function here returns the exact bytes the Go client prints
(TABs included where the Go code goes through ``text/tabwriter``). Inputs are plain values: a mirror is
any mapping of ``MIRROR_<id>`` hash fields as read from Redis (``name``, ``http``, ``httpUp``, ...; raw
strings are fine), or the Go/YAML names (``Name``, ``HttpURL``), or an object with snake_case attributes
(``http_url``, ``https_up``), so the record class from :mod:`mirrorbits.model` can be passed as is.

Deliberate deviations from Go (each one fixes a crash or a misleading output; see the spec §13):

* ``export mirmon`` of a mirror without country code prints ``--`` as its country (Go panicked);
* the YAML diff of documents with a different number of lines pairs the common prefix by index and then
  lists the extra lines on one side only (Go crashed on a shorter new document);
* ``list`` can optionally show the down reason (``show_reason``); off by default, so the bytes match Go.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from mirrorbits import gocompat
from mirrorbits.admin.tabwriter import tabulate
from mirrorbits.gocompat import parse_go_int, parse_go_uint

__all__ = [
    "MIRROR_YAML_KEYS",
    "ListOptions",
    "ExportOptions",
    "VersionInfo",
    "mirror_state",
    "mirror_is_up",
    "mirror_down_reason",
    "format_list",
    "mirror_yaml",
    "format_show",
    "yaml_diff",
    "format_edit_success",
    "edit_file_text",
    "split_edit_file",
    "EDIT_COMMENT_SEPARATOR",
    "format_mirmon",
    "format_export_json",
    "format_export_csv",
    "parse_stats_date",
    "parse_stats_date_strict",
    "stats_key_coverage",
    "readable_size",
    "format_stats_file",
    "format_stats_mirror",
    "render_log_entry",
    "format_logs",
    "go_duration",
    "format_version_block",
    "format_version",
    "fatal_line",
    "format_add_success",
    "format_scan_result",
    "format_float32",
    "rfc1123_utc",
]

# ---------------------------------------------------------------------------------------------------
# Reading mirror records

# (Redis hash field, Go/YAML/RPC name, snake_case attribute)
_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ID", "ID", "id"),
    ("name", "Name", "name"),
    ("http", "HttpURL", "http_url"),
    ("rsync", "RsyncURL", "rsync_url"),
    ("ftp", "FtpURL", "ftp_url"),
    ("sponsorName", "SponsorName", "sponsor_name"),
    ("sponsorURL", "SponsorURL", "sponsor_url"),
    ("sponsorLogo", "SponsorLogoURL", "sponsor_logo_url"),
    ("adminName", "AdminName", "admin_name"),
    ("adminEmail", "AdminEmail", "admin_email"),
    ("customData", "CustomData", "custom_data"),
    ("continentOnly", "ContinentOnly", "continent_only"),
    ("countryOnly", "CountryOnly", "country_only"),
    ("asOnly", "ASOnly", "as_only"),
    ("score", "Score", "score"),
    ("latitude", "Latitude", "latitude"),
    ("longitude", "Longitude", "longitude"),
    ("continentCode", "ContinentCode", "continent_code"),
    ("countryCodes", "CountryCodes", "country_codes"),
    ("excludedCountryCodes", "ExcludedCountryCodes", "excluded_country_codes"),
    ("asnum", "ASNum", "asnum"),
    ("comment", "Comment", "comment"),
    ("enabled", "Enabled", "enabled"),
    ("allowredirects", "AllowRedirects", "allow_redirects"),
    ("httpUp", "HttpUp", "http_up"),
    ("httpsUp", "HttpsUp", "https_up"),
    ("httpDownReason", "HttpDownReason", "http_down_reason"),
    ("httpsDownReason", "HttpsDownReason", "https_down_reason"),
    ("stateSince", "StateSince", "state_since"),
    ("lastSync", "LastSync", "last_sync"),
    ("lastSuccessfulSync", "LastSuccessfulSync", "last_successful_sync"),
    ("lastModTime", "LastModTime", "last_mod_time"),
)
_ALIASES = {f[0]: f for f in _FIELDS}
_MISSING = object()


def _raw(m: Any, field: str) -> Any:
    names = _ALIASES.get(field, (field, field, field))
    if isinstance(m, Mapping):
        for n in names:
            if n in m:
                return m[n]
        # Redis replies may come back as bytes keys.
        for n in names:
            b = n.encode()
            if b in m:
                return m[b]
        return _MISSING
    for n in (names[2], names[1], names[0]):
        if hasattr(m, n):
            return getattr(m, n)
    return _MISSING


def _str(m: Any, field: str) -> str:
    v = _raw(m, field)
    if v is _MISSING or v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})


def _bool(m: Any, field: str) -> bool:
    v = _raw(m, field)
    if v is _MISSING or v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    return str(v) in _TRUE


def _int(m: Any, field: str) -> int:
    v = _raw(m, field)
    if v is _MISSING or v is None or v == "" or v == b"":
        return 0
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    try:
        return int(str(v).strip())
    except ValueError:
        return 0


def _float(m: Any, field: str) -> float:
    v = _raw(m, field)
    if v is _MISSING or v is None or v == "" or v == b"":
        return 0.0
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


_GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(m: Any, field: str) -> datetime:
    """A Unix-seconds field as an aware UTC datetime; missing/empty is Go's zero time (year 1)."""
    v = _raw(m, field)
    if v is _MISSING or v is None or v == "" or v == b"":
        return _GO_ZERO_TIME
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    try:
        secs = int(v.decode() if isinstance(v, bytes) else v)
    except (TypeError, ValueError):
        return _GO_ZERO_TIME
    try:
        return _EPOCH + timedelta(seconds=secs)
    except OverflowError:
        return _GO_ZERO_TIME


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc1123_utc(t: datetime) -> str:
    """Go's ``time.RFC1123`` of a UTC time: ``Mon, 02 Jan 2006 15:04:05 UTC`` (English names)."""
    t = t.astimezone(UTC)
    return (f"{_WEEKDAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} UTC")


# ---------------------------------------------------------------------------------------------------
# list


def _url_kind(http_url: str) -> str:
    if http_url.startswith("http://"):
        return "http"
    if http_url.startswith("https://"):
        return "https"
    return "both"


def mirror_state(m: Any) -> str:
    """The STATE text of ``list`` and ``stats mirror``: disabled, up, down, up/down or down/up."""
    if not _bool(m, "enabled"):
        return "disabled"
    http_up, https_up = _bool(m, "httpUp"), _bool(m, "httpsUp")
    kind = _url_kind(_str(m, "http"))
    if kind == "http":
        return "up" if http_up else "down"
    if kind == "https":
        return "up" if https_up else "down"
    if http_up == https_up:
        return "up" if http_up else "down"
    return f"{'up' if http_up else 'down'}/{'up' if https_up else 'down'}"


def mirror_is_up(m: Any) -> bool:
    """Whether the mirror counts as up for ``list -down`` (a half-up scheme-less mirror is not up)."""
    http_up, https_up = _bool(m, "httpUp"), _bool(m, "httpsUp")
    if http_up == https_up:
        return http_up
    kind = _url_kind(_str(m, "http"))
    if kind == "http":
        return http_up
    if kind == "https":
        return https_up
    return False


def mirror_down_reason(m: Any) -> str:
    """Why the mirror is (partly) down, from ``httpDownReason``/``httpsDownReason``; empty when up."""
    kind = _url_kind(_str(m, "http"))
    parts = []
    if kind in ("http", "both") and not _bool(m, "httpUp"):
        parts.append(("HTTP", _str(m, "httpDownReason")))
    if kind in ("https", "both") and not _bool(m, "httpsUp"):
        parts.append(("HTTPS", _str(m, "httpsDownReason")))
    parts = [(p, r) for p, r in parts if r]
    if not parts:
        return ""
    if len(parts) == 1 and kind != "both":
        return parts[0][1]
    return "; ".join(f"{p}: {r}" for p, r in parts)


@dataclass(frozen=True)
class ListOptions:
    """The ``list`` flags (same names and defaults as Go), plus the opt-in ``show_reason`` column."""

    http: bool = False
    rsync: bool = False
    ftp: bool = False
    location: bool = False
    score: bool = False
    state: bool = True
    disabled: bool = False
    enabled: bool = False
    down: bool = False
    show_reason: bool = False

    @classmethod
    def from_flags(cls, values: Mapping[str, Any], show_reason: bool = False) -> ListOptions:
        """Build from the parsed ``list`` flags (e.g. ``ParseResult.values``)."""
        names = ("http", "rsync", "ftp", "location", "score", "state", "disabled", "enabled", "down")
        return cls(**{n: bool(values[n]) for n in names if n in values}, show_reason=show_reason)


def format_list(mirrors: Iterable[Any], opts: ListOptions | None = None) -> str:
    """The stdout of ``list``: sorted by state change (newest first), filtered, through the tab writer."""
    opts = opts or ListOptions()
    rows = list(mirrors)
    # Go sorts by StateSince descending with an unstable sort; ties are broken by name here so the
    # output is deterministic.
    rows.sort(key=lambda m: _str(m, "name"))
    rows.sort(key=lambda m: _time(m, "stateSince"), reverse=True)
    out = ["Identifier "]
    if opts.score:
        out.append("\tSCORE")
    if opts.http:
        out.append("\tHTTP ")
    if opts.rsync:
        out.append("\tRSYNC ")
    if opts.ftp:
        out.append("\tFTP ")
    if opts.location:
        out.append("\tLOCATION ")
    if opts.state:
        out.append("\tSTATE\tSINCE")
        if opts.show_reason:
            out.append("\tREASON")
    out.append("\n")
    for m in rows:
        enabled = _bool(m, "enabled")
        if opts.disabled and enabled:
            continue
        if opts.enabled and not enabled:
            continue
        if opts.down and (mirror_is_up(m) or not enabled):
            continue
        out.append(f"{_str(m, 'name')} ")
        if opts.score:
            out.append(f"\t{_int(m, 'score')} ")
        if opts.http:
            out.append(f"\t{_str(m, 'http')} ")
        if opts.rsync:
            out.append(f"\t{_str(m, 'rsync')} ")
        if opts.ftp:
            out.append(f"\t{_str(m, 'ftp')} ")
        if opts.location:
            country = _str(m, "countryCodes").split(" ")[0]
            out.append(f"\t{country} ({_str(m, 'continentCode')}) ")
        if opts.state:
            out.append(f"\t{mirror_state(m)} \t({rfc1123_utc(_time(m, 'stateSince'))})")
            if opts.show_reason:
                out.append(f"\t{mirror_down_reason(m) if enabled else ''}")
        out.append("\n")
    return tabulate("".join(out))


# ---------------------------------------------------------------------------------------------------
# show / edit: the YAML document (§5.2) and the diff (§5.4)

#: YAML keys of the mirror document, in Go's struct order.
MIRROR_YAML_KEYS: tuple[str, ...] = (
    "Name", "HttpURL", "RsyncURL", "FtpURL", "SponsorName", "SponsorURL", "SponsorLogoURL", "AdminName",
    "AdminEmail", "CustomData", "ContinentOnly", "CountryOnly", "ASOnly", "Score", "Latitude",
    "Longitude", "ContinentCode", "CountryCodes", "ExcludedCountryCodes", "ASNum", "Enabled",
    "AllowRedirects",
)
_YAML_TO_FIELD = {go: redis for redis, go, _snake in _FIELDS}
_YAML_KIND = {
    "ContinentOnly": "bool", "CountryOnly": "bool", "ASOnly": "bool", "Enabled": "bool",
    "Score": "int", "ASNum": "int", "Latitude": "float32", "Longitude": "float32",
    "AllowRedirects": "redirects",
}


def _allow_redirects(m: Any) -> str:
    v = _raw(m, "allowredirects")
    if v is _MISSING or v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    s = v.decode() if isinstance(v, bytes) else str(v)
    return {"1": "true", "2": "false", "true": "true", "false": "false"}.get(s, "null")


def mirror_yaml(m: Any) -> str:
    """The YAML document ``show`` prints and ``edit`` opens, as Go's yaml.v3 Marshal writes it."""
    out = []
    for key in MIRROR_YAML_KEYS:
        field = _YAML_TO_FIELD[key]
        kind = _YAML_KIND.get(key, "str")
        if kind == "bool":
            text = "true" if _bool(m, field) else "false"
        elif kind == "int":
            text = str(_int(m, field))
        elif kind == "float32":
            text = _yaml_float32(_float(m, field))
        elif kind == "redirects":
            text = _allow_redirects(m)
        else:
            text = _yaml_scalar(_str(m, field))
        out.append(_yaml_key_value(key, text))
    return "".join(out)


def format_show(m: Any, comment: str | None = None) -> str:
    """``show``: YAML, empty line, ``Comment:``, the comment, newline."""
    if comment is None:
        comment = _str(m, "comment")
    return f"{mirror_yaml(m)}\nComment:\n{comment}\n"


def yaml_diff(old_yaml: str, new_yaml: str) -> str:
    """The ``Diff`` text of UpdateMirror/GeoUpdateMirror: ``- old``/``+ new`` per differing line.

    Lines are paired by index like Go. When the line counts differ (multi-line CustomData), Go crashed
    on a shorter new document; here the extra lines are listed on their own side only.
    """
    a = old_yaml.split("\n")
    b = new_yaml.split("\n")
    out = []
    for i in range(max(len(a), len(b))):
        old = a[i] if i < len(a) else None
        new = b[i] if i < len(b) else None
        if old == new:
            continue
        if old is not None:
            out.append(f"- {old}\n")
        if new is not None:
            out.append(f"+ {new}\n")
    return "".join(out)


def format_edit_success(diff: str, name: str) -> str:
    """stdout after a successful edit: the diff and an empty line (if any), then the success line."""
    head = diff + "\n" if diff else ""
    return f"{head}Mirror '{name}' edited successfully\n"


EDIT_COMMENT_SEPARATOR = "##### Comments go below this line #####"


def edit_file_text(yaml_doc: str, comment: str) -> str:
    """The temporary file ``edit`` opens in ``$EDITOR`` (§3.6 step 3)."""
    return ("# You can now edit this mirror configuration.\n"
            "# Just save and quit when you're done.\n\n"
            f"{yaml_doc}\n{EDIT_COMMENT_SEPARATOR}\n\n{comment}\n")


def split_edit_file(text: str) -> tuple[str, str | None]:
    """Split an edited file into (YAML part, comment); comment is None when there is no separator.

    Like Go, only a separator found after position 0 counts, and the comment is trimmed.
    """
    idx = text.find(EDIT_COMMENT_SEPARATOR)
    if idx > 0:
        return text[:idx], text[idx + len(EDIT_COMMENT_SEPARATOR):].strip()
    return text, None


def format_add_success(name: str, warnings: Sequence[str] = (), latitude: float = 0.0,
                       longitude: float = 0.0, continent: str = "", country: str = "",
                       asn: str = "") -> str:
    """stdout of a successful ``add`` (§3.2): warnings, location block (if a country), success lines."""
    out = [w + "\n" for w in warnings]
    if warnings:
        out.append("\n")
    if country:
        out.append("Mirror location:\n")
        out.append(f"Latitude:  {_go_fixed4(latitude)}\n")
        out.append(f"Longitude: {_go_fixed4(longitude)}\n")
        out.append(f"Continent: {continent}\n")
        out.append(f"Country:   {country}\n")
        out.append(f"ASN:       {asn}\n\n")
    out.append(f"Mirror '{name}' added successfully\n")
    out.append(f"Enable this mirror using\n  $ mirrorbits enable {name}\n")
    return "".join(out)


def _go_fixed4(x: float) -> str:
    # Go's %.4f of a float32 value widened to float64 (correctly rounded, like Python's).
    return f"{_to_float32(x):.4f}"


def format_scan_result(files_indexed: int, known_indexed: int, removed: int, tz_offset_ms: int = 0,
                       enabled: bool = False) -> str:
    """The rest of the ``Scanning <name>... `` line on success, plus the ``∟`` lines (§3.4)."""
    out = f"{files_indexed} files indexed, {known_indexed} known and {removed} removed\n"
    if tz_offset_ms:
        out += f"  \u221f Timezone offset detected and corrected: {tz_offset_ms} milliseconds\n"
    if enabled:
        out += "  \u221f Enabled\n"
    return out


# ---------------------------------------------------------------------------------------------------
# export


@dataclass(frozen=True)
class ExportOptions:
    """The ``export`` flags: every kind of URL and the disabled mirrors are exported by default."""

    rsync: bool = True
    http: bool = True
    ftp: bool = True
    disabled: bool = True

    @classmethod
    def from_flags(cls, values: Mapping[str, Any]) -> ExportOptions:
        return cls(**{n: bool(values[n]) for n in ("rsync", "http", "ftp", "disabled") if n in values})


def _export_urls(m: Any, opts: ExportOptions) -> list[str]:
    urls = []
    rsync, http, ftp = _str(m, "rsync"), _str(m, "http"), _str(m, "ftp")
    if opts.rsync and rsync:
        urls.append(rsync)
    if opts.http and http:
        if _url_kind(http) == "both":
            urls += ["http://" + http, "https://" + http]
        else:
            urls.append(http)
    if opts.ftp and ftp:
        urls.append(ftp)
    return urls


def format_mirmon(mirrors: Iterable[Any], opts: ExportOptions | None = None,
                  missing_country: str = "--") -> str:
    """``export mirmon``: ``<country>\\t<url>\\t<admin e-mail>`` per URL, through the tab writer.

    Mirrors keep their input order (Go's order is unspecified). A mirror without country code gets
    ``missing_country`` (Go panicked on it).
    """
    opts = opts or ExportOptions()
    out = []
    emails = []
    for m in mirrors:
        if not opts.disabled and not _bool(m, "enabled"):
            continue
        codes = _str(m, "countryCodes").split()
        country = codes[0] if codes else missing_country
        for url in _export_urls(m, opts):
            email = _str(m, "adminEmail")
            out.append(f"{country}\t{url}\t{email}\n")
            emails.append(email)
    lines = tabulate("".join(out)).splitlines(keepends=True)
    # Go's tab writer (padding 0) adds no TAB after a URL cell whose width is already a multiple of
    # 8 when it is the widest one, so the e-mail was glued to the URL and mirmon read
    # "http://host/path/ops@example.org" as the URL (spec §6 defect).  Keep Go's bytes where that
    # is harmless (empty e-mail, case 45) and put one TAB back where the two would touch.
    if len(lines) != len(emails):  # a newline inside a field: no reliable line mapping
        return "".join(lines)
    for i, email in enumerate(emails):
        line = lines[i]
        end = len(line) - 1 - len(email)  # the e-mail sits right before the newline
        if email and line[end - 1] != "\t":
            lines[i] = line[:end] + "\t" + line[end:]
    return "".join(lines)


def _unix_or_none(m: Any, field: str) -> str | None:
    t = _time(m, field)
    if t == _GO_ZERO_TIME:
        return None
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _export_record(m: Any, opts: ExportOptions) -> dict[str, Any]:
    rec: dict[str, Any] = {"ID": _int(m, "ID"), "Name": _str(m, "name")}
    if opts.http:
        rec["HttpURL"] = _str(m, "http")
    if opts.rsync:
        rec["RsyncURL"] = _str(m, "rsync")
    if opts.ftp:
        rec["FtpURL"] = _str(m, "ftp")
    for key in ("SponsorName", "SponsorURL", "SponsorLogoURL", "AdminName", "AdminEmail", "CustomData"):
        rec[key] = _str(m, _YAML_TO_FIELD[key])
    for key in ("ContinentOnly", "CountryOnly", "ASOnly"):
        rec[key] = _bool(m, _YAML_TO_FIELD[key])
    rec["Score"] = _int(m, "score")
    for key, field in (("Latitude", "latitude"), ("Longitude", "longitude")):
        value = float(format_float32(_float(m, field)))
        rec[key] = value if math.isfinite(value) else None  # keep the document valid JSON
    rec["ContinentCode"] = _str(m, "continentCode")
    rec["CountryCodes"] = _str(m, "countryCodes").split()
    rec["ExcludedCountryCodes"] = _str(m, "excludedCountryCodes").split()
    rec["ASNum"] = _int(m, "asnum")
    rec["Enabled"] = _bool(m, "enabled")
    rec["AllowRedirects"] = json.loads(_allow_redirects(m))
    rec["Comment"] = _str(m, "comment")
    rec["State"] = mirror_state(m)
    rec["Up"] = mirror_is_up(m)
    rec["HttpUp"] = _bool(m, "httpUp")
    rec["HttpsUp"] = _bool(m, "httpsUp")
    rec["HttpDownReason"] = _str(m, "httpDownReason")
    rec["HttpsDownReason"] = _str(m, "httpsDownReason")
    rec["StateSince"] = _unix_or_none(m, "stateSince")
    rec["LastSync"] = _unix_or_none(m, "lastSync")
    rec["LastSuccessfulSync"] = _unix_or_none(m, "lastSuccessfulSync")
    rec["LastModTime"] = _unix_or_none(m, "lastModTime")
    rec["URLs"] = _export_urls(m, opts)
    return rec


def _export_records(mirrors: Iterable[Any], opts: ExportOptions) -> list[dict[str, Any]]:
    rows = [m for m in mirrors if opts.disabled or _bool(m, "enabled")]
    rows.sort(key=lambda m: (_str(m, "name"), _int(m, "ID")))
    return [_export_record(m, opts) for m in rows]


def format_export_json(mirrors: Iterable[Any], opts: ExportOptions | None = None) -> str:
    """``export json`` (extension): one JSON array of mirror objects sorted by name, newline-terminated.

    Keys are the Go/YAML field names; times are RFC 3339 UTC or null; country codes are lists.
    """
    recs = _export_records(mirrors, opts or ExportOptions())
    return json.dumps(recs, indent=2, ensure_ascii=False) + "\n"


_CSV_COLUMNS = ("ID", "Name", "HttpURL", "RsyncURL", "FtpURL", "CountryCodes", "ContinentCode", "ASNum",
                "Latitude", "Longitude", "Score", "Enabled", "State", "StateSince", "AdminName",
                "AdminEmail", "SponsorName", "SponsorURL", "ExcludedCountryCodes")


def format_export_csv(mirrors: Iterable[Any], opts: ExportOptions | None = None) -> str:
    """``export csv`` (extension): RFC 4180 CSV with a header row, one mirror per row, sorted by name.

    Country code lists are space-separated; booleans are ``true``/``false``; unknown times are empty.
    """
    opts = opts or ExportOptions()
    cols = [c for c in _CSV_COLUMNS if not (
        (c == "HttpURL" and not opts.http) or (c == "RsyncURL" and not opts.rsync)
        or (c == "FtpURL" and not opts.ftp))]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(cols)
    for rec in _export_records(mirrors, opts):
        row = []
        for c in cols:
            v = rec[c]
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, list):
                v = " ".join(v)
            elif v is None:
                v = ""
            row.append(v)
        w.writerow(row)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# stats


_STATS_DATE = re.compile(r"(\d{4})-(\d\d?)-(\d\d?)")


def parse_stats_date_strict(text: str) -> datetime:
    """Go's ``time.Parse("2006-1-2", text)``: 00:00 UTC of that day; ValueError if it does not parse."""
    m = _STATS_DATE.fullmatch(text)
    if not m:
        raise ValueError(f"invalid date {text!r} (expected YYYY-MM-DD)")
    try:
        return datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=UTC)
    except ValueError:
        # Includes year 0, which Go accepts but protobuf timestamps cannot carry.
        raise ValueError(f"invalid date {text!r} (expected YYYY-MM-DD)") from None


def parse_stats_date(text: str, now: datetime) -> datetime:
    """The Go client's lenient parse: anything unparsable (empty, ``2026/10/15``) silently means now."""
    try:
        return parse_stats_date_strict(text)
    except ValueError:
        return now.astimezone(UTC)


def _add_month(t: datetime, years: int = 0, months: int = 0) -> datetime:
    # time.Date(y, m+1, 1, 0, 0, 0, 0, loc) with Go's month normalisation.
    total = t.year * 12 + (t.month - 1) + years * 12 + months
    return datetime(total // 12, total % 12 + 1, 1, tzinfo=t.tzinfo)


def stats_key_coverage(start: datetime, end: datetime) -> list[str]:
    """Port of Go's ``utils.TimeKeyCoverage``: the stats key suffixes covering [start, end] (§7.2).

    Both times are taken in UTC (the daemon's view). Suffixes look like ``2026_11_24``, ``2026_10``,
    ``2026``.
    """
    start = start.astimezone(UTC)
    end = end.astimezone(UTC)
    dates: list[str] = []
    if start.date() == end.date():
        return [start.strftime("%Y_%m_%d")]
    if start.day != 1:
        month = start.month
        while not (start.month != month or start == end):
            dates.append(start.strftime("%Y_%m_%d"))
            start += timedelta(days=1)
    while True:
        next_year = _add_month(start, years=1).replace(month=1)
        next_month = _add_month(start, months=1)
        if start.day == 1 and start.month == 1 and next_year <= end:
            dates.append(f"{start.year:04d}")
            start = next_year
        elif next_month <= end:
            dates.append(start.strftime("%Y_%m"))
            start = next_month
        else:
            break
    while not (start + timedelta(days=1) > end):
        dates.append(start.strftime("%Y_%m_%d"))
        start += timedelta(days=1)
    return dates


def readable_size(value: int) -> str:
    """Go's ``utils.ReadableSize``: ``0.0 bytes``, ``1.4 MiB``, ``4.7 GiB`` (never beyond TiB)."""
    v = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:3.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_stats_file(files: Mapping[str, int]) -> str:
    """``stats file``: ``<path>:\\t<count>`` sorted by path, a separator line, the total (tab writer)."""
    keys = sorted(files, key=lambda k: k.encode("utf-8", "surrogatepass"))
    total = sum(int(v) for v in files.values())
    out = [f"{k}:\t{int(files[k])}\n" for k in keys]
    if keys:
        out.append("\t\n")
    out.append(f"Total download requests: \t{total}\n")
    return tabulate("".join(out))


def format_stats_mirror(name: str, mirror: Any, requests: int, nbytes: int, human: bool = True) -> str:
    """``stats mirror``: identifier, status, requests and bytes, through the tab writer."""
    size = readable_size(nbytes) if human else str(nbytes)
    text = (f"Identifier:\t{name}\n"
            f"Status:\t{mirror_state(mirror)}\n"
            f"Download requests:\t{requests}\n"
            f"Bytes transferred:\t{size}\n")
    return tabulate(text)


# ---------------------------------------------------------------------------------------------------
# logs


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``: ``1h0m0s``, ``-30m0s``, ``1.5s``, ``500ms``, ``0s``."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    sign = "-" if neg else ""
    if u < 1_000_000_000:
        for unit, scale in (("ns", 1), ("\u00b5s", 1_000), ("ms", 1_000_000)):
            if u < scale * 1000:
                return sign + _frac(u, scale) + unit
    secs, frac_ns = divmod(u, 1_000_000_000)
    out = _frac(u % 60_000_000_000, 1_000_000_000) + "s"
    mins = secs // 60
    if mins:
        out = f"{mins % 60}m" + out
        hours = mins // 60
        if hours:
            out = f"{hours}h" + out
    del frac_ns
    return sign + out


def _frac(v: int, scale: int) -> str:
    whole, rest = divmod(v, scale)
    if not rest:
        return str(whole)
    digits = str(rest).rjust(len(str(scale)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})"
)


def _local_zone_name(t: datetime, local_tz: tzinfo | None) -> str | None:
    """The local zone's abbreviation at instant t if its offset equals t's offset (Go's rule)."""
    loc = t.astimezone(local_tz) if local_tz is not None else t.astimezone()
    if loc.utcoffset() == t.utcoffset():
        return loc.tzname()
    return None


def render_log_entry(raw: str | bytes, local_tz: tzinfo | None = None) -> str | None:
    """One ``MIRRORLOGS_<id>`` element as ``logs`` prints it, or None if Go would skip it.

    ``local_tz`` is the reading process' zone (default: the system's), used like Go's time.Local to name
    the offset carried by the timestamp (``UTC``, ``CET``, else numeric ``+0100``).
    """
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    typ = obj.get("Type")
    if isinstance(typ, bool) or not isinstance(typ, int | float):
        return None
    text = _log_text(int(typ), obj)
    if text is None:
        return None
    return f"{_log_timestamp(obj.get('Timestamp'), local_tz)}: {text}"


def _log_timestamp(value: Any, local_tz: tzinfo | None) -> str:
    m = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if not m:
        return "0001-01-01 00:00:00 UTC"
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    zone = m.group(8)
    if zone in ("Z", "z"):
        offset = timedelta(0)
    else:
        sign = 1 if zone[0] == "+" else -1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    stamp = f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
    if zone in ("Z", "z"):
        return stamp + " UTC"
    try:
        t = datetime(y, mo, d, h, mi, s, tzinfo=timezone(offset))
        name = _local_zone_name(t, local_tz)
    except (ValueError, OverflowError):
        name = None
    if name is None:
        total = int(offset.total_seconds()) // 60
        sign_c = "-" if total < 0 else "+"
        total = abs(total)
        name = f"{sign_c}{total // 60:02d}{total % 60:02d}"
    return f"{stamp} {name}"


def _log_text(typ: int, obj: Mapping[str, Any]) -> str | None:
    if typ == 1:
        return f"Error: {obj.get('Err', '')}"
    if typ == 2:
        return "Mirror added"
    if typ == 3:
        return "Mirror edited"
    if typ == 4:
        return "Mirror enabled"
    if typ == 5:
        return "Mirror disabled"
    if typ == 6:
        subject = {1: "HTTP mirror", 2: "HTTPS mirror"}.get(_as_int(obj.get("Proto")), "Mirror")
        if obj.get("Up") is True:
            return f"{subject} is up"
        reason = obj.get("Reason") or ""
        return f"{subject} is down: {reason}" if reason else f"{subject} is down"
    if typ == 7:
        return {0: "RSYNC scan started", 1: "FTP scan started"}.get(
            _as_int(obj.get("Typ")), "Scan started using a unknown protocol")
    if typ == 8:
        out = (f"Scan completed: {_as_int(obj.get('FilesIndexed'))} files "
               f"({_as_int(obj.get('KnownIndexed'))} known), {_as_int(obj.get('Removed'))} removed")
        tz = _as_int(obj.get("TZOffset"))
        if tz:
            out += f" (corrected timezone offset: {go_duration(tz * 1_000_000)})"
        return out
    return None


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return 0
    return int(v)


def format_logs(name: str, lines: Sequence[str]) -> str:
    """``logs``: ``No logs for <name>`` or ``Printing logs for <name>:`` and the lines."""
    if not lines:
        return f"No logs for {name}\n"
    return f"Printing logs for {name}:\n" + "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------------------------------
# version, fatal errors


@dataclass(frozen=True)
class VersionInfo:
    """The six values of a ``version`` block (Go's core.VersionInfo)."""

    version: str
    build: str
    go_version: str
    os: str
    arch: str
    gomaxprocs: int


def format_version_block(info: VersionInfo) -> str:
    """Six lines: one space, the label left-justified to 17, one space, the value."""
    rows = (("Version:", info.version), ("Build:", info.build), ("GoVersion:", info.go_version),
            ("Operating System:", info.os), ("Architecture:", info.arch),
            ("Gomaxprocs:", str(info.gomaxprocs)))
    return "".join(f" {label:<17} {value}\n" for label, value in rows)


def format_version(client: VersionInfo, server: VersionInfo | None = None) -> str:
    """``version``: ``Client:`` block, empty line, then ``Server:`` block unless the server has none."""
    out = "Client:\n" + format_version_block(client) + "\n"
    if server is not None and server.version:
        out += "Server:\n" + format_version_block(server)
    return out


def fatal_line(message: str, now: datetime | None = None) -> str:
    """A FATAL(msg) stderr line: Go's log prefix ``YYYY/MM/DD HH:MM:SS`` in the CLI's local time."""
    t = now if now is not None else datetime.now().astimezone()
    return f"{t.strftime('%Y/%m/%d %H:%M:%S')} {message}\n"


# ---------------------------------------------------------------------------------------------------
# Go text of float32 and yaml.v3 scalars (private helpers; the shared gocompat module may replace them)
# ---------------------------------------------------------------------------------------------------
# float32 text (strconv.FormatFloat(f, 'g', -1, 32))


_to_float32 = gocompat.f32


def _shortest_digits(x: float) -> tuple[str, int]:
    """Shortest decimal digits d1..dn and exponent e (x = 0.d1..dn × 10^e) that round-trip as float32."""
    for prec in range(1, 10):
        s = f"{x:.{prec - 1}e}"
        if _to_float32(float(s)) == x:
            mant, exp = s.split("e")
            digits = mant.replace(".", "").lstrip("-").rstrip("0") or "0"
            return digits, int(exp) + 1
    raise AssertionError("float32 needs at most 9 digits")  # pragma: no cover


def format_float32(value: float) -> str:
    """Go's shortest 'g' format of a float32: ``48.8582``, ``0``, ``1e-05``, ``1e+06``, ``+Inf``."""
    x = _to_float32(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    neg = math.copysign(1.0, x) < 0
    sign = "-" if neg else ""
    if x == 0:
        return sign + "0"
    digits, dp = _shortest_digits(abs(x))
    exp = dp - 1
    if exp < -4 or exp >= 6:  # %e, shortest: eprec = 6
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        esign = "-" if exp < 0 else "+"
        return f"{sign}{mant}e{esign}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def _yaml_float32(value: float) -> str:
    """yaml.v3's float32 scalar: the 'g' text with Go's Inf/NaN spelled the YAML way."""
    s = format_float32(value)
    return {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}.get(s, s)


# ---------------------------------------------------------------------------------------------------
# yaml.v3 resolver (only: "would this plain scalar be read back as something else than a string?")

_RESOLVE_NON_STR = frozenset(
    ["true", "True", "TRUE", "false", "False", "FALSE", "", "~", "null", "Null", "NULL",
     ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
     "<<"]
)
_OLD_BOOLS = frozenset(
    ["y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off", "OFF"]
)
_YAML_STYLE_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_BASE60_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_TS_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})")
_TS_TIME = re.compile(r"^(\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d*)?")


def _go_parse_float_ok(s: str) -> bool:
    """strconv.ParseFloat(s, 64) succeeds (decimal syntax only; out-of-range is an error in Go)."""
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s):
        return False
    try:
        return not math.isinf(float(s))
    except ValueError:  # pragma: no cover - the regex only lets valid floats through
        return False


def _go_int_ok(s: str) -> bool:
    for parse in (parse_go_int, parse_go_uint):
        try:
            parse(s, 64, base=0)
            return True
        except ValueError:
            pass
    return False


def _is_timestamp(s: str) -> bool:
    """yaml.v3 parseTimestamp: ``2006-1-2``, ``2006-1-2T15:4:5.9Z07:00`` (or ``t``), ``2006-1-2 15:4:5.9``."""
    m = _TS_DATE.match(s)
    if not m:
        return False
    try:
        date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return False
    rest = s[m.end():]
    if rest == "":
        return True
    sep, rest = rest[:1], rest[1:]
    if sep not in ("T", "t", " "):
        return False
    t = _TS_TIME.match(rest)
    if not t:
        return False
    if int(t.group(1)) > 23 or int(t.group(2)) > 59 or int(t.group(3)) > 59:
        return False
    tail = rest[t.end():]
    if sep == " ":
        return tail == ""
    if tail == "Z":
        return True
    z = re.fullmatch(r"[+-](\d{2}):(\d{2})", tail)
    if z is None:
        return False
    return int(z.group(1)) <= 23 and int(z.group(2)) <= 59


def _resolves_to_str(s: str) -> bool:
    if s in _RESOLVE_NON_STR:
        return False
    hint = s[0]
    if hint == ".":
        return not _go_parse_float_ok(s)
    if hint in "+-0123456789":
        if _is_timestamp(s):
            return False
        plain = s.replace("_", "")
        if _go_int_ok(plain):
            return False
        if _YAML_STYLE_FLOAT.match(plain) and _go_parse_float_ok(plain):
            return False
        for prefix, base in (("0b", 2), ("-0b", 2), ("0o", 8), ("-0o", 8)):
            if plain.startswith(prefix):
                body = plain[len(prefix):]
                if body and all(c in "0123456789abcdefghijklmnopqrstuvwxyz"[:base] for c in body.lower()):
                    return False
        return True
    return True


def _can_use_plain(s: str) -> bool:
    return _resolves_to_str(s) and not (
        (s[:1] in "+-0123456789" and s != "" and ":" in s and bool(_BASE60_FLOAT.match(s)))
        or s in _OLD_BOOLS
    )


# ---------------------------------------------------------------------------------------------------
# yaml.v3 emitter: scalar analysis and writers

_BREAKS = "\r\n\x85\u2028\u2029"


def _is_printable(c: str) -> bool:
    cp = ord(c)
    return (
        cp == 0x0A
        or 0x20 <= cp <= 0x7E
        or 0xA0 <= cp <= 0xD7FF
        or (0xE000 <= cp <= 0xFFFD and cp != 0xFEFF)
    )


class _Analysis:
    __slots__ = ("multiline", "block_plain_allowed", "single_quoted_allowed", "block_allowed")

    def __init__(self, value: str) -> None:
        if value == "":
            self.multiline = False
            self.block_plain_allowed = True
            self.single_quoted_allowed = True
            self.block_allowed = False
            return
        block_indicators = value.startswith("---") or value.startswith("...")
        line_breaks = special = tabs = False
        leading_space = leading_break = trailing_space = trailing_break = False
        break_space = space_break = False
        preceded_by_ws = True
        prev_space = prev_break = False
        n = len(value)
        for i, c in enumerate(value):
            followed_by_ws = i + 1 >= n or value[i + 1] in " \t"
            if i == 0:
                if c in "#,[]{}&*!|>'\"%@`":
                    block_indicators = True
                elif c in "?:":
                    if followed_by_ws:
                        block_indicators = True
                elif c == "-" and followed_by_ws:
                    block_indicators = True
            else:
                if c == ":" and followed_by_ws:
                    block_indicators = True
                elif c == "#" and preceded_by_ws:
                    block_indicators = True
            if c == "\t":
                tabs = True
            elif not _is_printable(c):
                special = True
            if c == " ":
                if i == 0:
                    leading_space = True
                if i == n - 1:
                    trailing_space = True
                if prev_break:
                    break_space = True
                prev_space, prev_break = True, False
            elif c in _BREAKS:
                line_breaks = True
                if i == 0:
                    leading_break = True
                if i == n - 1:
                    trailing_break = True
                if prev_space:
                    space_break = True
                prev_space, prev_break = False, True
            else:
                prev_space = prev_break = False
            preceded_by_ws = c in " \t" or c in _BREAKS
        self.multiline = line_breaks
        self.block_plain_allowed = True
        self.single_quoted_allowed = True
        self.block_allowed = True
        if leading_space or leading_break or trailing_space or trailing_break:
            self.block_plain_allowed = False
        if trailing_space:
            self.block_allowed = False
        if break_space:
            self.block_plain_allowed = False
            self.single_quoted_allowed = False
        if space_break or tabs or special:
            self.block_plain_allowed = False
            self.single_quoted_allowed = False
        if space_break or special:
            self.block_allowed = False
        if line_breaks:
            self.block_plain_allowed = False
        if block_indicators:
            self.block_plain_allowed = False


_INDENT = 4

_ESCAPES = {
    0x00: "0", 0x07: "a", 0x08: "b", 0x09: "t", 0x0A: "n", 0x0B: "v", 0x0C: "f", 0x0D: "r", 0x1B: "e",
    0x22: '"', 0x5C: "\\", 0x85: "N", 0xA0: "_", 0x2028: "L", 0x2029: "P",
}


def _double_quoted(value: str) -> str:
    out = ['"']
    for c in value:
        cp = ord(c)
        if not _is_printable(c) or cp == 0xFEFF or c in _BREAKS or c in '"\\':
            esc = _ESCAPES.get(cp)
            if esc is not None:
                out.append("\\" + esc)
            elif cp <= 0xFF:
                out.append(f"\\x{cp:02X}")
            elif cp <= 0xFFFF:
                out.append(f"\\u{cp:04X}")
            else:
                out.append(f"\\U{cp:08X}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _with_breaks(value: str, quote: bool) -> str:
    """Plain and single-quoted writers: a break char is copied, the next text is indented (no wrap)."""
    out: list[str] = []
    breaks = False
    for c in value:
        if c in _BREAKS:
            if not breaks and c == "\n":
                out.append("\n")
            out.append(c)
            breaks = True
        else:
            if breaks:
                out.append(" " * _INDENT)
            if quote and c == "'":
                out.append("'")
            out.append(c)
            breaks = False
    return "".join(out)


def _literal(value: str) -> str:
    hints = ""
    if value[:1] == " " or value[:1] in _BREAKS and value:
        hints += str(_INDENT)
    if value == "" or value[-1] not in _BREAKS:
        hints += "-"
    elif len(value) == 1 or value[-2] in _BREAKS:
        hints += "+"
    out = ["|" + hints, "\n"]
    breaks = True
    for c in value:
        if c in _BREAKS:
            out.append("\n" if c == "\n" else c)
            breaks = True
        else:
            if breaks:
                out.append(" " * _INDENT)
            out.append(c)
            breaks = False
    return "".join(out)


def _yaml_scalar(value: str) -> str:
    """How yaml.v3 writes a string as a block-mapping *value* (without the separating space)."""
    if "\n" in value:
        style = "literal"
    elif _can_use_plain(value):
        style = "plain"
    else:
        style = "double"
    a = _Analysis(value)
    if style == "plain" and not a.block_plain_allowed:
        style = "single"
    if style == "single" and not a.single_quoted_allowed:
        style = "double"
    if style == "literal" and not a.block_allowed:
        style = "double"
    if style == "plain":
        return _with_breaks(value, quote=False)
    if style == "single":
        return "'" + _with_breaks(value, quote=True) + "'"
    if style == "literal":
        return _literal(value)
    return _double_quoted(value)


def _yaml_key_value(key: str, rendered: str) -> str:
    """One ``Key: value`` entry of a top-level block mapping, newline-terminated."""
    if rendered.startswith("|"):
        body = rendered
        return f"{key}: {body}" + ("" if body.endswith("\n") else "\n")
    return f"{key}: {rendered}\n"
