"""rsync listing: line parser, command line, and list_rsync against a real rsync daemon."""

from __future__ import annotations

import calendar
import os
import re
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.trial import unittest

from mirrorbits.scan.listing import PRECISION_S, ListedFile, ScanAborted, ScanError, staged_record
from mirrorbits.scan.rsync import (
    PARTIAL_WARNING,
    classify_rsync_line,
    list_rsync,
    rsync_chunk_records,
    rsync_command,
)
from tests.fixtures import processes
from tests.fixtures import rsyncd as rsyncd_fixtures
from tests.fixtures.rsyncd import RsyncDaemon, start_rsyncd
from tests.fixtures.trial import sleep


def parse_rsync_line(line: str) -> ListedFile | None:
    """The file a listing line stands for, or None (skipped on purpose or unusable)."""
    return classify_rsync_line(line)[0]


def _ns(*fields: int) -> int:
    return calendar.timegm(fields) * 1_000_000_000


# --------------------------------------------------------------------------- parsing


def test_case_1_plain_file() -> None:
    f = parse_rsync_line("-rw-r--r--          1,234 2019/03/04 12:34:56 debian/README")
    assert f == ListedFile("/debian/README", 1234, _ns(2019, 3, 4, 12, 34, 56), "UTC")


def test_case_2_and_3_directories_and_symlinks_are_skipped() -> None:
    assert classify_rsync_line("drwxr-xr-x          4,096 2019/03/04 12:34:56 .") == (None, None)
    assert classify_rsync_line("lrwxrwxrwx             11 2019/03/04 12:34:56 current -> 1.2.3") == (None, None)


def test_case_4_big_file_with_space() -> None:
    f = parse_rsync_line("-rw-r--r--  4,294,967,296 2020/01/31 23:59:59 iso/big file.iso")
    assert f is not None
    assert (f.path, f.size) == ("/iso/big file.iso", 4294967296)


def test_case_5_greedy_match_takes_the_last_lookalike() -> None:
    f = parse_rsync_line("-rw-r--r--             12 2020/01/31 23:59:59 weird 99 2021/02/02 01:02:03 name")
    assert f == ListedFile("/name", 99, _ns(2021, 2, 2, 1, 2, 3), "UTC")


def test_case_6_leading_spaces_of_names_are_lost() -> None:
    f = parse_rsync_line("-rw-r--r--             12 2020/01/31 23:59:59    leading.txt")
    assert f is not None and f.path == "/leading.txt"


def test_case_7_invalid_mod_time_is_skipped_with_reason() -> None:
    listed, problem = classify_rsync_line("-rw-r--r--             12 2020/13/31 23:59:59 bad-month")
    assert listed is None
    assert problem == "ScanRsync: Invalid mod time: 2020/13/31 23:59:59"
    assert parse_rsync_line("-rw-r--r--             12 2021/02/29 00:00:00 not-leap") is None
    assert parse_rsync_line("-rw-r--r--             12 2020/02/29 24:00:00 bad-hour") is None
    assert parse_rsync_line("-rw-r--r--             12 2020/02/29 23:59:59 leap") is not None


@pytest.mark.parametrize("line", ["receiving incremental file list", "", " ", "-rw-r--r-- 12 2020/01/01 00:00:00"])
def test_case_8_unmatched_lines_are_skipped_not_fatal(line: str) -> None:
    listed, problem = classify_rsync_line(line)
    assert listed is None and problem is not None
    assert parse_rsync_line(line) is None


def test_empty_name_and_bad_size_are_skipped() -> None:
    # Go indexes name[0] here and panics.
    assert classify_rsync_line("-rw-r--r--             12 2020/01/31 23:59:59 ")[1] == (
        "ScanRsync: Empty file name: '-rw-r--r--             12 2020/01/31 23:59:59 '"
    )
    assert classify_rsync_line("-rw-r--r--   ,,, 2020/01/31 23:59:59 x")[1] == "ScanRsync: Invalid size: "
    too_big = "9" * 20
    assert classify_rsync_line(f"-rw-r--r--   {too_big} 2020/01/31 23:59:59 x")[1] == (
        f"ScanRsync: Invalid size: {too_big}"
    )


def test_other_file_types_count_as_files_and_absolute_names_are_kept() -> None:
    f = parse_rsync_line("crw-r--r--              0 2020/01/31 23:59:59 /dev/null")
    assert f is not None and f.path == "/dev/null"
    f = parse_rsync_line("-rw-r--r--              0 2020/01/31 3:04:05 x")
    assert f is not None and f.mtime_ns == _ns(2020, 1, 31, 3, 4, 5)


_WS = "[\t\n\f\r ]"
_LOOKALIKE = re.compile(f"{_WS}+[0-9,]+{_WS}+[0-9/]+{_WS}+[0-9:]+{_WS}")

names = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"),
        st.sampled_from(list(" 0123456789,/:-")),
    ),
    min_size=1,
    max_size=60,
)


@given(
    name=names,
    size=st.integers(min_value=0, max_value=2**63 - 1),
    when=st.integers(min_value=0, max_value=253402300799),
)
@example(name="2020/01/31 23:59:59 looks like a date", size=5, when=0)
@example(name="café 12 ünïcödé.iso", size=12, when=1_600_000_000)
@example(name="12,345 report", size=1, when=1)
def test_fuzz_wellformed_lines_parse_exactly(name: str, size: int, when: int) -> None:
    assume(name[0] not in " \t\n\f\r")
    assume(not _LOOKALIKE.search(" " + name))  # would legitimately be split
    import time

    t = time.gmtime(when)
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", t)
    line = f"-rw-r--r-- {size:>14,} {stamp} {name}"
    f = parse_rsync_line(line)
    expected = name if name.startswith("/") else "/" + name
    assert f == ListedFile(expected, size, when * 1_000_000_000, "UTC")


@given(st.text(max_size=200))
def test_fuzz_no_line_raises(line: str) -> None:
    listed, problem = classify_rsync_line(line)
    assert listed is None or (listed.path.startswith("/") and listed.size >= 0)


# --------------------------------------------------------------------------- bulk parse


def line_by_line_records(chunk: bytes) -> list[bytes]:
    """What the exact parser stages for a chunk: the reference of the bulk parser."""
    out = []
    for raw in chunk.split(b"\n")[:-1]:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        listed = classify_rsync_line(raw.decode("utf-8", "surrogateescape"))[0]
        if listed is not None:
            out.append(staged_record(listed))
    return out


TYPICAL = (
    b"drwxr-xr-x          4,096 2019/03/04 12:34:56 .\n"
    b"-rw-r--r--          1,234 2019/03/04 12:34:56 debian/README\n"
    b"-rw-r--r--  4,294,967,296 2020/01/31 23:59:59 iso/big file.iso\n"
    b"-rw-r--r--              0 2020/02/29 00:00:00 empty\n"
    b"lrwxrwxrwx             11 2019/03/04 12:34:56 current -> 1.2.3\n"
    b"-rw-r--r--             12 2020/01/31 23:59:59    leading.txt\n"
    b"crw-r--r--              0 2020/01/31 23:59:59 /dev/null\n"
    b"-rw-r--r--         56,789 1999/12/31 01:02:03 caf\\#303\\#251 \xff\xfe raw bytes\n"
)


def test_bulk_parse_of_a_typical_chunk_is_the_line_parser_s() -> None:
    records = rsync_chunk_records(TYPICAL, {})
    assert records is not None  # taken in bulk, not declined
    assert records == line_by_line_records(TYPICAL)
    assert records[0] == b"1234\x002019-03-04 12:34:56 +0000 UTC\x00/debian/README\n"
    assert records[-1].endswith(b"\x00/caf\\#303\\#251 \xff\xfe raw bytes\n")


@pytest.mark.parametrize("odd", [
    b"-rw-r--r--             12 2020/01/31 23:59:59 weird 99 2021/02/02 01:02:03 name",  # Go splits late
    b"-rw-r--r--             12 2020/13/31 23:59:59 bad-month",
    b"-rw-r--r--             12 2021/02/29 00:00:00 not-leap",
    b"-rw-r--r--             12 2020/02/29 24:00:00 bad-hour",
    b"-rw-r--r--              0 2020/01/31 3:04:05 one-digit-hour",
    b"-rw-r--r--             12 2020/01/31 23:59:59 ",
    b"-rw-r--r--             12 2020/01/31 23:59:59  \t ",  # blanks only: Go's name is empty
    b"-rw-r--r--   ,,, 2020/01/31 23:59:59 x",
    b"-rw-r--r--   0,012 2020/01/31 23:59:59 zero-padded",
    b"-rw-r--r--   " + b"9" * 20 + b" 2020/01/31 23:59:59 x",
    b"-rw-r--r--          1,234 2019/03/04 12:34:56 crlf\r",
    b"receiving incremental file list",
    b"",
    b" -rw-r--r--          1,234 2019/03/04 12:34:56 leading-blank",
])
def test_bulk_parse_declines_what_it_is_not_sure_of(odd: bytes) -> None:
    chunk = TYPICAL + odd + b"\n"
    assert rsync_chunk_records(chunk, {}) is None


_PIECES = st.sampled_from([
    " ", "  ", "\t", "\x0c", "\r", "\x0b", ",", "/", ":", "0", "1", "9", "12", "2020", "1,234", "00",
    "2020/01/31", "2021/02/29", "2020/02/29", "0000/01/01", "9999/12/31", "2020/1/1", "23:59:59",
    "24:00:00", "3:04:05", "00:00:00", "-rw-r--r--", "drwxr-xr-x", "lrwxrwxrwx", "d", "l", "x",
    "é", "\udcff", "name.iso", " -> ", "->",
])


@given(st.lists(st.lists(_PIECES, max_size=12).map("".join), min_size=1, max_size=8))
@example(["-rw-r--r-- 1 2020/01/31 23:59:59 a 2 2020/01/31 23:59:59 b"])
@example(["-rw-r--r-- 0 2020/01/31 23:59:59 x\x0b"])
def test_fuzz_bulk_parse_never_differs_from_the_line_parser(lines: list[str]) -> None:
    chunk = b"".join(line.encode("utf-8", "surrogateescape") + b"\n" for line in lines)
    records = rsync_chunk_records(chunk, {})
    assert records is None or records == line_by_line_records(chunk)


@given(
    name=names,
    size=st.integers(min_value=0, max_value=10**18 - 1),
    when=st.integers(min_value=0, max_value=253402300799),
)
@example(name=" ", size=0, when=0)
@example(name=" \x0b", size=0, when=0)
def test_fuzz_bulk_parse_takes_wellformed_lines(name: str, size: int, when: int) -> None:
    import time

    assume("\r" not in name)
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(when))
    chunk = f"-rw-r--r-- {size:>14,} {stamp} {name}\n".encode("utf-8", "surrogateescape")
    records = rsync_chunk_records(chunk, {})
    expected = line_by_line_records(chunk)
    assert records is None or records == expected
    if name[0] not in " \t\f\x0b" and not _LOOKALIKE.search(" " + name):
        assert records == expected  # not declined


# --------------------------------------------------------------------------- command


def test_case_9_credentials_go_to_the_environment() -> None:
    argv, env = rsync_command("rsync://bob:s3cret@rsync.example.org/debian/")
    assert argv == [
        "rsync", "-r", "--no-motd", "--exclude=.~tmp~/", "--timeout=30", "--contimeout=30",
        "rsync://rsync.example.org/debian/",
    ]  # fmt: skip
    assert env == {"USER": "bob", "RSYNC_PASSWORD": "s3cret", "TZ": "UTC"}


def test_case_10_rsyncs_uses_rsync_ssl() -> None:
    argv, env = rsync_command("rsyncs://rsync.example.org/debian/")
    assert argv == [
        "rsync-ssl", "-r", "--no-motd", "--exclude=.~tmp~/", "--timeout=60",
        "rsync://rsync.example.org/debian/",
    ]  # fmt: skip
    assert env == {"TZ": "UTC"}


def test_case_11_other_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^http://x/ does not start with rsync:// or rsyncs://$"):
        rsync_command("http://x/")


def test_url_quirks() -> None:
    # Escaped form: a space becomes %20; valid escapes are kept as written.
    assert rsync_command("rsync://h/my files/")[0][-1] == "rsync://h/my%20files/"
    assert rsync_command("rsync://h/a%20b/(x)/")[0][-1] == "rsync://h/a%20b/(x)/"
    assert rsync_command("rsync://h:8873/é/")[0][-1] == "rsync://h:8873/%C3%A9/"
    # Empty password is still passed; percent-escapes in userinfo are decoded.
    assert rsync_command("rsync://bob:@h/m/")[1] == {"USER": "bob", "RSYNC_PASSWORD": "", "TZ": "UTC"}
    assert rsync_command("rsync://a%40b@h/m/")[1] == {"USER": "a@b", "TZ": "UTC"}
    assert rsync_command("rsync://:pw@h/m/")[1] == {"RSYNC_PASSWORD": "pw", "TZ": "UTC"}
    with pytest.raises(ValueError, match="invalid URL escape"):
        rsync_command("rsync://h/bad%zz/")


# --------------------------------------------------------------------------- real daemon

MTIME = _ns(2021, 6, 7, 8, 9, 10)


def _make_tree(root: Path) -> dict[str, int]:
    """Files (path → size) that a full listing must return."""
    files = {
        "/README": 6,
        "/dists/sid/Release": 100,
        "/iso/big file.iso": 4097,
        "/sub/inner.txt": 3,
        "/weird 99 2021/notadate": 1,
    }
    for rel, size in files.items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * size)
        os.utime(p, ns=(MTIME, MTIME))
    # rsync (run with only TZ=UTC in its environment, so in the C locale) escapes
    # non-ASCII bytes as \#ooo; names are stored exactly as printed, as Go does.
    (root / "café.txt").write_bytes(b"xy")
    os.utime(root / "café.txt", ns=(MTIME, MTIME))
    files["/caf\\#303\\#251.txt"] = 2
    (root / ".~tmp~").mkdir()
    (root / ".~tmp~" / "partial.iso").write_bytes(b"zz")
    (root / "current").symlink_to("README")
    return files


class RsyncDaemonTests(unittest.TestCase):
    """list_rsync against a real ``rsync --daemon`` on loopback."""

    daemon: RsyncDaemon
    tree: dict[str, int]
    workdir: Path

    @classmethod
    def setUpClass(cls) -> None:
        import tempfile

        cls.workdir = Path(tempfile.mkdtemp(prefix="rsyncd-test-"))
        data = cls.workdir / "data"
        data.mkdir()
        cls.tree = _make_tree(data)
        locked = cls.workdir / "locked"
        for i in range(300):  # > 64 KiB of "opendir failed" on stderr: must not deadlock
            (locked / f"denied-{i:04d}-{'x' * 200}").mkdir(parents=True)
        (locked / "ok.txt").write_bytes(b"ok")
        for d in locked.iterdir():
            if d.is_dir():
                d.chmod(0)
        big = cls.workdir / "big"
        big.mkdir()
        for i in range(2000):
            (big / f"f{i:05d}").write_bytes(b"")
        cls.daemon = start_rsyncd(
            cls.workdir / "daemon",
            {
                "mirror": {"path": str(data)},
                "partial": {"path": str(data), "exclude": "sub/ iso/"},
                "locked": {"path": str(locked), "uid": "nobody", "gid": "nogroup"},
                "big": {"path": str(big)},
            },
        )

    @classmethod
    def tearDownClass(cls) -> None:
        import shutil

        cls.daemon.stop()
        for d in (cls.workdir / "locked").iterdir():
            if d.is_dir():
                d.chmod(0o755)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    async def _list(self, url: str, **kw: object) -> tuple[list[ListedFile], object]:
        got: list[ListedFile] = []
        outcome = await list_rsync(url, got.append, reactor=reactor, **kw)  # type: ignore[arg-type]
        return got, outcome

    @defer.inlineCallbacks
    def test_full_listing(self):  # type: ignore[no-untyped-def]
        got, outcome = yield defer.ensureDeferred(self._list(self.daemon.url("mirror")))
        self.assertEqual({f.path: f.size for f in got}, self.tree)
        self.assertEqual({f.mtime_ns for f in got}, {MTIME})
        self.assertEqual({f.zone for f in got}, {"UTC"})
        self.assertEqual(outcome.files, len(self.tree))
        self.assertEqual(outcome.precision_ns, PRECISION_S)
        self.assertEqual(outcome.warnings, [])

    @defer.inlineCallbacks
    def test_bulk_records_are_the_staged_records_of_the_files(self):  # type: ignore[no-untyped-def]
        for module in ("mirror", "big"):
            got, _ = yield defer.ensureDeferred(self._list(self.daemon.url(module)))
            chunks: list[list[bytes]] = []

            def on_records(records: list[bytes], chunks: list[list[bytes]] = chunks) -> defer.Deferred[None]:
                chunks.append(records)
                d: defer.Deferred[None] = defer.Deferred()
                reactor.callLater(0, d.callback, None)
                return d

            outcome = yield defer.ensureDeferred(list_rsync(
                self.daemon.url(module), lambda f: None, reactor=reactor, on_records=on_records))
            records = [r for chunk in chunks for r in chunk]
            self.assertEqual(records, [staged_record(f) for f in got])
            self.assertEqual(outcome.files, len(got))
        self.assertLess(len(chunks), len(got) / 10)  # many files per call, not one

    @defer.inlineCallbacks
    def test_partial_mirror_module_with_excludes(self):  # type: ignore[no-untyped-def]
        got, _ = yield defer.ensureDeferred(self._list(self.daemon.url("partial")))
        expected = {p: s for p, s in self.tree.items() if not p.startswith(("/sub/", "/iso/"))}
        self.assertEqual({f.path: f.size for f in got}, expected)

    @defer.inlineCallbacks
    def test_subdirectory_url(self):  # type: ignore[no-untyped-def]
        got, _ = yield defer.ensureDeferred(self._list(self.daemon.url("mirror", "dists/")))
        self.assertEqual([f.path for f in got], ["/sid/Release"])

    @defer.inlineCallbacks
    def test_case_12_exit_23_is_success_with_warnings(self):  # type: ignore[no-untyped-def]
        got, outcome = yield defer.ensureDeferred(self._list(self.daemon.url("locked")))
        self.assertEqual([f.path for f in got], ["/ok.txt"])
        self.assertEqual(outcome.warnings[-1], PARTIAL_WARNING)
        opendir = [w for w in outcome.warnings if "opendir " in w]
        self.assertEqual(len(opendir), 200)  # the lister keeps the last 200
        self.assertIn("Permission denied", opendir[0])

    @defer.inlineCallbacks
    def test_exit_5_unknown_module(self):  # type: ignore[no-untyped-def]
        with self.assertRaises(ScanError) as ctx:
            yield defer.ensureDeferred(self._list(self.daemon.url("nosuchmodule")))
        self.assertEqual(str(ctx.exception), "rsync: Error starting client-server protocol")

    @defer.inlineCallbacks
    def test_case_12_exit_10_connection_refused(self):  # type: ignore[no-untyped-def]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with self.assertRaises(ScanError) as ctx:
            yield defer.ensureDeferred(self._list(f"rsync://127.0.0.1:{port}/x/"))
        self.assertEqual(str(ctx.exception), "rsync: Error in socket I/O")

    @defer.inlineCallbacks
    def test_bad_scheme_fails_before_running(self):  # type: ignore[no-untyped-def]
        with self.assertRaises(ValueError):
            yield defer.ensureDeferred(self._list("ftp://127.0.0.1/x/"))

    @defer.inlineCallbacks
    def test_backpressure_callback_returning_deferred(self):  # type: ignore[no-untyped-def]
        got: list[str] = []
        pending = {"max": 0, "now": 0}

        def slow(f: ListedFile) -> defer.Deferred[None]:
            got.append(f.path)
            pending["now"] += 1
            pending["max"] = max(pending["max"], pending["now"])
            d: defer.Deferred[None] = defer.Deferred()

            def fire() -> None:
                pending["now"] -= 1
                d.callback(None)

            reactor.callLater(0, fire)
            return d

        outcome = yield defer.ensureDeferred(list_rsync(self.daemon.url("big"), slow, reactor=reactor))
        self.assertEqual(len(got), 2000)
        self.assertEqual(got, sorted(got))
        self.assertEqual(outcome.files, 2000)
        self.assertEqual(pending["max"], 1)  # never more than one callback in flight

    @defer.inlineCallbacks
    def test_callback_error_kills_rsync_and_propagates(self):  # type: ignore[no-untyped-def]
        calls: list[ListedFile] = []

        def boom(f: ListedFile) -> None:
            calls.append(f)
            raise RuntimeError("redis is down")

        with self.assertRaises(RuntimeError):
            yield defer.ensureDeferred(list_rsync(self.daemon.url("big"), boom, reactor=reactor))
        self.assertEqual(len(calls), 1)
        # rsync's helper process (and with it the daemon's connection child) is gone too.
        url = self.daemon.url("big")
        for _ in range(250):
            left = [p for p in processes.processes() if p.command.endswith(url)]
            if not left:
                break
            yield sleep(0.02)
        self.assertEqual(left, [])


class _SilentServer:
    """Accepts TCP connections and never says a word (a hung rsync daemon)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


class RsyncHangTests(unittest.TestCase):
    def setUp(self) -> None:
        self.server = _SilentServer()
        self.addCleanup(self.server.close)

    @defer.inlineCallbacks
    def test_hung_daemon_times_out_with_reason(self):  # type: ignore[no-untyped-def]
        url = f"rsync://127.0.0.1:{self.server.port}/mod/"
        with self.assertRaises(ScanError) as ctx:
            yield defer.ensureDeferred(list_rsync(url, lambda f: None, reactor=reactor, timeout=0.5))
        self.assertEqual(str(ctx.exception), "rsync: no output for 0.5s, killed")

    @defer.inlineCallbacks
    def test_cancel_kills_rsync_and_reports_scan_aborted(self):  # type: ignore[no-untyped-def]
        url = f"rsync://127.0.0.1:{self.server.port}/mod/"
        d = defer.ensureDeferred(list_rsync(url, lambda f: None, reactor=reactor, timeout=30))
        reactor.callLater(0.3, d.cancel)
        with self.assertRaises(ScanAborted) as ctx:
            yield d
        self.assertEqual(str(ctx.exception), "scan aborted")


# --------------------------------------------------------------------------- the pytest fixture

rsyncd = rsyncd_fixtures.rsyncd  # make the factory fixture visible in this module


def test_rsyncd_fixture_serves_modules_with_excludes(rsyncd: Any, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "keep").mkdir(parents=True)
    (tree / "skip").mkdir()
    (tree / "keep" / "a").write_bytes(b"1")
    (tree / "skip" / "b").write_bytes(b"22")
    daemon = rsyncd({"m": {"path": str(tree), "exclude": "skip/"}})
    out = subprocess.run(["rsync", "-r", daemon.url("m")], capture_output=True, text=True, timeout=30, check=True)
    lines = [parse_rsync_line(line) for line in out.stdout.splitlines()]
    assert [f.path for f in lines if f is not None] == ["/keep/a"]
