"""Administration end to end, against the running daemon of tests/admin/conftest.py (real redis-server, real
``mirrorbits daemon`` process, GeoIP mapping 127.0.0.0/8 to France).

* A mirror added, edited, enabled and scanned with the Python CLI leaves in Redis exactly what the Go
  RPC, scanner and monitor write, checked field by
  field and value by value, and the daemon then redirects to it.
* The other way round: a mirror written as a Go node writes it is listed, shown, logged, toggled and
  edited by the Python CLI without any other byte of its record changing, and is served.
* ``stats`` with dates that do not depend on "today", through the real console script.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from mirrorbits import gocompat
from tests.admin.conftest import AdminDaemon
from tests.fixtures.rsyncd import start_rsyncd

#: The Go client's JSON log entry: Type, MirrorID, Timestamp (RFC 3339, nanoseconds, trailing zeros
#: dropped, the writer's offset), then the type's fields, compact.
TIMESTAMP = r'"Timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?(Z|[+-]\d\d:\d\d)"'
UNIX_NOW = re.compile(r"\d{10}")


def editor(tmp: Path, name: str, body: str) -> str:
    """An $EDITOR: a Python script that rewrites the file it is given."""
    path = tmp / name
    path.write_text(f"#!{sys.executable}\nimport sys\np = sys.argv[1]\ns = open(p).read()\n{body}\n"
                    "open(p, 'w').write(s)\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def raw_get(port: int, path: str) -> tuple[int, str]:
    """One GET over a raw socket: (status, Location)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    location = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("location:")), "")
    return int(head[0].split()[1]), location


def wait_redirect(daemon: AdminDaemon, path: str, want: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status, location = raw_get(daemon.http_port, path)
        if (status, location) == (302, want):
            return
        assert time.monotonic() < deadline, (status, location, daemon.output()[-3000:])
        time.sleep(0.1)


def go_monitor_marks_up(daemon: AdminDaemon, mid: int) -> None:
    """What a Go monitor writes when the HTTP check of mirror ``mid`` succeeds."""
    red = daemon.redis.client()
    red.hset(f"MIRROR_{mid}", mapping={"httpUp": "1", "httpDownReason": "", "stateSince": str(int(time.time()))})
    red.publish("_mirrorbits_mirror_update", str(mid))


def test_python_cli_writes_the_go_records_and_the_mirror_is_served(daemon: AdminDaemon,
                                                                   tmp_path: Path) -> None:
    # The mirror's tree: the local repository's two files (same size and mtime) and one more.
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    shutil.copy2(daemon.repo / "README", tree / "README")
    shutil.copy2(daemon.repo / "sub" / "file.iso", tree / "sub" / "file.iso")
    (tree / "extra.txt").write_text("extra")
    rsyncd = start_rsyncd(tmp_path / "rsyncd", {"repo": {"path": str(tree)}})
    http = "http://127.0.0.1:9/repo"  # never contacted: the monitor is off
    edit = editor(tmp_path, "edit", "s = s.replace('Score: 3', 'Score: 7')"
                                    ".replace('SponsorName: \"\"', 'SponsorName: ACME Corp')")
    try:
        r = daemon.cli(["add", "-http", http, "-rsync", rsyncd.url("repo"), "-admin-email", "jane@example.org",
                        "-score", "3", "-as-only", "-comment", "two\nlines", "pymirror"],
                       ["refresh"],
                       {"argv": ["edit", "pymirror"], "env": {"EDITOR": edit}},
                       ["enable", "pymirror"],
                       ["scan", "pymirror"])
    finally:
        rsyncd.stop()
    added, refreshed, edited, enabled, scanned = r
    assert [x.code for x in r] == [0] * 5, r
    assert edited.out == ("- SponsorName: \"\"\n+ SponsorName: ACME Corp\n- Score: 3\n+ Score: 7\n\n"
                          "Mirror 'pymirror' edited successfully\n")
    assert scanned.out == "Scanning pymirror... 3 files indexed, 2 known and 0 removed\n"
    red = daemon.redis.client()
    record = red.hgetall("MIRROR_1")
    # Scan bookkeeping: Unix seconds, protocol 0 (rsync), precision 1 s in ns, tzoffset 0 (option off).
    for key in ("lastSync", "lastSuccessfulSync"):
        assert UNIX_NOW.fullmatch(record.pop(key)), key
    assert record == {
        "ID": "1", "name": "pymirror", "http": http + "/", "rsync": rsyncd.url("repo"), "ftp": "",
        "sponsorName": "ACME Corp", "sponsorURL": "", "sponsorLogo": "", "adminName": "",
        "adminEmail": "jane@example.org", "customData": "", "continentOnly": "0", "countryOnly": "0",
        "asOnly": "1", "score": "7", "latitude": "48.8582", "longitude": "2.3387", "continentCode": "EU",
        "countryCodes": "FR", "excludedCountryCodes": "", "asnum": "64500", "comment": "two\nlines",
        "allowredirects": "0", "enabled": "1", "httpsUp": "0",
        "lastSuccessfulSyncProtocol": "0", "lastSuccessfulSyncPrecision": "1000000000", "tzoffset": "0",
    }
    assert red.hgetall("MIRRORS") == {"1": "pymirror"} and red.get("LAST_MID") == "1"
    # The scan's sets and per-file records (rsync times are UTC Go time strings, whole seconds).
    assert red.smembers("MIRRORFILES_1") == {"/README", "/sub/file.iso", "/extra.txt"}
    assert red.smembers("HANDLEDFILES_1") == {"/README", "/sub/file.iso"}
    assert not red.exists("MIRRORFILESTMP_1", "SCANNING_1")
    for path in ("/README", "/sub/file.iso", "/extra.txt"):
        st = (tree / path.lstrip("/")).stat()
        assert red.smembers(f"FILEMIRRORS_{path}") == {"1"}
        assert red.hgetall(f"FILEINFO_1_{path}") == {
            "size": str(st.st_size), "modTime": gocompat.format_gts(int(st.st_mtime) * 10**9, "UTC")}
    # The event log, entry by entry, in the Go JSON layout.
    logs = red.lrange("MIRRORLOGS_1", 0, -1)
    patterns = [r'\{"Type":2,"MirrorID":1,%s\}', r'\{"Type":3,"MirrorID":1,%s\}', r'\{"Type":4,"MirrorID":1,%s\}',
                r'\{"Type":7,"MirrorID":1,%s,"Typ":0\}',
                r'\{"Type":8,"MirrorID":1,%s,"FilesIndexed":3,"KnownIndexed":2,"Removed":0,"TZOffset":0\}']
    assert len(logs) == len(patterns), logs
    for entry, pattern in zip(logs, patterns, strict=True):
        assert re.fullmatch(pattern % TIMESTAMP, entry), entry
    # Served: once a (Go) monitor marks it up, the daemon redirects the local files to it.
    go_monitor_marks_up(daemon, 1)
    wait_redirect(daemon, "/README", http + "/README")
    status, _ = raw_get(daemon.http_port, "/extra.txt")  # on the mirror, not in the repository
    assert status == 404
    assert added.code == refreshed.code == enabled.code == 0


#: A mirror as a Go node leaves it after add, enable, a health check and an rsync scan.
GO_MIRROR = {
    "ID": "5", "name": "gomirror", "http": "https://127.0.0.2/debian/", "rsync": "rsync://127.0.0.2/debian/",
    "ftp": "", "sponsorName": "Example U.", "sponsorURL": "https://example.org/", "sponsorLogo": "",
    "adminName": "Ops", "adminEmail": "ops@example.org", "customData": "", "continentOnly": "0",
    "countryOnly": "0", "asOnly": "0", "score": "-2", "latitude": "51.50735", "longitude": "-0.1275",
    "continentCode": "EU", "countryCodes": "GB FR", "excludedCountryCodes": "RU", "asnum": "64500",
    "comment": "", "allowredirects": "2", "enabled": "1", "httpUp": "0", "httpsUp": "1",
    "httpsDownReason": "", "stateSince": "1700000500", "lastSync": "1700000600",
    "lastSuccessfulSync": "1700000600", "lastSuccessfulSyncProtocol": "0",
    "lastSuccessfulSyncPrecision": "1000000000", "tzoffset": "0", "lastModTime": "1700000000",
}

GO_SHOW = """Name: gomirror
HttpURL: https://127.0.0.2/debian/
RsyncURL: rsync://127.0.0.2/debian/
FtpURL: ""
SponsorName: Example U.
SponsorURL: https://example.org/
SponsorLogoURL: ""
AdminName: Ops
AdminEmail: ops@example.org
CustomData: ""
ContinentOnly: false
CountryOnly: false
ASOnly: false
Score: -2
Latitude: 51.50735
Longitude: -0.1275
ContinentCode: EU
CountryCodes: GB FR
ExcludedCountryCodes: RU
ASNum: 64500
Enabled: true
AllowRedirects: false

Comment:

"""


def test_go_written_mirror_is_read_kept_and_served(daemon: AdminDaemon, tmp_path: Path) -> None:
    red = daemon.redis.client()
    assert daemon.one("refresh").code == 0  # FILE_/README from the local repository
    st = (daemon.repo / "README").stat()
    red.hset("MIRROR_5", mapping=GO_MIRROR)
    red.hset("MIRRORS", "5", "gomirror")
    red.set("LAST_MID", "5")
    red.sadd("MIRRORFILES_5", "/README")
    red.sadd("HANDLEDFILES_5", "/README")
    red.sadd("FILEMIRRORS_/README", "5")
    red.hset("FILEINFO_5_/README", mapping={
        "size": str(st.st_size), "modTime": gocompat.format_gts(int(st.st_mtime) * 10**9, "UTC")})
    red.rpush("MIRRORLOGS_5",
              '{"Type":2,"MirrorID":5,"Timestamp":"2023-11-14T23:21:40.5+01:00"}',
              '{"Type":6,"MirrorID":5,"Timestamp":"2023-11-14T22:21:40.123456789Z","Proto":2,"Up":true,'
              '"Reason":""}',
              '{"Type":8,"MirrorID":5,"Timestamp":"2023-11-14T22:23:20Z","FilesIndexed":1,"KnownIndexed":1,'
              '"Removed":0,"TZOffset":-1800000}')
    red.publish("_mirrorbits_mirror_update", "5")  # the Go RPC save, monitor and scan publish these
    red.publish("_mirrorbits_mirror_file_update", "5 /README")
    noop = editor(tmp_path, "noop", "pass")
    listed, shown, logs, unchanged = daemon.cli(
        ["list", "-score", "-location"], ["show", "gomirror"], ["logs", "gomirror"],
        {"argv": ["edit", "gomirror"], "env": {"EDITOR": noop}})
    assert listed.out == ("Identifier \tSCORE\tLOCATION \tSTATE\tSINCE\n"
                          "gomirror \t-2 \tGB (EU) \tup \t(Tue, 14 Nov 2023 22:21:40 UTC)\n")
    assert shown.out == GO_SHOW
    assert logs.out == ("Printing logs for gomirror:\n"
                        "2023-11-14 23:21:40 +0100: Mirror added\n"
                        "2023-11-14 22:21:40 UTC: HTTPS mirror is up\n"
                        "2023-11-14 22:23:20 UTC: Scan completed: 1 files (1 known), 0 removed "
                        "(corrected timezone offset: -30m0s)\n")
    assert unchanged.out == "Aborted - settings are unmodified, so there is nothing to change.\n"
    assert red.hgetall("MIRROR_5") == GO_MIRROR  # reading wrote nothing
    # Served as the Go node would serve it (HTTPS-only URL, up, same size and mtime).
    wait_redirect(daemon, "/README", "https://127.0.0.2/debian/README")
    # Toggling rewrites only "enabled"; every other byte of the Go record stays.
    off, on = daemon.cli(["disable", "gomirror"], ["enable", "gomirror"])
    assert off.out == "Mirror 'gomirror' disabled successfully\n"
    assert on.out == "Mirror 'gomirror' enabled successfully\n"
    assert red.hgetall("MIRROR_5") == GO_MIRROR
    assert [json.loads(x)["Type"] for x in red.lrange("MIRRORLOGS_5", 3, -1)] == [5, 4]
    # A real edit rewrites the configuration fields the way Go's save does: the Go values read back
    # unchanged (float32 text, tri-state, negative score), httpUp forced to 0 for an https:// URL.
    rename = editor(tmp_path, "rename", "s = s.replace('AdminName: Ops', 'AdminName: Ops team')")
    renamed = daemon.one("edit", "gomirror", env={"EDITOR": rename})
    assert renamed.out == "- AdminName: Ops\n+ AdminName: Ops team\n\nMirror 'gomirror' edited successfully\n"
    assert red.hgetall("MIRROR_5") == dict(GO_MIRROR, adminName="Ops team")
    assert red.get("LAST_MID") == "5"


def test_stats_with_both_dates_are_exact(daemon: AdminDaemon) -> None:
    """``stats`` with its own fixture dates; both dates given, so "today" plays no part."""
    assert daemon.one("add", "-http", "http://127.0.0.1/", "mirror1").code == 0
    assert daemon.one("add", "-http", "http://127.0.0.2/", "quiet").code == 0
    red = daemon.redis.client()
    for day in ("2026_11_24", "2026_11_25", "2026_11_26"):
        red.hset(f"STATS_FILE_{day}", mapping={"/README": 3, "/sub/file.iso": 2})
        red.hset(f"STATS_MIRROR_{day}", "1", 5)
        red.hset(f"STATS_MIRROR_BYTES_{day}", "1", 1500000)
    red.hset("STATS_FILE_2026_10", "/README", 100)
    red.hset("STATS_MIRROR_2026_10", "1", 100)
    red.hset("STATS_MIRROR_BYTES_2026_10", "1", 5000000000)
    two_days, month, mirror, raw, quiet, one_day = daemon.cli(
        ["stats", "-start-date", "2026-11-24", "-end-date", "2026-11-26", "file", ".*"],
        ["stats", "-start-date", "2026-10-1", "-end-date", "2026-11-26", "file", "README"],
        ["stats", "-start-date", "2026-10-01", "-end-date", "2026-11-26", "mirror", "mirror1"],
        ["stats", "-start-date", "2026-10-01", "-end-date", "2026-11-26", "-h=false", "mirror", "mirror1"],
        ["stats", "-start-date", "2026-10-01", "-end-date", "2026-11-26", "mirror", "quiet"],
        ["stats", "-start-date", "2026-11-26", "-end-date", "2026-11-26", "file", "iso$"])
    assert two_days.out == "/README:\t\t\t6\n/sub/file.iso:\t\t\t4\n\t\t\t\t\nTotal download requests: \t10\n"
    assert month.out == "/README:\t\t\t106\n\t\t\t\t\nTotal download requests: \t106\n"
    assert mirror.out == ("Identifier:\t\tmirror1\nStatus:\t\t\tdisabled\nDownload requests:\t110\n"
                          "Bytes transferred:\t4.7 GiB\n")
    assert raw.out.endswith("Download requests:\t110\nBytes transferred:\t5003000000\n")
    assert quiet.out.endswith("Download requests:\t0\nBytes transferred:\t0.0 bytes\n")
    assert one_day.out == "/sub/file.iso:\t\t\t2\n\t\t\t\t\nTotal download requests: \t2\n"


def test_daemon_command_line_errors(tmp_path: Path) -> None:
    """The real console script (exit 2 for an unknown command, where Go exits 0)."""
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mirrorbits", *argv], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=60)

    missing = run("daemon", "-config", str(tmp_path / "nonexistent"))
    assert (missing.returncode, missing.stdout) == (1, "Configuration could not be found.\n\tUse -config <path>\n")
    bogus = run("daemon", "-bogus")
    assert bogus.returncode == 2 and bogus.stdout == ""
    assert bogus.stderr.startswith("flag provided but not defined: -bogus\nUsage of daemon:\n  -config string\n")
    flags = re.findall(r"^  (-\w+)", bogus.stderr, re.M)
    assert flags == ["-config", "-cpuprofile", "-debug", "-log", "-monitor", "-p"]
    misplaced = run("-debug", "daemon")
    assert (misplaced.returncode, misplaced.stdout) == (2, "Error: Command not found: daemon\n")
    assert misplaced.stderr.startswith("Usage: mirrorbits [OPTIONS] COMMAND [arg...]\n")


def test_mirmon_reads_a_24_character_url_with_an_e_mail(daemon: AdminDaemon, tmp_path: Path) -> None:
    """Go glued the e-mail to a URL cell exactly 24 wide, and mirmon then took
    ``http://127.0.0.1/repo12/ops@example.org`` for the URL.  An empty e-mail keeps Go's bytes."""
    assert daemon.one("add", "-http", "http://127.0.0.1/repo12/", "-admin-email", "ops@example.org",
                      "m12").code == 0
    assert daemon.one("add", "-http", "http://127.0.0.2/repo12/", "m12b").code == 0
    assert daemon.one("add", "-http", "http://127.0.0.1/r/", "-admin-email", "jane@example.org", "short").code == 0
    export = daemon.one("export", "mirmon")
    assert export.code == 0
    assert sorted(export.out.splitlines()) == sorted([
        "FR\thttp://127.0.0.1/repo12/\tops@example.org",  # Go: no TAB here
        "FR\thttp://127.0.0.2/repo12/",                   # as Go
        "FR\thttp://127.0.0.1/r/\tjane@example.org"])
    if shutil.which("mirmon") is None:
        print("SKIP mirmon check: Debian's mirmon is not installed (apt-get install -y mirmon)")
        return
    (tmp_path / "list").write_text(export.out)
    (tmp_path / "state").write_text("")
    (tmp_path / "mirmon.conf").write_text(
        f"project_name test\nproject_url http://127.0.0.1/\nmirror_list {tmp_path / 'list'}\n"
        f"state {tmp_path / 'state'}\nweb_page {tmp_path / 'index.html'}\n"
        "countries /usr/share/mirmon/countries.list\nicons /icons\nprobe /bin/true %TIMEOUT% %URL%\n")
    proc = subprocess.run(["mirmon", "-c", str(tmp_path / "mirmon.conf")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    added = sorted(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("added "))
    # (Go's glued line gave "http://127.0.0.1/repo12/ops@example.org/" here.)
    assert added == ["http://127.0.0.1/r/", "http://127.0.0.1/repo12/", "http://127.0.0.2/repo12/"]
