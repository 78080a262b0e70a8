"""FTP listing: parsers, precision rule, and list_ftp against real and misbehaving servers."""

from __future__ import annotations

import calendar
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.trial import unittest

from mirrorbits.scan.ftp import RFC3659_WARNING, list_ftp
from mirrorbits.scan.ftp_client import parse_ftp_url
from mirrorbits.scan.ftp_parsers import (
    EntryType,
    FtpEntry,
    Precision,
    parse_feat_reply,
    parse_list_line,
    parse_mdtm_reply,
    reply_message,
)
from mirrorbits.scan.listing import (
    PRECISION_MS,
    PRECISION_NONE,
    PRECISION_S,
    ListedFile,
    ScanAborted,
    ScanError,
    staged_record,
)
from tests.fixtures import ftpd as ftpd_fixtures
from tests.fixtures.ftpd import FtpServer, start_ftpd, start_scripted_ftpd


def _ns(*fields: int) -> int:
    padded = (*fields, 0, 0, 0)[:6]
    return calendar.timegm(padded) * 1_000_000_000


# --------------------------------------------------------------------------- parsers


def test_case_13_mlsd_file() -> None:
    e = parse_list_line("type=file;size=1234;modify=20150413095032; README")
    assert e == FtpEntry("README", EntryType.FILE, 1234, _ns(2015, 4, 13, 9, 50, 32), "UTC")


def test_case_14_mlsd_cdir_dropped_dir_is_folder() -> None:
    assert parse_list_line("type=cdir;modify=20150413095032; .") is None
    assert parse_list_line("type=pdir;modify=20150413095032; ..") is None
    e = parse_list_line("type=dir;modify=20150413095032; dists")
    assert e is not None and (e.type, e.name) == (EntryType.FOLDER, "dists")


def test_case_15_unknown_type_value_is_a_file() -> None:
    e = parse_list_line("type=OS.unix=slink:/x;modify=20150413095032; link")
    assert e == FtpEntry("link", EntryType.FILE, 0, _ns(2015, 4, 13, 9, 50, 32), "UTC")
    e = parse_list_line("type=OS.unix=symlink;modify=20150413095032; link")
    assert e is not None and e.type is EntryType.LINK


def test_mlsd_details() -> None:
    # Names keep spaces, ';' and '='; fact names are case-sensitive; fractions accepted.
    e = parse_list_line("type=file;size=7;modify=20150413095032.25; a b;c=d")
    assert e == FtpEntry("a b;c=d", EntryType.FILE, 7, _ns(2015, 4, 13, 9, 50, 32) + 250_000_000, "UTC")
    e = parse_list_line("Type=dir;Size=9; x")
    assert e == FtpEntry("x", EntryType.FILE, 0, None, "UTC")
    # A bad modify drops the line; a bad size is ignored (Go ignores the ParseUint error).
    assert parse_list_line("type=file;modify=20151313095032; x") is None
    assert parse_list_line("type=file;size=lots; x") == FtpEntry("x", EntryType.FILE, 0, None, "UTC")
    # A fact without "=" makes the line "not MLSD"; no other parser takes it.
    assert parse_list_line("type=file;junk; x") is None


def test_case_16_unix_list() -> None:
    e = parse_list_line("-rw-r--r--    1 ftp      ftp          1234 Apr 13  2014 old file.txt")
    assert e == FtpEntry("old file.txt", EntryType.FILE, 1234, _ns(2014, 4, 13), "GMT")
    e = parse_list_line("drwxr-xr-x    2 ftp      ftp          4096 Apr 13  2014 pub")
    assert e is not None and (e.type, e.name) == (EntryType.FOLDER, "pub")
    e = parse_list_line("lrwxrwxrwx    1 ftp      ftp             3 Apr 13  2014 cur -> pub")
    assert e is not None and e.type is EntryType.LINK


def test_unix_list_details() -> None:
    # "Mon DD hh:mm" is the current year; the month is case-insensitive.
    e = parse_list_line("-rw-r--r--    1 ftp ftp 5 jan  2 03:04 recent", this_year=2023)
    assert e is not None and e.mtime_ns == _ns(2023, 1, 2, 3, 4)
    # Everything after the 8th field and one separator is the name, spaces included.
    e = parse_list_line("-rw-r--r--    1 ftp ftp 5 Jan  2  2020  two  spaces ")
    assert e is not None and e.name == " two  spaces "
    # Go's two-digit year: 1960 becomes 2060.
    e = parse_list_line("-rw-r--r--    1 ftp ftp 5 Jan  2  1960 old")
    assert e is not None and e.mtime_ns == _ns(2060, 1, 2)
    # Special forms: "folder 0" and "0 <size>".
    e = parse_list_line("drwxr-xr-x folder 0 Jan 2 2020 my dir")
    assert e == FtpEntry("my dir", EntryType.FOLDER, 0, _ns(2020, 1, 2), "GMT")
    e = parse_list_line("-rw-r--r-- 0 4321 1 Jan 2 2020 my file")
    assert e == FtpEntry("my file", EntryType.FILE, 4321, _ns(2020, 1, 2), "GMT")
    # Broken fields drop the line.
    assert parse_list_line("-rw-r--r--    1 ftp ftp big Jan  2  2020 x") is None
    assert parse_list_line("-rw-r--r--    1 ftp ftp 5 Foo  2  2020 x") is None
    assert parse_list_line("-rw-r--r--    1 ftp ftp 5 Feb 30  2020 x") is None
    assert parse_list_line("brw-r--r--    1 ftp ftp 5 Feb 3  2020 x") is None
    # A line ending right after the 8th field has an empty name: Go lists the directory
    # itself as a file; we drop it.
    assert parse_list_line("-rw-r--r--    1 ftp ftp 5 Feb 3  2020 ") is None


def test_case_17_dos_list() -> None:
    e = parse_list_line("04-13-15  09:50PM       <DIR>          pub")
    assert e == FtpEntry("pub", EntryType.FOLDER, 0, _ns(2015, 4, 13, 21, 50), "UTC")
    e = parse_list_line("04-13-15  09:50AM       1234 README.TXT")
    assert e == FtpEntry("README.TXT", EntryType.FILE, 1234, _ns(2015, 4, 13, 9, 50), "UTC")
    assert parse_list_line("total 12") is None
    e = parse_list_line("2015-04-13  21:50       1234 two words")
    assert e == FtpEntry("two words", EntryType.FILE, 1234, _ns(2015, 4, 13, 21, 50), "UTC")
    e = parse_list_line("04-13-15  12:05AM       1 midnight")
    assert e is not None and e.mtime_ns == _ns(2015, 4, 13, 0, 5)
    # Go reads a short undated line like "5 x" as a file; we require the date.
    assert parse_list_line("5 x") is None
    assert parse_list_line("13-13-15  09:50AM       1 bad") is None


def test_case_18_mdtm_replies_and_precision() -> None:
    t = parse_mdtm_reply(213, "20150413095032")
    assert t == _ns(2015, 4, 13, 9, 50, 32)
    p = Precision()
    assert t is not None
    p.saw_mdtm(t)
    assert p.value == PRECISION_S
    t2 = parse_mdtm_reply(213, "20150413095032.5")
    assert t2 == _ns(2015, 4, 13, 9, 50, 32) + 500_000_000
    p.saw_mdtm(t2)
    assert p.value == PRECISION_MS
    p.saw_mdtm(t)  # once 1 ms, it stays 1 ms
    p.saw_listing_time()
    assert p.value == PRECISION_MS
    # Errors are ignored: wrong code, too short, trailing junk, zero time.
    assert parse_mdtm_reply(550, "20150413095032") is None
    assert parse_mdtm_reply(213, "2015041309503") is None
    assert parse_mdtm_reply(213, "20150413095032 ") is None
    assert parse_mdtm_reply(213, "00010101000000") is None
    assert parse_mdtm_reply(213, "20150413095032.1234567891234") == _ns(2015, 4, 13, 9, 50, 32) + 123_456_789


def test_precision_from_listing_times() -> None:
    p = Precision()
    assert p.value == PRECISION_NONE
    p.saw_listing_time()
    assert p.value == PRECISION_S


def test_feat_reply() -> None:
    lines = ["211-Features:", " MDTM", " MLST type*;size*;modify*;", " mlsd", "211-REST STREAM", "211 End"]
    assert parse_feat_reply(211, lines) == {"MDTM": "", "MLST": "type*;size*;modify*;", "mlsd": ""}
    assert parse_feat_reply(500, ["500 FEAT not understood"]) == {}
    assert reply_message(["257 \"/pub\" is cwd"]) == '"/pub" is cwd'


def test_sizes_read_as_go_parse_uint() -> None:
    # MLSD and ls sizes go through ParseUint base 0 (prefixes, "_"), DOS sizes base 10.
    assert parse_list_line("type=file;size=0x10; f", 2019) == FtpEntry("f", EntryType.FILE, 16)
    assert parse_list_line("type=file;size=1_000; f", 2019) == FtpEntry("f", EntryType.FILE, 1000)
    assert parse_list_line("type=file;size=1__0; f", 2019) == FtpEntry("f", EntryType.FILE, 0)
    ls = parse_list_line("-rw-r--r-- 1 u g 010 Mar  4  2019 f", 2019)
    assert ls is not None and ls.size == 8
    assert parse_list_line("-rw-r--r-- 1 u g 18446744073709551616 Mar  4  2019 f", 2019) is None
    dos = parse_list_line("03-04-19  12:34PM                  010 f", 2019)
    assert dos is not None and dos.size == 10


def test_ftp_url() -> None:
    u = parse_ftp_url("ftp://ftp.example.org/pub/debian/")
    assert (u.host, u.port, u.user, u.password, u.path) == ("ftp.example.org", 21, "anonymous", "anonymous", "/pub/debian/")
    u = parse_ftp_url("ftp://bob@[::1]:2121/a%20b/")
    assert (u.host, u.port, u.user, u.password, u.path) == ("::1", 2121, "bob", "anonymous", "/a b/")
    u = parse_ftp_url("ftp://bob:s%40cret@h/")
    assert (u.user, u.password) == ("bob", "s@cret")
    with pytest.raises(ValueError, match=r"^http://x/ does not start with ftp://$"):
        parse_ftp_url("http://x/")


# --------------------------------------------------------------------------- fuzzing

_names = st.text(
    alphabet=st.one_of(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"), st.sampled_from(" ;=:0123456789-")),
    min_size=1,
    max_size=40,
)
_times = st.integers(min_value=0, max_value=4102444799)  # 1970 .. 2099


@given(st.text(max_size=200))
@example("type=file;size=1; ")
@example("-rw-r--r-- 1 a b 1 Jan 1 00:00")
@example("01-01-70  12:00PM")
def test_fuzz_no_listing_line_raises(line: str) -> None:
    entry = parse_list_line(line)
    assert entry is None or (entry.name != "" and entry.size >= 0)


@given(name=_names, size=st.integers(min_value=0, max_value=2**63), when=_times, kind=st.sampled_from(["file", "dir"]))
@example(name="12 Apr 2014 look-alike.iso", size=1, when=0, kind="file")
@example(name="ünïcödé ; x=y", size=3, when=1, kind="file")
def test_fuzz_mlsd_lines(name: str, size: int, when: int, kind: str) -> None:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(when))
    e = parse_list_line(f"type={kind};size={size};modify={stamp}; {name}")
    expected_type = EntryType.FILE if kind == "file" else EntryType.FOLDER
    assert e == FtpEntry(name, expected_type, size, when * 1_000_000_000, "UTC")


@given(name=_names, size=st.integers(min_value=0, max_value=2**63), when=_times)
@example(name="1234 Apr 13  2014 looks like a date", size=1, when=0)
@example(name="-> not a link", size=1, when=0)
def test_fuzz_unix_list_lines(name: str, size: int, when: int) -> None:
    t = time.gmtime(when)
    stamp = time.strftime("%b %d  %Y", t)
    midnight = _ns(t.tm_year, t.tm_mon, t.tm_mday)
    assume(t.tm_year >= 1969 and t.tm_year < 2069)  # Go's two-digit year window
    e = parse_list_line(f"-rw-r--r--    1 ftp      ftp   {size:>10} {stamp} {name}")
    assert e == FtpEntry(name, EntryType.FILE, size, midnight, "GMT")


@given(name=_names, size=st.integers(min_value=0, max_value=2**63), when=_times)
def test_fuzz_dos_list_lines(name: str, size: int, when: int) -> None:
    # With 5 or more words in the name the ls parser claims the line (>= 9 fields) and
    # rejects its type: Go drops such lines too.
    assume(len(name.split()) <= 4 and not name[0].isspace())
    assume(not name.startswith("<DIR>"))
    t = time.gmtime(when)
    assume(1969 <= t.tm_year < 2069)
    stamp = time.strftime("%m-%d-%y  %I:%M%p", t)
    minute = _ns(t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min)
    e = parse_list_line(f"{stamp}       {size} {name}")
    assert e == FtpEntry(name.lstrip(" "), EntryType.FILE, size, minute, "UTC")


@given(when=_times, frac=st.one_of(st.none(), st.text(alphabet="0123456789", min_size=1, max_size=12)))
def test_fuzz_mdtm(when: int, frac: str | None) -> None:
    text = time.strftime("%Y%m%d%H%M%S", time.gmtime(when)) + ("" if frac is None else "." + frac)
    ns = parse_mdtm_reply(213, text)
    extra = 0 if frac is None else int(frac[:9].ljust(9, "0"))
    assert ns == when * 1_000_000_000 + extra
    p = Precision()
    p.saw_mdtm(ns)
    assert p.value == (PRECISION_MS if extra else PRECISION_S)


# --------------------------------------------------------------------------- real server

MTIME_S = calendar.timegm((2021, 6, 7, 8, 9, 10))
TREE = {
    "/README": 6,
    "/dists/sid/Release": 100,
    "/dists/sid/main/Packages": 7,
    "/dists/bookworm/Release": 9,
    "/iso/big file.iso": 4097,
    "/ünïcödé.txt": 3,
}


def _make_tree(root: Path) -> None:
    base = root / "pub" / "debian"
    for rel, size in TREE.items():
        p = base / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * size)
        os.utime(p, (MTIME_S, MTIME_S))


async def _list(url: str, **kw: Any) -> tuple[list[ListedFile], Any]:
    got: list[ListedFile] = []
    outcome = await list_ftp(url, got.append, reactor=reactor, **kw)
    return got, outcome


def _run(coro: Any) -> defer.Deferred[Any]:
    return defer.ensureDeferred(coro)


class PyftpdlibTests(unittest.TestCase):
    """list_ftp against pyftpdlib, with and without MLSD/MDTM/EPSV."""

    servers: dict[str, FtpServer]
    root: Path

    @classmethod
    def setUpClass(cls) -> None:
        import tempfile

        cls.root = Path(tempfile.mkdtemp(prefix="ftpd-test-"))
        _make_tree(cls.root)
        (cls.root / "pub" / "debian" / "current").symlink_to("README")
        variants: dict[str, dict[str, Any]] = {
            "full": {},
            "list": {"mlst": False},
            "bare": {"mlst": False, "mdtm": False, "epsv": False},
            "fraction": {"mdtm_suffix": ".5"},
            "auth": {"user": "bob", "password": "s3cret"},
            "ipv6": {"host": "::1", "mlst": False},
        }
        cls.servers = {}
        try:
            for name, kw in variants.items():
                cls.servers[name] = start_ftpd(cls.root, **kw)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        import shutil

        for server in cls.servers.values():
            server.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    def _check_tree(self, got: list[ListedFile], *, mtime_ns: int | None, zone: str) -> None:
        self.assertEqual({f.path: f.size for f in got}, TREE)
        self.assertEqual(len(got), len(TREE))  # no duplicates
        self.assertEqual({(f.mtime_ns, f.zone) for f in got}, {(mtime_ns, zone)})

    @defer.inlineCallbacks
    def test_case_20_mlsd_and_mdtm(self):  # type: ignore[no-untyped-def]
        got, outcome = yield _run(_list(self.servers["full"].url("/pub/debian/")))
        # pyftpdlib reports the symlink "current" as type=file in MLSD: it is listed.
        current = [f for f in got if f.path == "/current"]
        self.assertEqual(len(current), 1)
        self._check_tree([f for f in got if f.path != "/current"], mtime_ns=MTIME_S * 10**9, zone="GMT")
        self.assertEqual(outcome.precision_ns, PRECISION_S)
        self.assertIn("MLST", outcome.features)
        self.assertEqual(outcome.warnings, [])

    @defer.inlineCallbacks
    def test_records_per_directory_are_the_staged_records_of_the_files(self):  # type: ignore[no-untyped-def]
        for variant in ("full", "bare"):
            url = self.servers[variant].url("/pub/debian/")
            got, _ = yield _run(_list(url))
            calls: list[list[bytes]] = []
            outcome = yield _run(list_ftp(url, lambda f: None, reactor=reactor, on_records=calls.append))
            self.assertEqual(sorted(r for c in calls for r in c), sorted(staged_record(f) for f in got))
            self.assertEqual(outcome.files, len(got))
            self.assertLess(len(calls), len(got))  # one call per directory, not per file

    @defer.inlineCallbacks
    def test_list_and_mdtm_without_mlsd(self):  # type: ignore[no-untyped-def]
        got, outcome = yield _run(_list(self.servers["list"].url("/pub/debian")))
        self._check_tree(got, mtime_ns=MTIME_S * 10**9, zone="GMT")  # the symlink is ignored
        self.assertEqual(outcome.precision_ns, PRECISION_S)
        self.assertEqual(outcome.warnings, [RFC3659_WARNING])

    @defer.inlineCallbacks
    def test_case_19_neither_mdtm_nor_mlst_gives_zero_times(self):  # type: ignore[no-untyped-def]
        got, outcome = yield _run(_list(self.servers["bare"].url("/pub/debian/")))
        self._check_tree(got, mtime_ns=None, zone="UTC")
        self.assertEqual(outcome.precision_ns, PRECISION_NONE)
        self.assertNotIn("EPSV", outcome.features)

    @defer.inlineCallbacks
    def test_case_18_fractional_mdtm_gives_ms_precision(self):  # type: ignore[no-untyped-def]
        got, outcome = yield _run(_list(self.servers["fraction"].url("/pub/debian/")))
        got = [f for f in got if f.path != "/current"]
        self._check_tree(got, mtime_ns=MTIME_S * 10**9 + 500_000_000, zone="GMT")
        self.assertEqual(outcome.precision_ns, PRECISION_MS)

    @defer.inlineCallbacks
    def test_user_and_password_from_url(self):  # type: ignore[no-untyped-def]
        server = self.servers["auth"]
        got, _ = yield _run(_list(server.url("/pub/debian/dists/", "bob", "s3cret")))
        self.assertEqual(sorted(f.path for f in got), ["/bookworm/Release", "/sid/Release", "/sid/main/Packages"])
        with self.assertRaises(ScanError) as ctx:
            yield _run(_list(server.url("/pub/", "bob", "wrong")))
        self.assertTrue(str(ctx.exception).startswith("530 "), str(ctx.exception))
        with self.assertRaises(ScanError) as ctx:
            yield _run(_list(server.url("/pub/")))  # anonymous/anonymous is refused here
        self.assertTrue(str(ctx.exception).startswith("530 "), str(ctx.exception))

    @defer.inlineCallbacks
    def test_ipv6_only_through_epsv(self):  # type: ignore[no-untyped-def]
        got, _ = yield _run(_list(self.servers["ipv6"].url("/pub/debian/")))
        self._check_tree(got, mtime_ns=MTIME_S * 10**9, zone="GMT")

    @defer.inlineCallbacks
    def test_several_connections(self):  # type: ignore[no-untyped-def]
        got, outcome = yield _run(_list(self.servers["full"].url("/pub/debian/"), max_connections=3))
        self._check_tree([f for f in got if f.path != "/current"], mtime_ns=MTIME_S * 10**9, zone="GMT")
        self.assertGreaterEqual(outcome.connections, 2)
        self.assertLessEqual(outcome.connections, 3)

    @defer.inlineCallbacks
    def test_missing_directory(self):  # type: ignore[no-untyped-def]
        with self.assertRaises(ScanError) as ctx:
            yield _run(_list(self.servers["full"].url("/nope/")))
        self.assertTrue(str(ctx.exception).startswith("ftp error 550 "), str(ctx.exception))

    @defer.inlineCallbacks
    def test_connection_refused(self):  # type: ignore[no-untyped-def]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with self.assertRaises(ScanError) as ctx:
            yield _run(_list(f"ftp://127.0.0.1:{port}/"))
        self.assertIn(f"dial tcp 127.0.0.1:{port}", str(ctx.exception))

    @defer.inlineCallbacks
    def test_bad_scheme(self):  # type: ignore[no-untyped-def]
        with self.assertRaises(ValueError):
            yield _run(_list("rsync://127.0.0.1/x/"))

    @defer.inlineCallbacks
    def test_awaitable_callback_and_callback_error(self):  # type: ignore[no-untyped-def]
        seen: list[str] = []

        async def slow(f: ListedFile) -> None:
            d: defer.Deferred[None] = defer.Deferred()
            reactor.callLater(0, d.callback, None)
            await d
            seen.append(f.path)

        yield _run(list_ftp(self.servers["list"].url("/pub/debian/"), slow, reactor=reactor))
        self.assertEqual(sorted(seen), sorted(TREE))

        def boom(f: ListedFile) -> None:
            raise RuntimeError("redis is down")

        with self.assertRaises(RuntimeError):
            yield _run(list_ftp(self.servers["list"].url("/pub/debian/"), boom, reactor=reactor))


class ScriptedServerTests(unittest.TestCase):
    """Servers that hang, drop the connection or send garbage fail cleanly with a reason."""

    def _server(self, mode: str) -> Any:
        server = start_scripted_ftpd(mode)
        self.addCleanup(server.stop)
        return server

    @defer.inlineCallbacks
    def _fails(self, mode: str, **kw: Any):  # type: ignore[no-untyped-def]
        server = self._server(mode)
        started = time.monotonic()
        with self.assertRaises(ScanError) as ctx:
            yield _run(_list(server.url(), **kw))
        self.assertLess(time.monotonic() - started, 5)
        return str(ctx.exception)

    @defer.inlineCallbacks
    def test_scripted_ok(self):  # type: ignore[no-untyped-def]
        server = self._server("ok")
        got, outcome = yield _run(_list(server.url()))
        self.assertEqual(
            got,
            [
                ListedFile("/README", 1234, _ns(2015, 4, 13, 9, 50, 32), "GMT"),
                ListedFile("/other file.txt", 5, _ns(2015, 4, 13, 9, 50, 32), "GMT"),
            ],
        )
        self.assertIn("EPSV", server.commands)
        self.assertIn("CWD /pub/", server.commands)
        self.assertIn("PWD", server.commands)
        self.assertIn("MLSD /pub/", server.commands)
        self.assertIn("MDTM /pub/README", server.commands)
        self.assertEqual(server.commands[:3], ["FEAT", "USER anonymous", "PASS anonymous"])
        self.assertEqual(server.commands[-1], "QUIT")

    @defer.inlineCallbacks
    def test_pasv_fallback_uses_control_peer_address(self):  # type: ignore[no-untyped-def]
        server = self._server("no-epsv")
        got, _ = yield _run(_list(server.url()))
        self.assertEqual(len(got), 2)
        self.assertEqual(server.commands.count("EPSV"), 1)  # disabled after the first failure
        self.assertIn("PASV", server.commands)

    @defer.inlineCallbacks
    def test_garbage_greeting(self):  # type: ignore[no-untyped-def]
        reason = yield self._fails("garbage-greeting")
        self.assertEqual(reason, "invalid response code: SSH-2.0-OpenSSH_9.6")

    @defer.inlineCallbacks
    def test_hung_greeting(self):  # type: ignore[no-untyped-def]
        reason = yield self._fails("hang-greeting", timeout=0.5)
        self.assertEqual(reason, "i/o timeout")

    @defer.inlineCallbacks
    def test_garbage_reply(self):  # type: ignore[no-untyped-def]
        reason = yield self._fails("garbage-reply")
        self.assertTrue(reason.startswith("ftp error invalid response code: "), reason)

    @defer.inlineCallbacks
    def test_hang_mid_listing(self):  # type: ignore[no-untyped-def]
        reason = yield self._fails("hang-listing", timeout=0.5)
        self.assertIn("i/o timeout", reason)
        self.assertTrue(reason.startswith("ftp error "), reason)

    @defer.inlineCallbacks
    def test_connection_closed_mid_listing(self):  # type: ignore[no-untyped-def]
        reason = yield self._fails("close-listing")
        self.assertEqual(reason, "ftp error connection closed by server")

    @defer.inlineCallbacks
    def test_transfer_aborted_mid_listing(self):  # type: ignore[no-untyped-def]
        reason = yield self._fails("abort-listing")
        self.assertEqual(reason, "ftp error 426 transfer aborted")

    @defer.inlineCallbacks
    def test_garbage_lines_in_listing_are_ignored(self):  # type: ignore[no-untyped-def]
        server = self._server("garbage-listing")
        got, _ = yield _run(_list(server.url()))
        self.assertEqual([f.path for f in got], ["/README", "/other file.txt"])

    @defer.inlineCallbacks
    def test_cancel_mid_listing(self):  # type: ignore[no-untyped-def]
        server = self._server("hang-listing")
        d = _run(_list(server.url(), timeout=30))
        reactor.callLater(0.3, d.cancel)
        with self.assertRaises(ScanAborted):
            yield d


# --------------------------------------------------------------------------- the pytest fixtures

ftpd = ftpd_fixtures.ftpd  # make the factory fixtures visible in this module
scripted_ftpd = ftpd_fixtures.scripted_ftpd


def test_ftpd_fixtures_with_a_plain_client(ftpd: Any, scripted_ftpd: Any, tmp_path: Path) -> None:
    import ftplib

    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "f.txt").write_bytes(b"abc")
    server = ftpd(tmp_path, mlst=False)
    with ftplib.FTP() as client:
        client.connect(server.host, server.port, timeout=10)
        client.login()
        assert "MLST" not in client.sendcmd("FEAT")
        assert client.nlst("/pub") == ["f.txt"]
    bad = scripted_ftpd("garbage-greeting")
    with socket.create_connection((bad.host, bad.port), timeout=10) as raw:
        assert raw.recv(100).startswith(b"SSH-2.0")
