"""Exact stdout of list/show/edit/export/stats/logs/version, from outputs of the Go client."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mirrorbits.admin.formatting import (
    EDIT_COMMENT_SEPARATOR,
    ExportOptions,
    ListOptions,
    VersionInfo,
    edit_file_text,
    fatal_line,
    format_add_success,
    format_edit_success,
    format_export_csv,
    format_export_json,
    format_list,
    format_logs,
    format_mirmon,
    format_scan_result,
    format_show,
    format_stats_file,
    format_stats_mirror,
    format_version_block,
    mirror_down_reason,
    mirror_state,
    mirror_yaml,
    parse_stats_date_strict,
    readable_size,
    split_edit_file,
    stats_key_coverage,
    yaml_diff,
)
from mirrorbits.model import Mirror

M = Mirror.from_redis

MIRROR1 = {
    "ID": "1", "name": "mirror1", "http": "http://127.0.0.1/repo/", "rsync": "rsync://127.0.0.1/repo/",
    "ftp": "ftp://127.0.0.1/repo/", "sponsorName": "ACME Corp", "sponsorURL": "https://acme.example",
    "sponsorLogo": "", "adminName": "Jane", "adminEmail": "jane@example.org", "customData": "",
    "continentOnly": "0", "countryOnly": "1", "asOnly": "0", "score": "10", "latitude": "48.8582",
    "longitude": "2.3387", "continentCode": "EU", "countryCodes": "FR", "excludedCountryCodes": "",
    "asnum": "64500", "comment": "first mirror", "allowredirects": "0", "enabled": "0",
}

SHOW_MIRROR1 = """Name: mirror1
HttpURL: http://127.0.0.1/repo/
RsyncURL: rsync://127.0.0.1/repo/
FtpURL: ftp://127.0.0.1/repo/
SponsorName: ACME Corp
SponsorURL: https://acme.example
SponsorLogoURL: ""
AdminName: Jane
AdminEmail: jane@example.org
CustomData: ""
ContinentOnly: false
CountryOnly: true
ASOnly: false
Score: 10
Latitude: 48.8582
Longitude: 2.3387
ContinentCode: EU
CountryCodes: FR
ExcludedCountryCodes: ""
ASNum: 64500
Enabled: false
AllowRedirects: null
"""


def _m(name: str, http: str, enabled: bool = True, http_up: bool = False, https_up: bool = False,
       since: int | None = None, **extra: str) -> Mirror:
    """A mirror record read from the ``MIRROR_<id>`` hash fields given."""
    m = {"name": name, "http": http, "enabled": "1" if enabled else "0",
         "httpUp": "1" if http_up else "0", "httpsUp": "1" if https_up else "0"}
    if since is not None:
        m["stateSince"] = str(since)
    m.update(extra)
    return M(m)


# ------------------------------------------------------------------------------------------- list


def test_list_empty_database() -> None:
    assert format_list([]) == "Identifier \tSTATE\tSINCE\n"


def test_list_observed_example() -> None:
    mirrors = [
        _m("localmirror", "http://127.0.0.9/", enabled=False),
        _m("mirror3", "127.0.0.3/repo/", http_up=True, since=1700000000),
        _m("mirror1", "http://127.0.0.1/repo/", http_up=True, since=1700000500),
    ]
    assert format_list(mirrors) == (
        "Identifier \tSTATE\t\tSINCE\n"
        "mirror1 \tup \t\t(Tue, 14 Nov 2023 22:21:40 UTC)\n"
        "mirror3 \tup/down \t(Tue, 14 Nov 2023 22:13:20 UTC)\n"
        "localmirror \tdisabled \t(Mon, 01 Jan 0001 00:00:00 UTC)\n"
    )


def test_list_state_false_form_used_by_completion() -> None:
    mirrors = [_m("b", "http://b/", since=2), _m("a", "http://a/", since=1)]
    assert format_list(mirrors, ListOptions(state=False)) == "Identifier \nb \na \n"


def test_list_score_location_header_and_cells() -> None:
    mirrors = [
        _m("mirror1", "http://127.0.0.1/", http_up=True, since=10, score="-3", countryCodes="US FR",
           continentCode="EU"),
        _m("nogeo", "http://10.0.0.1/", since=5),
        _m("eu", "http://10.0.0.2/", since=1, continentCode="EU"),
    ]
    out = format_list(mirrors, ListOptions(score=True, location=True))
    lines = out.split("\n")
    assert lines[0] == "Identifier \tSCORE\tLOCATION \tSTATE\tSINCE"
    assert lines[1] == "mirror1 \t-3 \tUS (EU) \tup \t(Thu, 01 Jan 1970 00:00:10 UTC)"
    assert lines[2] == "nogeo \t\t0 \t () \t\tdown \t(Thu, 01 Jan 1970 00:00:05 UTC)"
    assert lines[3] == "eu \t\t0 \t (EU) \t\tdown \t(Thu, 01 Jan 1970 00:00:01 UTC)"


def test_list_url_columns() -> None:
    m = _m("m", "http://h/", rsync="rsync://h/r/", ftp="")
    out = format_list([m], ListOptions(http=True, rsync=True, ftp=True, state=False))
    assert out == "Identifier \tHTTP \t\tRSYNC \t\tFTP \nm \t\thttp://h/ \trsync://h/r/ \t \n"


def test_list_filters() -> None:
    mirrors = [
        _m("up", "http://u/", http_up=True, since=5),
        _m("down", "http://d/", since=4),
        _m("half", "h/", http_up=True, since=3),
        _m("off", "http://o/", enabled=False, since=2),
        _m("httpsonly", "https://s/", https_up=True, since=1),
    ]

    def names(opts: ListOptions) -> list[str]:
        return [line.split(" ")[0] for line in format_list(mirrors, opts).splitlines()[1:]]

    assert names(ListOptions(down=True)) == ["down", "half"]
    assert names(ListOptions(disabled=True)) == ["off"]
    assert names(ListOptions(enabled=True)) == ["up", "down", "half", "httpsonly"]
    # Filters do not change the header; -disabled with -enabled prints only the header.
    assert format_list(mirrors, ListOptions(disabled=True, enabled=True)) == "Identifier \tSTATE\tSINCE\n"


def test_list_sorted_by_state_since_newest_first() -> None:
    mirrors = [_m("old", "http://a/", since=100), _m("never", "http://b/"), _m("new", "http://c/", since=200)]
    assert [line.split(" ")[0] for line in format_list(mirrors).splitlines()[1:]] == ["new", "old", "never"]


def test_list_reason_column_is_opt_in() -> None:
    m = _m("d", "http://d/", since=1, httpDownReason="Unreachable")
    assert "Unreachable" not in format_list([m])
    out = format_list([m], ListOptions(show_reason=True))
    assert out.splitlines()[1].endswith("\tUnreachable")


@pytest.mark.parametrize(
    ("http", "http_up", "https_up", "state", "up"),
    [
        ("http://x/", True, False, "up", True),
        ("http://x/", False, True, "down", False),
        ("https://x/", False, True, "up", True),
        ("https://x/", True, False, "down", False),
        ("x/", True, True, "up", True),
        ("x/", False, False, "down", False),
        ("x/", True, False, "up/down", False),
        ("x/", False, True, "down/up", False),
    ],
)
def test_state_and_is_up(http: str, http_up: bool, https_up: bool, state: str, up: bool) -> None:
    m = _m("m", http, http_up=http_up, https_up=https_up)
    assert mirror_state(m) == state
    assert m.is_up() is up
    assert mirror_state(_m("m", http, enabled=False, http_up=http_up)) == "disabled"


def test_down_reason() -> None:
    assert mirror_down_reason(_m("m", "http://x/", httpDownReason="Timeout")) == "Timeout"
    both = _m("m", "x/", httpDownReason="A", httpsDownReason="B")
    assert mirror_down_reason(both) == "HTTP: A; HTTPS: B"
    assert mirror_down_reason(_m("m", "x/", http_up=True, https_up=True)) == ""


def test_state_cell_as_wide_as_its_column_is_glued_like_go() -> None:
    r = Mirror(name="obj", http_url="x/", enabled=True, https_up=True, state_since=1700000000)
    assert mirror_state(r) == "down/up"
    assert format_list([r]).splitlines()[1] == "obj \t\tdown/up (Tue, 14 Nov 2023 22:13:20 UTC)"


# ---------------------------------------------------------------------------------- show / YAML


def test_show_observed_document() -> None:
    assert mirror_yaml(M(MIRROR1)) == SHOW_MIRROR1
    assert format_show(M(MIRROR1)) == SHOW_MIRROR1 + "\nComment:\nfirst mirror\n"
    assert len(SHOW_MIRROR1.splitlines()) == 22


def test_show_nogeo_and_allow_redirects() -> None:
    doc = mirror_yaml(M({"name": "nogeo", "http": "http://10.0.0.1/pub/", "allowredirects": "1"}))
    assert "Latitude: 0\n" in doc and 'CountryCodes: ""\n' in doc and "ASNum: 0\n" in doc
    assert doc.endswith("AllowRedirects: true\n")
    assert mirror_yaml(M({"allowredirects": "2"})).endswith("AllowRedirects: false\n")


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("plain text", "plain text"),
        ("", '""'),
        ("true", '"true"'),
        ("yes", '"yes"'),
        ("Off", '"Off"'),
        ("null", '"null"'),
        ("~", '"~"'),
        ("123", '"123"'),
        ("-7", '"-7"'),
        ("0x1F", '"0x1F"'),
        ("1_000", '"1_000"'),
        ("1.5", '"1.5"'),
        (".5", '".5"'),
        ("1e999", "1e999"),
        ("1:20", '"1:20"'),
        ("2024-01-02", '"2024-01-02"'),
        ("2024-01-02T03:04:05Z", '"2024-01-02T03:04:05Z"'),
        ("2024-13-02", "2024-13-02"),
        ("<<", '"<<"'),
        ("http://h/a b", "http://h/a b"),
        ("-x", "-x"),
        ("- x", "'- x'"),
        ("a: b", "'a: b'"),
        ("x:", "'x:'"),
        ("a#b", "a#b"),
        ("a #b", "'a #b'"),
        ("#x", "'#x'"),
        ("@x", "'@x'"),
        ("'q", "'''q'"),
        ("it's", "it's"),
        (" lead", "' lead'"),
        ("trail ", "'trail '"),
        ("---", "'---'"),
        ("tab\there", '"tab\\there"'),
        ("é ü", "é ü"),
        ("\U0001f600", '"\\U0001F600"'),
        ("bell\x07", '"bell\\a"'),
        ('{"json": 1}', "'{\"json\": 1}'"),
    ],
)
def test_yaml_scalar_quoting(value: str, rendered: str) -> None:
    doc = mirror_yaml(M({"customData": value}))
    assert f"\nCustomData: {rendered}\nContinentOnly: false\n" in doc


@pytest.mark.parametrize(
    ("value", "block"),
    [
        ("line1\nline2", "|-\n    line1\n    line2\n"),
        ("line1\n", "|\n    line1\n"),
        ("line1\n\n", "|+\n    line1\n\n"),
        ("x\n\ny", "|-\n    x\n\n    y\n"),
        (" indented\nnext", "|4-\n     indented\n    next\n"),
        ("\nfirst", "|4-\n\n    first\n"),
    ],
)
def test_yaml_literal_blocks(value: str, block: str) -> None:
    doc = mirror_yaml(M({"customData": value}))
    assert f"\nCustomData: {block}ContinentOnly: false\n" in doc


def test_yaml_multiline_not_block_safe_is_double_quoted() -> None:
    doc = mirror_yaml(M({"customData": "trailing \nx"}))
    assert '\nCustomData: "trailing \\nx"\n' in doc


def test_yaml_float_fields() -> None:
    doc = mirror_yaml(M({"latitude": "51.507351", "longitude": "-1e-05"}))
    assert "Latitude: 51.50735\nLongitude: -1e-05\n" in doc


# ---------------------------------------------------------------------------------- diff / edit


def test_diff_geoupdate_observed() -> None:
    old = dict(MIRROR1, latitude="1.5", longitude="2.5", continentCode="NA", countryCodes="US FR", asnum="1")
    diff = yaml_diff(mirror_yaml(M(old)), mirror_yaml(M(dict(old, latitude="48.8582", longitude="2.3387",
                                                             continentCode="EU", asnum="64500"))))
    assert diff == (
        "- Latitude: 1.5\n+ Latitude: 48.8582\n"
        "- Longitude: 2.5\n+ Longitude: 2.3387\n"
        "- ContinentCode: NA\n+ ContinentCode: EU\n"
        "- ASNum: 1\n+ ASNum: 64500\n"
    )


def test_diff_edit_observed_and_success_text() -> None:
    old = dict(MIRROR1, name="mirror3", score="0", countryCodes="FR", allowredirects="0")
    new = dict(old, name="mirror3-renamed", score="5", countryCodes="fr,de  be", allowredirects="1")
    diff = yaml_diff(mirror_yaml(M(old)), mirror_yaml(M(new)))
    assert diff == (
        "- Name: mirror3\n+ Name: mirror3-renamed\n"
        "- Score: 0\n+ Score: 5\n"
        "- CountryCodes: FR\n+ CountryCodes: fr,de  be\n"
        "- AllowRedirects: null\n+ AllowRedirects: true\n"
    )
    assert format_edit_success(diff, "mirror3-renamed") == diff + "\nMirror 'mirror3-renamed' edited successfully\n"
    assert format_edit_success("", "m") == "Mirror 'm' edited successfully\n"


def test_diff_of_unequal_lengths_does_not_crash() -> None:
    old = mirror_yaml(M(dict(MIRROR1, customData="a\nb")))
    new = mirror_yaml(M(MIRROR1))
    diff = yaml_diff(old, new)
    assert diff.startswith("- CustomData: |-\n+ CustomData: \"\"\n")
    assert yaml_diff(new, new) == ""
    assert "+ " in yaml_diff(new, old) and "- " in yaml_diff(new, old)


def test_edit_file_roundtrip() -> None:
    text = edit_file_text(SHOW_MIRROR1, "first mirror")
    assert text.startswith("# You can now edit this mirror configuration.\n# Just save and quit when "
                           "you're done.\n\nName: mirror1\n")
    assert text.endswith(f"AllowRedirects: null\n\n{EDIT_COMMENT_SEPARATOR}\n\nfirst mirror\n")
    yaml_part, comment = split_edit_file(text + "more\n  \n")
    assert comment == "first mirror\nmore"
    assert yaml_part.endswith("AllowRedirects: null\n\n")
    assert split_edit_file(EDIT_COMMENT_SEPARATOR + "\nx") == (EDIT_COMMENT_SEPARATOR + "\nx", None)


def test_add_success_text() -> None:
    out = format_add_success("mirror1", latitude=48.8582, longitude=2.3387, continent="EU", country="France",
                             asn="Example Networks (64500)")
    assert out == (
        "Mirror location:\nLatitude:  48.8582\nLongitude: 2.3387\nContinent: EU\nCountry:   France\n"
        "ASN:       Example Networks (64500)\n\n"
        "Mirror 'mirror1' added successfully\nEnable this mirror using\n  $ mirrorbits enable mirror1\n"
    )
    out = format_add_success("nogeo", warnings=["Warning: unable to guess the geographic location of this mirror"])
    assert out.startswith("Warning: unable to guess the geographic location of this mirror\n\nMirror 'nogeo'")


def test_scan_result_text() -> None:
    assert format_scan_result(3, 2, 0, enabled=True) == (
        "3 files indexed, 2 known and 0 removed\n  \u221f Enabled\n")
    assert format_scan_result(1, 1, 1, tz_offset_ms=-3600000) == (
        "1 files indexed, 1 known and 1 removed\n"
        "  \u221f Timezone offset detected and corrected: -3600000 milliseconds\n")


# ----------------------------------------------------------------------------------------- export

EXPORT_MIRRORS = [
    M(MIRROR1),
    M({"name": "m2", "http": "https://127.0.0.2/repo/", "countryCodes": "FR", "enabled": "1"}),
    M({"name": "mirror3", "http": "127.0.0.3/repo/", "countryCodes": "FR", "enabled": "1"}),
    M({"name": "m12", "http": "http://127.0.0.1/repo12/", "countryCodes": "FR", "enabled": "0"}),
]


def test_mirmon_observed_example() -> None:
    assert format_mirmon(EXPORT_MIRRORS) == (
        "FR\trsync://127.0.0.1/repo/\tjane@example.org\n"
        "FR\thttp://127.0.0.1/repo/\tjane@example.org\n"
        "FR\tftp://127.0.0.1/repo/\tjane@example.org\n"
        "FR\thttps://127.0.0.2/repo/\t\n"
        "FR\thttp://127.0.0.3/repo/\t\n"
        "FR\thttps://127.0.0.3/repo/\t\n"
        "FR\thttp://127.0.0.1/repo12/\n"
    )


def test_mirmon_flags() -> None:
    out = format_mirmon(EXPORT_MIRRORS, ExportOptions(disabled=False))
    assert "mirror1" not in out and "repo12" not in out and "127.0.0.3" in out
    out = format_mirmon(EXPORT_MIRRORS, ExportOptions(rsync=False, ftp=False))
    assert "rsync://" not in out and "ftp://" not in out and out.count("\n") == 5


def test_mirmon_missing_country_does_not_crash() -> None:
    out = format_mirmon([M({"name": "x", "http": "http://10.0.0.1/x/", "countryCodes": ""})])
    assert out == "--\thttp://10.0.0.1/x/\t\n"


def test_export_json() -> None:
    data = json.loads(format_export_json(EXPORT_MIRRORS, ExportOptions(disabled=False)))
    assert [d["Name"] for d in data] == ["m2", "mirror3"]
    m3 = data[1]
    assert m3["URLs"] == ["http://127.0.0.3/repo/", "https://127.0.0.3/repo/"]
    assert m3["CountryCodes"] == ["FR"] and m3["Enabled"] is True and m3["StateSince"] is None
    full = json.loads(format_export_json([M(dict(MIRROR1, stateSince="1700000500"))]))[0]
    assert full["Latitude"] == 48.8582 and full["ASNum"] == 64500 and full["AllowRedirects"] is None
    assert full["StateSince"] == "2023-11-14T22:21:40Z" and full["State"] == "disabled"


def test_export_csv() -> None:
    text = format_export_csv(EXPORT_MIRRORS, ExportOptions(ftp=False))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["Name"] for r in rows] == ["m12", "m2", "mirror1", "mirror3"]
    assert "FtpURL" not in rows[0]
    r1 = rows[2]
    assert r1["HttpURL"] == "http://127.0.0.1/repo/" and r1["Enabled"] == "false" and r1["Score"] == "10"
    assert text.endswith("\r\n")


# ------------------------------------------------------------------------------------------ stats

NOW = datetime(2026, 11, 26, 3, 23, 0, tzinfo=UTC)
STATS_FILE = {
    "2026_11_24": {"/README": 3, "/sub/file.iso": 2},
    "2026_11_25": {"/README": 3, "/sub/file.iso": 2},
    "2026_11_26": {"/README": 3, "/sub/file.iso": 2},
    "2026_10": {"/README": 100},
}


def _date(text: str) -> datetime:
    """What ``stats`` takes for a date flag: the day given, or now when the flag is empty."""
    return parse_stats_date_strict(text) if text else NOW


def _sum(start: str, end: str, pattern: str = "") -> dict[str, int]:
    keys = stats_key_coverage(_date(start), _date(end))
    out: dict[str, int] = {}
    for k in keys:
        for path, n in STATS_FILE.get(k, {}).items():
            if pattern in path:
                out[path] = out.get(path, 0) + n
    return out


def test_stats_file_output_observed() -> None:
    files = _sum("", "")
    assert format_stats_file(files) == (
        "/README:\t\t\t3\n/sub/file.iso:\t\t\t2\n\t\t\t\t\nTotal download requests: \t5\n")
    assert format_stats_file({}) == "Total download requests: \t0\n"


@pytest.mark.parametrize(
    ("start", "end", "readme", "iso"),
    [
        ("", "", 3, 2),  # no dates: today only
        ("2026-11-24", "", 9, 6),  # start in the current month: today included
        ("2026-11-24", "2026-11-26", 6, 4),  # end date excluded
        ("2026-10-15", "", 6, 4),  # start in an earlier month: today excluded
        ("2026-10-1", "2026-11-26", 106, 4),  # whole-month key + two days
    ],
)
def test_stats_date_ranges(start: str, end: str, readme: int, iso: int) -> None:
    assert _sum(start, end) == {"/README": readme, "/sub/file.iso": iso}


def test_key_coverage_shapes() -> None:
    def d(year: int, month: int, day: int, hour: int = 0) -> datetime:
        return datetime(year, month, day, hour, tzinfo=UTC)

    assert stats_key_coverage(d(2026, 11, 24), d(2026, 11, 26)) == ["2026_11_24", "2026_11_25"]
    keys = stats_key_coverage(d(2025, 1, 1), d(2026, 3, 2))
    assert keys == ["2025", "2026_01", "2026_02", "2026_03_01"]
    assert stats_key_coverage(d(2025, 12, 30), d(2026, 1, 1)) == ["2025_12_30", "2025_12_31"]
    # End before start (different days): the days from start to the end of its month.
    assert stats_key_coverage(d(2026, 2, 26), d(2026, 1, 1)) == ["2026_02_26", "2026_02_27", "2026_02_28"]
    assert stats_key_coverage(d(2026, 5, 5, 23), d(2026, 5, 5, 1)) == ["2026_05_05"]
    # The daemon works in UTC: 00:30+02:00 on the 6th is still the 5th.
    local = datetime(2026, 5, 6, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert stats_key_coverage(local, local) == ["2026_05_05"]


def test_stats_date_parsing() -> None:
    assert parse_stats_date_strict("2026-10-1") == datetime(2026, 10, 1, tzinfo=UTC)
    assert parse_stats_date_strict("2026-01-09") == datetime(2026, 1, 9, tzinfo=UTC)
    for bad in ("", "2026/10/15", "yesterday", "2026-13-01", "2026-02-30", "26-1-1", "2026-010-1",
                "2026-1-1x", "0000-01-01"):
        with pytest.raises(ValueError):
            parse_stats_date_strict(bad)


def test_stats_mirror_observed() -> None:
    assert format_stats_mirror("mirror1", M({"enabled": "0"}), 5, 1500000) == (
        "Identifier:\t\tmirror1\nStatus:\t\t\tdisabled\nDownload requests:\t5\nBytes transferred:\t1.4 MiB\n")
    out = format_stats_mirror("mirror1", M({"enabled": "0"}), 110, 5003000000, human=False)
    assert out.endswith("Download requests:\t110\nBytes transferred:\t5003000000\n")
    out = format_stats_mirror("m", _m("m", "x/", http_up=True), 0, 0)
    assert "Status:\t\t\tup/down\n" in out and out.endswith("Bytes transferred:\t0.0 bytes\n")


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0.0 bytes"), (1023, "1023.0 bytes"), (1024, "1.0 KiB"), (1500000, "1.4 MiB"),
     (5003000000, "4.7 GiB"), (1024**5, "1024.0 TiB")],
)
def test_readable_size(n: int, text: str) -> None:
    assert readable_size(n) == text


# ------------------------------------------------------------------------------------------- logs


def test_format_logs() -> None:
    assert format_logs("m24", []) == "No logs for m24\n"
    assert format_logs("mirror1", ["a", "b"]) == "Printing logs for mirror1:\na\nb\n"


# ---------------------------------------------------------------------------------------- version


def test_version_output() -> None:
    client = VersionInfo("v0.6.1-7-g7357f8c", "7357f8c-master", "go1.19.8", "linux", "amd64", 2)
    block = (" Version:          v0.6.1-7-g7357f8c\n"
             " Build:            7357f8c-master\n"
             " GoVersion:        go1.19.8\n"
             " Operating System: linux\n"
             " Architecture:     amd64\n"
             " Gomaxprocs:       2\n")
    assert format_version_block(client) == block


def test_fatal_line() -> None:
    t = datetime(2026, 11, 26, 4, 5, 6)
    assert fatal_line("edit error: x", t) == "2026/11/26 04:05:06 edit error: x\n"
    assert fatal_line("x").endswith(" x\n")
