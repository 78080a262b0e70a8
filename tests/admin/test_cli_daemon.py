"""The CLI against a running daemon on a real Redis, comparing exact stdout with the Go CLI's.

Where we fix a Go behaviour, the *fixed* behaviour is asserted and the test says so
(exit 2 for usage errors, exact-name preference, strict stats dates, edit validation, ...).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from twisted.protocols import amp

from mirrorbits.admin import usage
from tests.admin.conftest import PASSWORD, AdminDaemon, make_geo_dir

FATAL = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d "
UNREACHABLE = "mirrorbits: cannot reach the daemon at "

ADD1 = ["add", "-http", "http://127.0.0.1/repo", "-rsync", "rsync://127.0.0.1/repo", "-ftp",
        "ftp://127.0.0.1/repo", "-admin-email", "jane@example.org", "-score", "10", "-country-only",
        "-comment", "first mirror", "mirror1"]

SHOW1 = """Name: mirror1
HttpURL: http://127.0.0.1/repo/
RsyncURL: rsync://127.0.0.1/repo/
FtpURL: ftp://127.0.0.1/repo/
SponsorName: ""
SponsorURL: ""
SponsorLogoURL: ""
AdminName: ""
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

Comment:
first mirror
"""


def add(daemon: AdminDaemon, name: str, http: str, *flags: str) -> None:
    r = daemon.one("add", "-http", http, *flags, name)
    assert r.code == 0, r


# ---------------------------------------------------------------------------------------------------
# 1-3, 21, 41, 43, 49: help, dispatch and usage


def test_help_unknown_command_and_usage_errors(daemon: AdminDaemon) -> None:
    help_text = usage.help_text()
    r = daemon.cli({"argv": [], "raw": True}, {"argv": ["foo"], "raw": True},
                   ["LIST", "-state=false"], ["list", "-state=false"], ["show"],
                   ["logs", "-l", "-1", "x"], ["version", "x"], ["show", "-help"], {"argv": ["HELP"], "raw": True})
    none, foo, upper, lower, show, logs, version, show_help, upper_help = r
    assert (none.code, none.out, none.err) == (0, "", help_text)
    # deviation: exit 2 (Go 0) for an unknown command
    assert (foo.code, foo.out, foo.err) == (2, "Error: Command not found: foo\n", help_text)
    assert upper == lower and upper.out == "Identifier \n" and upper.code == 0
    # (usage block exact; exit 2 instead of Go's 0)
    assert show.code == 2 and show.out == ""
    assert show.err == "\nUsage: mirrorbits show [IDENTIFIER]\n\nPrint a mirror configuration\n\n"
    assert logs.code == 2 and logs.err.startswith(
        'invalid value "-1" for flag -l: parse error\n\nUsage: mirrorbits logs [IDENTIFIER]\n')
    assert version.code == 2 and version.err.startswith("\nUsage: mirrorbits version \n")
    assert show_help.code == 0 and show_help.err == show.err     # asking for the usage is no error
    assert upper_help.code == 0 and upper_help.err == help_text  # Go panicked on HELP


def test_global_flag_errors_exit_2(admin_daemon: AdminDaemon) -> None:
    r = admin_daemon.cli({"argv": ["-h"], "raw": True}, {"argv": ["-bogus", "list"], "raw": True})
    assert r[0].code == 2 and r[0].err.startswith("flag needs an argument: -h\nUsage of ")
    assert r[1].code == 2 and r[1].err.startswith("flag provided but not defined: -bogus\n")


# ---------------------------------------------------------------------------------------------------
# 4-8, 55: connecting and authenticating


def test_password_checks(daemon: AdminDaemon) -> None:
    missing, wrong, good = daemon.cli(["list"], password=None), daemon.cli(["list"], password="wrong"), \
        daemon.cli(["list"])
    assert (missing[0].code, missing[0].out, missing[0].err) == (
        1, "", "Please set the server password with the -P option.\n")
    assert (wrong[0].code, wrong[0].err) == (1, "Password refused\n")
    assert good[0].out == "Identifier \tSTATE\tSINCE\n" and good[0].code == 0
def test_raw_call_without_password_is_refused_and_daemon_survives(daemon: AdminDaemon) -> None:
    """a call without the password field answers Unauthenticated (Go crashed)."""
    from mirrorbits.admin.rpc import AdminCall

    def raw_call(box: amp.AmpBox) -> dict[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", daemon.rpc_port), timeout=10) as s:
            s.sendall(box.serialize())
            data = b""
            while not data.endswith(b"\x00\x00"):
                chunk = s.recv(65536)
                assert chunk, "daemon closed the connection"
                data += chunk
        proto = amp.BinaryBoxProtocol(amp.BoxDispatcher(None))  # only used to parse the reply box
        boxes: list[dict[bytes, bytes]] = []
        proto.boxReceiver = type("R", (), {"ampBoxReceived": lambda self, b: boxes.append(b),
                                            "startReceivingBoxes": lambda self, s: None,
                                            "stopReceivingBoxes": lambda self, r: None})()
        proto.makeConnection(type("T", (), {"write": lambda self, d: None, "getPeer": lambda self: None,
                                            "getHost": lambda self: None,
                                            "loseConnection": lambda self: None})())
        proto.dataReceived(data)
        return boxes[0]

    box = amp.AmpBox(_command=AdminCall.commandName, _ask=b"1", method=b"list_mirrors")
    reply = raw_call(box)
    payload = json.loads(reply[b"result"])
    assert payload == {"error": {"code": "Unauthenticated", "message": "access denied"}}
    # garbage arguments and unknown methods are answered too, never a crash
    reply = raw_call(amp.AmpBox(_command=AdminCall.commandName, _ask=b"2", method=b"__init__",
                                password=PASSWORD.encode(), args=b"{}"))
    assert json.loads(reply[b"result"])["error"]["code"] == "Unimplemented"
    reply = raw_call(amp.AmpBox(_command=AdminCall.commandName, _ask=b"3", method=b"mirror_info",
                                password=PASSWORD.encode(), args=b"{not json"))
    assert json.loads(reply[b"result"])["error"]["code"] == "InvalidArgument"
    assert daemon.proc.poll() is None and daemon.cli(["list"])[0].code == 0


def test_connection_refused_and_password_prompt(daemon: AdminDaemon) -> None:
    add(daemon, "mirror1", "http://127.0.0.1/repo")
    nothing = daemon.run_process(["-h", "127.0.0.1", "-p", "1", "-P", PASSWORD, "list"])
    assert nothing.code == 1 and nothing.err == (
        "mirrorbits: cannot reach the daemon at 127.0.0.1:1: connection refused (is it running, and "
        "listening there? see RPCListenAddress in its configuration)\n")
    prompt = daemon.run_process(["-h", "127.0.0.1", "-p", str(daemon.rpc_port), "-a", "list",
                                 "-state=false"], stdin="sekret\n")
    assert (prompt.code, prompt.out) == (0, "Password: ******Identifier \nmirror1 \n")
    eof = daemon.run_process(["-p", str(daemon.rpc_port), "-a", "list"], stdin="")
    assert (eof.code, eof.out, eof.err) == (1, "Password: ", "EOF\n")


def test_redis_only_commands_work_without_the_daemon(daemon: AdminDaemon) -> None:
    """The CLI reads $MIRRORBITS_CONFIG and works on Redis when the daemon is unreachable."""
    add(daemon, "mirror1", "http://127.0.0.1/repo")
    env = {"MIRRORBITS_CONFIG": str(daemon.conf)}
    down = ["-h", "127.0.0.1", "-p", "1"]
    r = daemon.cli({"argv": down + ["enable", "mirror1"], "env": env, "raw": True},
                   {"argv": down + ["list", "-state=false"], "env": env, "raw": True},
                   {"argv": down + ["reload"], "env": env, "raw": True})
    assert r[0].code == 0 and r[0].out == "Mirror 'mirror1' enabled successfully\n"
    assert "not reachable" in r[0].err and f"Redis {daemon.redis.address} directly" in r[0].err
    assert r[1].out == "Identifier \nmirror1 \n"
    assert daemon.redis.client().hget("MIRROR_1", "enabled") == "1"
    assert r[2].code == 1 and r[2].err.startswith(UNREACHABLE)  # reload needs the daemon


# ---------------------------------------------------------------------------------------------------
# 9-18: add


def test_add_validation_exits_255_and_stores_nothing(daemon: AdminDaemon) -> None:
    r = daemon.cli(["add", "-http", "http://127.0.0.1/a b", "my mirror"], ["add", "mirror1"],
                   ["add", "-http", "ftp://127.0.0.1/repo", "mirror1"],
                   ["add", "-http", "http://127.0.0.1/a b%zz", "mirror1"],
                   ["add", "mirror1", "-http", "http://127.0.0.1/"])
    assert [(x.code, x.out, x.err) for x in r] == [
        (255, "", "The identifier cannot contain a space\n"),
        (255, "", "You *must* pass at least an HTTP URL\n"),
        (255, "", "The HTTP URL has an invalid scheme\n"),
        (255, "", "Can't parse HTTP URL\n"),
        (255, "", "You *must* pass at least an HTTP URL\n"),  # flags after the name are not flags
    ]
    assert daemon.redis.client().keys("*") == ["MIRRORBITS_DB_VERSION"]


GO_MIRROR_1 = {
    # What the Go RPC save writes for that add, field by field.
    "ID": "1", "name": "mirror1", "http": "http://127.0.0.1/repo/", "rsync": "rsync://127.0.0.1/repo/",
    "ftp": "ftp://127.0.0.1/repo/", "sponsorName": "", "sponsorURL": "", "sponsorLogo": "",
    "adminName": "", "adminEmail": "jane@example.org", "customData": "", "continentOnly": "0",
    "countryOnly": "1", "asOnly": "0", "score": "10", "latitude": "48.8582", "longitude": "2.3387",
    "continentCode": "EU", "countryCodes": "FR", "excludedCountryCodes": "", "asnum": "64500",
    "comment": "first mirror", "allowredirects": "0", "enabled": "0", "httpsUp": "0",
}


def test_add_writes_the_go_records(daemon: AdminDaemon) -> None:
    red = daemon.redis.client()
    pubsub = red.pubsub()
    pubsub.subscribe("_mirrorbits_mirror_update")
    r = daemon.cli(ADD1, ADD1, ["add", "-http", "http://127.0.0.1:18081/repo", "mirrorport"],
                   ["add", "-http", "http://10.0.0.1/pub/", "nogeo"], ["show", "nogeo"],
                   ["add", "-http", "127.0.0.3/repo", "mirror3"])
    first, again, port, nogeo, show_nogeo, schemeless = r
    assert (first.code, first.err) == (0, "")
    assert first.out == (
        "Mirror location:\nLatitude:  48.8582\nLongitude: 2.3387\nContinent: EU\nCountry:   France\n"
        "ASN:       Example Networks (64500)\n\nMirror 'mirror1' added successfully\n"
        "Enable this mirror using\n  $ mirrorbits enable mirror1\n")
    assert red.hgetall("MIRROR_1") == GO_MIRROR_1
    logs = red.lrange("MIRRORLOGS_1", 0, -1)
    assert len(logs) == 1
    assert re.fullmatch(r'\{"Type":2,"MirrorID":1,"Timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?'
                        r'(Z|[+-]\d\d:\d\d)"\}', logs[0])
    # same name again
    assert again.code == 1 and again.out == ""
    assert re.fullmatch(FATAL + "edit error: name already taken\n", again.err)
    # fixed: a URL with a port is geolocated (Go: "IP lookup failed: lookup 127.0.0.1:18081")
    assert port.code == 0 and "Country:   France" in port.out
    assert red.hget("MIRROR_2", "http") == "http://127.0.0.1:18081/repo/"

    assert nogeo.out == ("Warning: unable to guess the geographic location of this mirror\n\n"
                         "Mirror 'nogeo' added successfully\nEnable this mirror using\n"
                         "  $ mirrorbits enable nogeo\n")
    assert "Latitude: 0\n" in show_nogeo.out and 'CountryCodes: ""\n' in show_nogeo.out \
        and "ASNum: 0\n" in show_nogeo.out
    # scheme-less URL kept scheme-less; both protocols stay unknown
    assert schemeless.code == 0
    assert red.hget("MIRROR_4", "http") == "127.0.0.3/repo/"
    assert red.hget("MIRROR_4", "httpUp") is None and red.hget("MIRROR_4", "httpsUp") is None
    assert red.get("LAST_MID") == "4"
    assert red.hgetall("MIRRORS") == {"1": "mirror1", "2": "mirrorport", "3": "nogeo", "4": "mirror3"}
    published: list[str] = []
    deadline = 50
    while len(published) < 4 and deadline:
        m = pubsub.get_message(timeout=0.1)
        deadline -= 1
        if m and m["type"] == "message":
            published.append(m["data"])
    assert published == ["1", "2", "3", "4"]


GEOIP_TEST_DATA = Path(__file__).resolve().parents[1] / "data" / "geoip"


def assert_explains_missing_geoip(text: str, directory: Path) -> None:
    """The GeoIP help: the directory searched, the two file names, the config key, how to get them."""
    for needle in (str(directory), "GeoLite2-City.mmdb", "GeoLite2-ASN.mmdb", "GeoipDatabasePath",
                   "geoipupdate", "GeoLite2 account", "DB-IP Lite"):
        assert needle in text, (needle, text)


def test_first_mirror_without_geoip_data_then_geoupdate(daemon: AdminDaemon, tmp_path: Path) -> None:
    """A newcomer's first mirror: no GeoIP data yet.  Go refused the mirror ("One or more GeoIP
    database could not be loaded"); here it is added, disabled, with a warning naming what to do, and
    ``geoupdate`` locates it once the databases are there."""
    geo = tmp_path / "GeoIP"
    geo.mkdir()
    daemon.write_config(geo=geo)
    log_start = len(daemon.output())
    assert daemon.one("reload").code == 0
    deadline = time.monotonic() + 10
    while "GeoIP data missing" not in daemon.output()[log_start:] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_explains_missing_geoip(daemon.output()[log_start:], geo)

    added = daemon.run_process(daemon.base() + ["add", "-http", "http://127.0.0.1:9/m/", "m1"])
    assert (added.code, added.err) == (0, "")
    assert added.out.startswith("Warning: this mirror has no location until 'mirrorbits geoupdate m1' runs "
                                "with GeoIP data present. GeoIP data missing: ")
    assert_explains_missing_geoip(added.out, geo)
    assert added.out.endswith("\n\nMirror 'm1' added successfully\nEnable this mirror using\n"
                              "  $ mirrorbits enable m1\n")
    listed, shown, refused = daemon.cli(["list", "-disabled"], ["show", "m1"], ["geoupdate", "-f", "m1"])
    assert re.match(r"m1 \t+disabled \t", listed.out.splitlines()[1])
    assert "HttpURL: http://127.0.0.1:9/m/\n" in shown.out and "Enabled: false\n" in shown.out
    assert "Latitude: 0\n" in shown.out and 'CountryCodes: ""\n' in shown.out
    # geoupdate without the data cannot do anything: it says why instead of "up to date"
    assert refused.code == 1 and refused.out == ""
    assert re.fullmatch(FATAL + "edit error: cannot locate mirror 'm1': GeoIP data missing: .*\n", refused.err)
    assert_explains_missing_geoip(refused.err, geo)

    make_geo_dir(geo)  # GeoIP data installed afterwards (127.0.0.0/8 -> France, AS 64500)
    located, shown = daemon.cli(["geoupdate", "-f", "m1"], ["show", "m1"])
    assert (located.code, located.err) == (0, "")
    assert "+ Latitude: 48.8582\n" in located.out and located.out.endswith("Mirror 'm1' updated successfully\n")
    assert "Latitude: 48.8582\n" in shown.out and "CountryCodes: FR\n" in shown.out \
        and "ASNum: 64500\n" in shown.out and "Enabled: false\n" in shown.out


def test_geoupdate_with_maxmind_test_databases_installed_later(daemon: AdminDaemon, tmp_path: Path) -> None:
    """MaxMind's GeoLite2 test databases, copied under the names the daemon expects, locate a mirror
    added before they were there (89.160.20.115 is Linköping, AS 29518, in them)."""
    geo = tmp_path / "GeoIP"
    geo.mkdir()
    daemon.write_config(geo=geo)
    assert daemon.one("reload").code == 0
    added = daemon.one("add", "-http", "http://89.160.20.115:9/m/", "m2")
    assert added.code == 0 and "has no location until 'mirrorbits geoupdate m2'" in added.out
    # Only the ASN database: a mirror is added, but still without a location.
    shutil.copyfile(GEOIP_TEST_DATA / "GeoLite2-ASN-Test.mmdb", geo / "GeoLite2-ASN.mmdb")
    half = daemon.one("add", "-http", "http://89.160.20.115:9/n/", "m3")
    assert half.code == 0 and half.out.startswith("Warning: this mirror has no location until")
    assert "GeoLite2-City.mmdb not loaded" in half.out
    shutil.copyfile(GEOIP_TEST_DATA / "GeoLite2-City-Test.mmdb", geo / "GeoLite2-City.mmdb")
    located, shown = daemon.cli(["geoupdate", "-f", "m2"], ["show", "m2"])
    assert (located.code, located.err) == (0, "")
    assert "CountryCodes: SE\n" in shown.out and "ContinentCode: EU\n" in shown.out \
        and "ASNum: 29518\n" in shown.out
    assert daemon.redis.client().hget("MIRROR_1", "countryCodes") == "SE"


# ---------------------------------------------------------------------------------------------------
# 19-26: matching, show, enable/disable, list


def test_matching_prefers_exact_names(daemon: AdminDaemon) -> None:
    for name in ("mirror", "mirror1", "mirror2"):
        add(daemon, name, "http://127.0.0.1/" + name)
    exact, ambiguous, nothing, case = daemon.cli(["show", "mirror"], ["show", "rror"], ["show", "nothing"],
                                                 ["enable", "MIRROR2"])
    # fixed (Go: "Multiple match"): the exact name wins
    assert exact.code == 0 and exact.out.startswith("Name: mirror\n")
    assert ambiguous.code == 1 and ambiguous.out == ""
    assert ambiguous.err == "Multiple match:\n  mirror\n  mirror1\n  mirror2\n"
    assert (nothing.code, nothing.err) == (1, "No match for 'nothing'\n")
    assert case.out == "Mirror 'mirror2' enabled successfully\n"


def test_show_enable_disable(daemon: AdminDaemon) -> None:
    red = daemon.redis.client()
    assert daemon.one(*ADD1).code == 0
    pubsub = red.pubsub()
    pubsub.subscribe("_mirrorbits_mirror_update")
    show, en1, en2, dis, listed, unknown = daemon.cli(
        ["show", "mirror1"], ["enable", "Mirror1"], ["enable", "mirror1"], ["disable", "mirror1"],
        ["list", "-disabled"], ["show", "mirror9"])
    assert (show.code, show.out) == (0, SHOW1)
    assert en1.out == en2.out == "Mirror 'mirror1' enabled successfully\n"
    assert dis.out == "Mirror 'mirror1' disabled successfully\n"
    assert listed.out.splitlines()[1].startswith("mirror1 \tdisabled \t")
    assert unknown.code == 1
    types = [json.loads(x)["Type"] for x in red.lrange("MIRRORLOGS_1", 0, -1)]
    assert types == [2, 4, 4, 5]
    msgs = []
    for _ in range(50):
        m = pubsub.get_message(timeout=0.1)
        if m and m["type"] == "message":
            msgs.append(m["data"])
        if len(msgs) == 3:
            break
    assert msgs == ["1", "1", "1"]
    assert red.hget("MIRROR_1", "enabled") == "0"


def test_change_status_of_unknown_id_creates_nothing(daemon: AdminDaemon) -> None:
    """Go wrote a stray MIRROR_<id> and log entry for an id without record; we refuse."""
    add(daemon, "m1", "http://127.0.0.1/")
    red = daemon.redis.client()
    red.delete("MIRROR_1")  # MIRRORS still names it (e.g. a Go node is removing it right now)
    r = daemon.one("enable", "m1")
    assert r.code == 1 and re.fullmatch(FATAL + "Couldn't enable mirror 'm1': mirror not found\n", r.err)
    assert red.exists("MIRROR_1") == 0 and red.llen("MIRRORLOGS_1") == 1


def _set_state(daemon: AdminDaemon, mid: int, **fields: str) -> None:
    daemon.redis.client().hset(f"MIRROR_{mid}", mapping=fields)


def test_list_states_columns_and_down_filter(daemon: AdminDaemon) -> None:
    add(daemon, "mirror1", "http://127.0.0.1/repo")
    add(daemon, "mirror3", "127.0.0.3/repo")
    add(daemon, "mirror4", "127.0.0.4/repo")
    add(daemon, "localmirror", "http://127.0.0.5/repo")
    _set_state(daemon, 1, enabled="1", httpUp="1", httpsUp="0", stateSince="1700000500")
    _set_state(daemon, 2, enabled="1", httpUp="1", httpsUp="0", stateSince="1700000000",
               httpsDownReason="Unreachable")
    _set_state(daemon, 3, enabled="1", httpUp="0", httpsUp="1", stateSince="1699999000",
               httpDownReason="Connection refused", countryCodes="US FR")
    full, down, located, reason = daemon.cli(["list"], ["list", "-down"], ["list", "-score", "-location"],
                                             ["list", "-down", "-reason"])
    assert full.out == (
        "Identifier \tSTATE\t\tSINCE\n"
        "mirror1 \tup \t\t(Tue, 14 Nov 2023 22:21:40 UTC)\n"
        "mirror3 \tup/down \t(Tue, 14 Nov 2023 22:13:20 UTC)\n"
        "mirror4 \tdown/up \t(Tue, 14 Nov 2023 21:56:40 UTC)\n"
        "localmirror \tdisabled \t(Mon, 01 Jan 0001 00:00:00 UTC)\n")
    assert [line.split(" ")[0] for line in down.out.splitlines()] == ["Identifier", "mirror3", "mirror4"]
    assert located.out.splitlines()[0] == "Identifier \tSCORE\tLOCATION \tSTATE\t\tSINCE"
    assert "\tUS (EU) \t" in located.out.splitlines()[3]
    # extension: the down reason (hidden -reason flag)
    assert reason.out.splitlines()[1].endswith("\tHTTPS: Unreachable")
    assert reason.out.splitlines()[2].endswith("\tHTTP: Connection refused")


# ---------------------------------------------------------------------------------------------------
# 27-31: edit


def editor(tmp: Path, name: str, body: str) -> str:
    """An $EDITOR: a Python script that rewrites the file it is given."""
    path = tmp / name
    path.write_text(f"#!{sys.executable}\nimport sys\np = sys.argv[1]\ns = open(p).read()\n{body}\n"
                    "open(p, 'w').write(s)\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_edit(daemon: AdminDaemon, tmp_path: Path) -> None:
    add(daemon, "mirror1", "http://127.0.0.1/repo", "-admin-email", "jane@example.org")
    add(daemon, "mirror3", "127.0.0.3/repo")
    add(daemon, "m24", "http://127.0.0.24/")
    red = daemon.redis.client()
    before = red.hgetall("MIRROR_1")
    temp_before = set(Path(tempfile.gettempdir()).glob("edit*"))
    noop = editor(tmp_path, "noop", "pass")
    rename = editor(tmp_path, "rename", (
        "s = s.replace('Name: mirror3', 'Name: mirror3-renamed').replace('Score: 0', 'Score: 5')\n"
        "s = s.replace('CountryCodes: FR', 'CountryCodes: fr,de  be')\n"
        "s = s.replace('AllowRedirects: null', 'AllowRedirects: true')\n"
        "s += 'line one\\nline two\\n'"))
    unknown = editor(tmp_path, "unknown", "s = s.replace('AdminEmail: jane@example.org\\n', 'Bogus: 1\\n')")
    delete = editor(tmp_path, "delete", "s = s.replace('AdminEmail: jane@example.org\\n', '')")
    broken = editor(tmp_path, "broken", "s = s.replace('Score: 0', 'Score: [unclosed')")
    taken = editor(tmp_path, "taken", "s = s.replace('Name: m24', 'Name: mirror1')")
    spaced = editor(tmp_path, "spaced", "s = s.replace('Name: m24', 'Name: no geo')")
    r = daemon.cli(
        {"argv": ["edit", "mirror1"], "env": {"EDITOR": noop}},
        {"argv": ["edit", "mirror3"], "env": {"EDITOR": rename}},
        {"argv": ["show", "renamed"]},
        {"argv": ["edit", "mirror1"], "env": {"EDITOR": unknown}, "stdin": "n\n"},
        {"argv": ["edit", "mirror1"], "env": {"EDITOR": delete}},
        {"argv": ["edit", "m24"], "env": {"EDITOR": broken}, "stdin": "n\n"},
        {"argv": ["edit", "m24"], "env": {"EDITOR": taken}},
        {"argv": ["edit", "m24"], "env": {"EDITOR": spaced}, "stdin": ""},
        {"argv": ["edit", "m24"], "env": {"EDITOR": "", "PATH": str(tmp_path / "nowhere")}},
    )
    unchanged, renamed, show, bogus, deleted, yaml_error, name_taken, bad_name, no_editor = r
    assert (unchanged.code, unchanged.out) == (
        0, "Aborted - settings are unmodified, so there is nothing to change.\n")
    assert red.hgetall("MIRROR_1") == before
    assert renamed.code == 0 and renamed.out == (
        "- Name: mirror3\n+ Name: mirror3-renamed\n- Score: 0\n+ Score: 5\n"
        "- CountryCodes: FR\n+ CountryCodes: fr,de  be\n- AllowRedirects: null\n+ AllowRedirects: true\n"
        "\nMirror 'mirror3-renamed' edited successfully\n")
    assert "CountryCodes: FR DE BE\n" in show.out and "AllowRedirects: true\n" in show.out
    assert show.out.endswith("Comment:\nline one\nline two\n")
    assert red.hget("MIRROR_2", "allowredirects") == "1" and red.hget("MIRRORS", "2") == "mirror3-renamed"
    assert json.loads(red.lrange("MIRRORLOGS_2", -1, -1)[0])["Type"] == 3
    # ("unknown keys rejected"): the edit is refused, nothing saved
    assert bogus.code == 0 and re.fullmatch(
        r"yaml: unmarshal errors:\n  line \d+: field Bogus not found in type Mirror\nRetry\? \[Y/n\]Aborted\n",
        bogus.out)
    assert deleted.code == 0 and deleted.out == "Mirror 'mirror1' edited successfully\n"  # absent key kept
    assert red.hget("MIRROR_1", "adminEmail") == "jane@example.org"
    assert yaml_error.code == 0 and re.fullmatch(
        r"yaml: line \d+: did not find expected ',' or '\]'\nRetry\? \[Y/n\]Aborted\n", yaml_error.out)
    assert red.hget("MIRROR_3", "score") == "0"
    assert name_taken.code == 1 and re.fullmatch(
        FATAL + "edit error: name already taken\n", name_taken.err)
    # validation (deviation: Go accepted a name with a space); EOF at the prompt means no
    assert bad_name.out == "The identifier cannot contain a space\nRetry? [Y/n]Aborted\n"
    assert red.hget("MIRRORS", "3") == "m24"
    assert no_editor.code == 1 and no_editor.err.endswith(
        "No text editor found, please set the EDITOR environment variable\n")
    assert set(Path(tempfile.gettempdir()).glob("edit*")) <= temp_before  # temp files removed


# ---------------------------------------------------------------------------------------------------
# 32-41: remove, scan, refresh, logs


def test_remove(daemon: AdminDaemon) -> None:
    add(daemon, "mirror1", "http://127.0.0.1/")
    add(daemon, "mirror2", "http://127.0.0.2/")
    add(daemon, "localmirror", "http://127.0.0.3/")
    red = daemon.redis.client()
    red.sadd("MIRRORFILES_2", "/README")
    red.sadd("FILEMIRRORS_/README", "2", "1")
    red.hset("FILEINFO_2_/README", mapping={"size": "6", "modTime": "x"})
    red.hset("STATS_MIRROR_2026_01_01", "2", "5")
    r = daemon.cli(["remove", "-f", "mirror2"], {"argv": ["remove", "local"], "stdin": "n\n"},
                   {"argv": ["remove", "local"], "stdin": ""}, {"argv": ["remove", "local"], "stdin": "Y\n"},
                   ["add", "-http", "http://127.0.0.4/", "new"])
    assert r[0].out == "Mirror 'mirror2' removed successfully\n"
    assert not red.exists("MIRROR_2", "MIRRORFILES_2", "MIRRORLOGS_2", "FILEINFO_2_/README")
    assert red.smembers("FILEMIRRORS_/README") == {"1"}
    assert red.hget("STATS_MIRROR_2026_01_01", "2") == "5"
    assert (r[1].code, r[1].out) == (0, "Removing localmirror, are you sure? [y/N]")
    assert (r[2].code, r[2].out) == (0, "Removing localmirror, are you sure? [y/N]")    # EOF = no
    assert r[3].out == "Removing localmirror, are you sure? [y/N]Mirror 'localmirror' removed successfully\n"
    assert red.hgetall("MIRRORS") == {"1": "mirror1", "4": "new"}  # ids 2 and 3 are never reused


def test_scan_and_refresh(daemon: AdminDaemon) -> None:
    add(daemon, "m24", "http://127.0.0.24/")
    add(daemon, "mirror1", "http://127.0.0.1/", "-rsync", "rsync://127.0.0.1:1/repo/")
    r = daemon.cli(["scan", "m24"], ["refresh"], ["scan", "m24"], ["scan", "-ftp", "mirror1"])
    before, refresh, no_url, no_ftp = r
    assert (before.code, before.out) == (1, "Scanning m24... ")
    assert before.err == "\nscan error: local repository not yet indexed. You should run 'refresh' first!\n"
    assert (refresh.code, refresh.out) == (0, "Refreshing the local repository... done\n")
    assert daemon.redis.client().smembers("FILES") == {"/README", "/sub/file.iso"}
    assert no_url.err == "\nscan error: scanning m24 failed: no suitable URL for the scan\n"
    assert no_ftp.err == "\nscan error: scanning mirror1 failed: no suitable URL for the scan\n"
    daemon.redis.client().set("SCANNING_2", "1")
    locked, all_ = daemon.cli(["scan", "mirror1"], ["scan", "-all"])
    assert locked.code == 1 and locked.err == \
        "\nscan error: scanning mirror1 failed: scan already in progress\n"
    # -all goes on after a failure and prints it on stdout (exit 1 here, Go exited 0)
    assert all_.code == 1
    assert all_.out == ("Scanning m24... scan error: scanning m24 failed: no suitable URL for the scan\n"
                        "Scanning mirror1... scan error: scanning mirror1 failed: scan already in progress\n")


def test_refresh_with_missing_repository(daemon: AdminDaemon, tmp_path: Path) -> None:
    daemon.write_config(extra="")
    text = daemon.conf.read_text().replace(f"Repository: {daemon.repo}", f"Repository: {tmp_path / 'gone'}")
    daemon.conf.write_text(text)
    r = daemon.cli(["reload"], ["refresh"])
    assert r[1].code == 1 and r[1].out == "Refreshing the local repository... \n"
    assert re.fullmatch(FATAL + r"[^\n]*gone[^\n]*\n", r[1].err)


def test_logs(daemon: AdminDaemon) -> None:
    add(daemon, "mirror1", "http://127.0.0.1/")
    add(daemon, "m24", "http://127.0.0.24/")
    daemon.redis.client().delete("MIRRORLOGS_2")
    red = daemon.redis.client()
    red.rpush("MIRRORLOGS_1", "not json", '{"Type":99,"MirrorID":1,"Timestamp":"2026-11-26T03:23:00Z"}',
              '{"Type":4,"MirrorID":1,"Timestamp":"2026-11-26T03:23:06.1Z"}',
              '{"Type":3,"MirrorID":1,"Timestamp":"2026-11-26T03:23:29Z"}')
    two, empty, full = daemon.cli(["logs", "-l", "2", "mirror1"], ["logs", "m24"], ["logs", "mirror1"])
    assert two.out == ("Printing logs for mirror1:\n2026-11-26 03:23:06 UTC: Mirror enabled\n"
                       "2026-11-26 03:23:29 UTC: Mirror edited\n")
    assert empty.out == "No logs for m24\n"
    lines = full.out.splitlines()
    assert lines[0] == "Printing logs for mirror1:" and lines[1].endswith(": Mirror added")
    assert len(lines) == 4  # the two bad entries are skipped


# ---------------------------------------------------------------------------------------------------
# 42: stats


def test_stats(daemon: AdminDaemon) -> None:
    add(daemon, "mirror1", "http://127.0.0.1/")
    red = daemon.redis.client()
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=2), today - timedelta(days=1), today]
    prev_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    for d in days:
        red.hset(f"STATS_FILE_{d:%Y_%m_%d}", mapping={"/README": 3, "/sub/file.iso": 2})
        red.hset(f"STATS_MIRROR_{d:%Y_%m_%d}", "1", 5)
        red.hset(f"STATS_MIRROR_BYTES_{d:%Y_%m_%d}", "1", 1500000)
    red.hset(f"STATS_FILE_{prev_month:%Y_%m}", "/README", 100)
    red.hset(f"STATS_MIRROR_{prev_month:%Y_%m}", "1", 100)
    red.hset(f"STATS_MIRROR_BYTES_{prev_month:%Y_%m}", "1", 5000000000)
    start = days[0].isoformat()
    r = daemon.cli(["stats", "file", ".*"], ["stats", "-start-date", start, "-end-date", today.isoformat(),
                                             "file", ".*"],
                   ["stats", "-start-date", f"{prev_month:%Y-%m}-1", "-end-date", today.isoformat(),
                    "file", "README"],
                   ["stats", "file", "nomatch"], ["stats", "file", "["], ["stats", "mirror", "mirror1"],
                   ["stats", "-start-date", prev_month.isoformat(), "-h=false", "mirror", "mirror1"],
                   ["stats", "-start-date", "2026/10/15", "file", ".*"], ["stats", "foo", "bar"],
                   ["stats", "mirror"])
    today_only, two_days, with_month, nomatch, bad_re, mirror, raw, bad_date, foo, short = r
    assert today_only.out == "/README:\t\t\t3\n/sub/file.iso:\t\t\t2\n\t\t\t\t\nTotal download requests: \t5\n"
    # both dates: end excluded (only valid when the three days are in one month; else key coverage
    # differs, and the pure coverage function is tested in test_formatting)
    if days[0].month == today.month:
        assert two_days.out == \
            "/README:\t\t\t6\n/sub/file.iso:\t\t\t4\n\t\t\t\t\nTotal download requests: \t10\n"
        assert with_month.out.startswith("/README:\t\t\t106\n")
        assert mirror.out == ("Identifier:\t\tmirror1\nStatus:\t\t\tdisabled\nDownload requests:\t5\n"
                              "Bytes transferred:\t1.4 MiB\n")
        assert raw.out.endswith(f"Bytes transferred:\t{5000000000 + 1500000 * (len(days) - 1)}\n")
    assert nomatch.out == "Total download requests: \t0\n"
    assert bad_re.code == 1 and re.fullmatch(
        FATAL + r"file stats error: error parsing regexp: missing "
        r"closing \]: `\[`\n", bad_re.err)
    # deviation: bad dates rejected (Go silently used today)
    assert bad_date.code == 2 and bad_date.err.startswith('invalid value "2026/10/15" for flag -start-date')
    assert foo.code == 2 and foo.err.startswith("\nUsage: mirrorbits stats [OPTIONS] [mirror|file]")
    assert short.code == 2


# ---------------------------------------------------------------------------------------------------
# 43-47: export, geoupdate


def test_export(daemon: AdminDaemon) -> None:
    add(daemon, "mirror1", "http://127.0.0.1/repo/", "-rsync", "rsync://127.0.0.1/repo/", "-ftp",
        "ftp://127.0.0.1/repo/", "-admin-email", "jane@example.org")
    add(daemon, "mirror3", "127.0.0.3/repo")
    add(daemon, "nogeo", "http://10.0.0.1/")
    assert daemon.one("enable", "mirror1").code == 0
    mirmon, enabled, http_only, csv_, json_, bogus = daemon.cli(
        ["export", "mirmon"], ["export", "-disabled=false", "mirmon"],
        ["export", "-rsync=false", "-ftp=false", "mirmon"], ["export", "csv"], ["export", "json"],
        ["export", "bogus"])
    assert mirmon.out == ("FR\trsync://127.0.0.1/repo/\tjane@example.org\n"
                          "FR\thttp://127.0.0.1/repo/\tjane@example.org\n"
                          "FR\tftp://127.0.0.1/repo/\tjane@example.org\n"
                          "FR\thttp://127.0.0.3/repo/\t\n"
                          "FR\thttps://127.0.0.3/repo/\t\n"
                          "--\thttp://10.0.0.1/\t\n")  # Go panicked on the mirror without country
    assert enabled.out.count("\n") == 3 and "127.0.0.3" not in enabled.out
    assert "rsync://" not in http_only.out and "ftp://" not in http_only.out
    assert csv_.code == 0 and csv_.out.splitlines()[0].startswith("ID,Name,HttpURL")   # extension
    assert [m["Name"] for m in json.loads(json_.out)] == ["mirror1", "mirror3", "nogeo"]
    assert bogus.code == 2 and bogus.err.startswith("Unsupported format\n\nUsage: mirrorbits export [format]")


def test_geoupdate(daemon: AdminDaemon) -> None:
    add(daemon, "mirror1", "http://127.0.0.1/")
    _set_state(daemon, 1, latitude="1.5", longitude="2.5", continentCode="NA", countryCodes="US FR", asnum="1")
    ask, force, again = daemon.cli({"argv": ["geoupdate", "mirror1"], "stdin": "n\n"},
                                   ["geoupdate", "-f", "mirror1"], ["geoupdate", "mirror1"])
    diff = ("- Latitude: 1.5\n+ Latitude: 48.8582\n- Longitude: 2.5\n+ Longitude: 2.3387\n"
            "- ContinentCode: NA\n+ ContinentCode: EU\n- ASNum: 1\n+ ASNum: 64500\n")
    assert (ask.code, ask.out) == (0, diff + "\nUpdate mirror mirror1? [y/N]")
    assert force.out == diff + "\nMirror 'mirror1' updated successfully\n"
    assert again.out == "Geolocation is up to date, there is nothing to change.\n"
    assert daemon.redis.client().hget("MIRROR_1", "countryCodes") == "US FR"


# ---------------------------------------------------------------------------------------------------
# 48, 50-52: version, reload, upgrade


def test_version(daemon: AdminDaemon) -> None:
    ok = daemon.one("version")
    lines = ok.out.split("\n")
    assert lines[0] == "Client:" and lines[7] == "" and lines[8] == "Server:" and ok.code == 0
    for block in (lines[1:7], lines[9:15]):
        assert [line[:19] for line in block] == [
            " Version:          ", " Build:            ", " GoVersion:        ", " Operating System: ",
            " Architecture:     ", " Gomaxprocs:        "[:19]]
    unreachable = daemon.cli({"argv": ["-p", "1", "version"], "raw": True})[0]
    assert unreachable.code == 1 and unreachable.out == ok.out[: ok.out.index("Server:")]
    assert unreachable.err.startswith(UNREACHABLE)


def test_reload_changes_password_live_and_keeps_old_config_on_error(daemon: AdminDaemon) -> None:
    daemon.write_config(password="newpass")
    reload_ = daemon.one("reload")
    assert (reload_.code, reload_.out, reload_.err) == (0, "", "")
    old = daemon.one("list")
    new = daemon.one("list", password="newpass")
    assert (old.code, old.err) == (1, "Password refused\n") and new.code == 0
    daemon.write_config(password="newpass", extra="OutputMode: bogus\n")
    bad = daemon.one("reload", password="newpass")
    assert (bad.code, bad.out) == (0, "")
    assert daemon.one("list", password="newpass").code == 0 and daemon.proc.poll() is None
    assert re.search(r"SIGHUP Received: .*OutputMode", daemon.output())


def test_upgrade_answers_then_hands_over(tmp_path: Path) -> None:
    """A slow operation on a daemon of its own: the CLI gets its answer (exit 0, Go often said "transport is
    closing"), the new process takes over (pid file), and later commands work."""
    d = AdminDaemon(tmp_path)
    try:
        add(d, "mirror1", "http://127.0.0.1/")
        old_pid = d.proc.pid
        r = d.one("upgrade")
        assert (r.code, r.out, r.err) == (0, "", "")
        d.proc.wait(60)  # the old process leaves once the child has taken over
        new_pid = int((tmp_path / "mirrorbits.pid").read_text())
        assert new_pid != old_pid
        deadline = time.monotonic() + 30
        while (listed := d.one("list", "-state=false")).code != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed.out == "Identifier \nmirror1 \n"
        assert "Asking parent to quit" in d.output()
    finally:
        d.stop()


@pytest.mark.skipif(not Path("/usr/bin/mirmon").exists(), reason="Debian's mirmon is not installed")
def test_mirmon_accepts_the_export(daemon: AdminDaemon, tmp_path: Path) -> None:
    import subprocess

    add(daemon, "mirror1", "http://127.0.0.1/repo/", "-rsync", "rsync://127.0.0.1/repo/",
        "-admin-email", "jane@example.org")
    add(daemon, "mirror3", "127.0.0.3/repo")
    add(daemon, "nogeo", "http://10.0.0.1/", "-admin-email", "ops@example.org")
    export = daemon.one("export", "mirmon")
    (tmp_path / "list").write_text(export.out)
    (tmp_path / "state").write_text("")
    (tmp_path / "mirmon.conf").write_text(
        f"project_name test\nproject_url http://127.0.0.1/\nmirror_list {tmp_path / 'list'}\n"
        f"state {tmp_path / 'state'}\nweb_page {tmp_path / 'index.html'}\n"
        "countries /usr/share/mirmon/countries.list\nicons /icons\n"
        "probe /bin/true %TIMEOUT% %URL%\n")
    proc = subprocess.run(["mirmon", "-c", str(tmp_path / "mirmon.conf")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    added = sorted(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("added "))
    assert added == sorted(["rsync://127.0.0.1/repo/", "http://127.0.0.1/repo/", "http://127.0.0.3/repo/",
                            "https://127.0.0.3/repo/", "http://10.0.0.1/"])
    page = (tmp_path / "index.html").read_text()
    assert "jane@example.org" not in "".join(added) and "http://127.0.0.3/repo/" in page


def test_scan_enable_with_rsync(daemon: AdminDaemon, tmp_path: Path) -> None:
    """a real rsync daemon serving README, sub/file.iso and extra.txt."""
    from tests.fixtures.rsyncd import start_rsyncd

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for name in ("README", "sub/file.iso", "extra.txt"):
        (tree / name).write_text(name)
    rsyncd = start_rsyncd(tmp_path, {"repo": {"path": str(tree)}})
    try:
        add(daemon, "rsyncmirror", "http://127.0.0.1/repo/", "-rsync", rsyncd.url("repo"))
        refresh, scan, logs, ftp = daemon.cli(["refresh"], ["scan", "-enable", "rsyncmirror"],
                                              ["logs", "rsyncmirror"], ["scan", "-ftp", "rsyncmirror"])
    finally:
        rsyncd.stop()
    assert refresh.code == 0
    assert (scan.code, scan.err) == (0, "")
    assert scan.out == "Scanning rsyncmirror... 3 files indexed, 2 known and 0 removed\n  \u221f Enabled\n"
    texts = [line.split(": ", 1)[1] for line in logs.out.splitlines()[1:]]
    assert texts[-3:] == ["RSYNC scan started", "Scan completed: 3 files (2 known), 0 removed",
                          "Mirror enabled"]
    red = daemon.redis.client()
    assert red.hget("MIRROR_1", "enabled") == "1"
    assert red.smembers("MIRRORFILES_1") == {"/README", "/sub/file.iso", "/extra.txt"}
    assert ftp.err == "\nscan error: scanning rsyncmirror failed: no suitable URL for the scan\n"


def test_add_and_enable_send_the_go_write_commands(daemon: AdminDaemon) -> None:
    """The Redis commands of add and enable, seen by MONITOR, are the Go RPC's."""
    import threading

    seen: list[list[str]] = []
    ready = threading.Event()

    def watch() -> None:
        with daemon.redis.client().monitor() as m:
            ready.set()
            for cmd in m.listen():
                words = cmd["command"].split(" ")
                seen.append([w.strip('"') for w in words])
                if words[0] == "RPUSH" and len(seen) > 1 and any(s[0] == "HMSET" and s[1] == "MIRROR_1"
                                                                   and s[2:4] == ["enabled", "1"]
                                                                   for s in seen):
                    return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    ready.wait(10)
    no_spaces = [w if w != "first mirror" else "first" for w in ADD1]  # MONITOR lines split on spaces
    r = daemon.cli(no_spaces, ["enable", "mirror1"])
    assert [x.code for x in r] == [0, 0]
    t.join(20)
    writes = [s[:2] for s in seen if s[0] in ("INCR", "MULTI", "HMSET", "HSET", "EXEC", "PUBLISH", "RPUSH")]
    assert writes == [
        ["INCR", "LAST_MID"], ["MULTI"], ["HMSET", "MIRROR_1"], ["HSET", "MIRRORS"], ["EXEC"],
        ["PUBLISH", "_mirrorbits_mirror_update"], ["RPUSH", "MIRRORLOGS_1"],
        ["HMSET", "MIRROR_1"], ["PUBLISH", "_mirrorbits_mirror_update"], ["RPUSH", "MIRRORLOGS_1"],
    ]
    hmset = next(s for s in seen if s[0] == "HMSET")
    fields = hmset[2::2]
    assert fields == ["ID", "name", "http", "rsync", "ftp", "sponsorName", "sponsorURL", "sponsorLogo",
                      "adminName", "adminEmail", "customData", "continentOnly", "countryOnly", "asOnly",
                      "score", "latitude", "longitude", "continentCode", "countryCodes",
                      "excludedCountryCodes", "asnum", "comment", "allowredirects", "enabled", "httpsUp"]
