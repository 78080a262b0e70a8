"""``mirrorbits export``: the mirmon list of the Go client, and our JSON and CSV documents.

mirmon reads ``<country> <url> <e-mail>`` lines, so ``export mirmon`` keeps Go's tab-writer bytes
except where they glued the e-mail to the URL.  JSON and CSV (our additions) use the Go field names
of :data:`mirrorbits.model.MIRROR_FIELDS` as keys and columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mirrorbits.admin.formatting.mirrorlist import FlagOptions, mirror_state, url_kind
from mirrorbits.admin.tabwriter import tabulate
from mirrorbits.gocompat import format_float32
from mirrorbits.model import MIRROR_FIELD_BY_GO, Mirror

__all__ = ["ExportOptions", "format_export_csv", "format_export_json", "format_mirmon"]

#: One exported value: JSON's types.
JsonValue = str | int | float | bool | list[str] | None


@dataclass(frozen=True)
class ExportOptions(FlagOptions):
    """The ``export`` flags: every kind of URL and the disabled mirrors are exported by default."""

    rsync: bool = True
    http: bool = True
    ftp: bool = True
    disabled: bool = True


def _export_urls(m: Mirror, opts: ExportOptions) -> list[str]:
    urls = []
    if opts.rsync and m.rsync_url:
        urls.append(m.rsync_url)
    if opts.http and m.http_url:
        if url_kind(m.http_url) == "both":
            urls += ["http://" + m.http_url, "https://" + m.http_url]
        else:
            urls.append(m.http_url)
    if opts.ftp and m.ftp_url:
        urls.append(m.ftp_url)
    return urls


def format_mirmon(mirrors: Iterable[Mirror], opts: ExportOptions | None = None,
                  missing_country: str = "--") -> str:
    """``export mirmon``: ``<country>\\t<url>\\t<admin e-mail>`` per URL, through the tab writer.

    Mirrors keep their input order (Go's order is unspecified). A mirror without country code gets
    ``missing_country`` (Go panicked on it).
    """
    opts = opts or ExportOptions()
    out = []
    emails = []
    for m in mirrors:
        if not opts.disabled and not m.enabled:
            continue
        codes = m.country_codes.split()
        country = codes[0] if codes else missing_country
        for url in _export_urls(m, opts):
            out.append(f"{country}\t{url}\t{m.admin_email}\n")
            emails.append(m.admin_email)
    lines = tabulate("".join(out)).splitlines(keepends=True)
    # Go's tab writer (padding 0) adds no TAB after a URL cell whose width is already a multiple of
    # 8 when it is the widest one, so the e-mail was glued to the URL and mirmon read
    # "http://host/path/ops@example.org" as the URL.  Keep Go's bytes where that is harmless (empty
    # e-mail) and put one TAB back where the two would touch.
    if len(lines) != len(emails):  # a newline inside a field: no reliable line mapping
        return "".join(lines)
    for i, email in enumerate(emails):
        line = lines[i]
        end = len(line) - 1 - len(email)  # the e-mail sits right before the newline
        if email and line[end - 1] != "\t":
            lines[i] = line[:end] + "\t" + line[end:]
    return "".join(lines)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc_text(unix: int | None) -> str | None:
    """A Unix-seconds time as RFC 3339 UTC, ``None`` for Go's zero time or a time out of range."""
    if unix is None:
        return None
    try:
        return (_EPOCH + timedelta(seconds=unix)).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError:
        return None


def _coordinate(value: float) -> float | None:
    """The float32 value as its shortest decimal reads back in float64 (what Go's JSON shows);
    ``None`` for NaN/Inf, to keep the document valid JSON."""
    shown = float(format_float32(value))
    return shown if math.isfinite(shown) else None


_TEXT_KEYS = ("SponsorName", "SponsorURL", "SponsorLogoURL", "AdminName", "AdminEmail", "CustomData")
_FLAG_KEYS = ("ContinentOnly", "CountryOnly", "ASOnly")


def _export_record(m: Mirror, opts: ExportOptions) -> dict[str, JsonValue]:
    rec: dict[str, JsonValue] = {"ID": m.id, "Name": m.name}
    if opts.http:
        rec["HttpURL"] = m.http_url
    if opts.rsync:
        rec["RsyncURL"] = m.rsync_url
    if opts.ftp:
        rec["FtpURL"] = m.ftp_url
    for key in _TEXT_KEYS + _FLAG_KEYS:
        rec[key] = getattr(m, MIRROR_FIELD_BY_GO[key].attr)
    rec["Score"] = m.score
    rec["Latitude"] = _coordinate(m.latitude)
    rec["Longitude"] = _coordinate(m.longitude)
    rec["ContinentCode"] = m.continent_code
    rec["CountryCodes"] = m.country_codes.split()
    rec["ExcludedCountryCodes"] = m.excluded_country_codes.split()
    rec["ASNum"] = m.asnum
    rec["Enabled"] = m.enabled
    rec["AllowRedirects"] = {1: True, 2: False}.get(m.allow_redirects)
    rec["Comment"] = m.comment
    rec["State"] = mirror_state(m)
    rec["Up"] = m.is_up()
    rec["HttpUp"] = m.http_up
    rec["HttpsUp"] = m.https_up
    rec["HttpDownReason"] = m.http_down_reason
    rec["HttpsDownReason"] = m.https_down_reason
    rec["StateSince"] = _utc_text(m.state_since)
    rec["LastSync"] = _utc_text(m.last_sync)
    rec["LastSuccessfulSync"] = _utc_text(m.last_successful_sync)
    rec["LastModTime"] = _utc_text(m.last_mod_time)
    rec["URLs"] = _export_urls(m, opts)
    return rec


def _export_records(mirrors: Iterable[Mirror], opts: ExportOptions) -> list[dict[str, JsonValue]]:
    rows = [m for m in mirrors if opts.disabled or m.enabled]
    rows.sort(key=lambda m: (m.name, m.id))
    return [_export_record(m, opts) for m in rows]


def format_export_json(mirrors: Iterable[Mirror], opts: ExportOptions | None = None) -> str:
    """``export json`` (extension): one JSON array of mirror objects sorted by name, newline-terminated.

    Keys are the Go/YAML field names; times are RFC 3339 UTC or null; country codes are lists.
    """
    recs = _export_records(mirrors, opts or ExportOptions())
    return json.dumps(recs, indent=2, ensure_ascii=False) + "\n"


_CSV_COLUMNS = ("ID", "Name", "HttpURL", "RsyncURL", "FtpURL", "CountryCodes", "ContinentCode", "ASNum",
                "Latitude", "Longitude", "Score", "Enabled", "State", "StateSince", "AdminName",
                "AdminEmail", "SponsorName", "SponsorURL", "ExcludedCountryCodes")


def _csv_cell(v: JsonValue) -> str | int | float:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return " ".join(v)
    if v is None:
        return ""
    return v


def format_export_csv(mirrors: Iterable[Mirror], opts: ExportOptions | None = None) -> str:
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
        w.writerow([_csv_cell(rec[c]) for c in cols])
    return buf.getvalue()
