"""Hostile HTTP input against a real daemon through a real socket: oversize heads, and a fuzzer.

The daemon runs as users start it (``python -m mirrorbits daemon``, embedded Redis, no mirror and
no fallback, so a file that exists answers 503).  What every exchange must show: a well-formed
status line, or a close that follows a 4xx; no 5xx but that 503; no traceback in the daemon's log;
and, once the run is over, the daemon's open descriptors back at their baseline and its resident
memory near it.

The number of cases is bounded for CI (~320, about 20 s); ``HTTPFUZZ_SCALE=10`` in the
environment runs ten times as many by hand.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrorbits.web.site import REFUSED_DRAIN_SECONDS
from tests.fixtures import processes
from tests.fixtures.servers import free_port
from tests.test_daemon import Daemon, go_style, write_config

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")
HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+: [^\r\n]*")
#: Resident memory the daemon may keep after the run (CPython rarely hands freed memory back).
RSS_SLACK_KB = 16 * 1024
SCALE = int(os.environ.get("HTTPFUZZ_SCALE", "1"))
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@dataclass
class Baseline:
    fds: int
    rss_kb: int


@dataclass
class Running:
    daemon: Daemon
    baseline: Baseline


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("hostile")
    port = free_port()
    daemon = Daemon(go_style(write_config(tmp, port), tmp), port, tmp)
    try:
        daemon.wait_http()
        deadline = time.monotonic() + 30
        while daemon.get("/pub/file.txt")[0] != 503:  # 503 once the embedded Redis serves
            assert time.monotonic() < deadline, daemon.output()
            time.sleep(0.2)
        for _ in range(200):  # warm up: imports, caches, the allocator's arenas
            assert daemon.get("/pub/file.txt")[0] == 503
        pid = daemon.proc.pid
        yield Running(daemon, Baseline(fds(pid), rss_kb(pid)))
    finally:
        daemon.stop()
        processes.stop(daemon.proc)


def exchange(port: int, chunks: list[bytes], pause: float = 0.0, first: float = 2.0,
             quiet: float = 0.15) -> tuple[bytes, bool]:
    """Send ``chunks`` (``pause`` seconds apart), then read until the daemon closes, or says
    nothing for ``first`` seconds, or nothing more for ``quiet`` seconds once it has answered;
    the bytes read and whether it closed.  A reset is a failure."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except BrokenPipeError:  # the daemon closed after refusing: read what it said
                break
            if pause:
                time.sleep(pause)
        s.settimeout(first)
        while True:
            if data:
                s.settimeout(quiet)
            try:
                got = s.recv(65536)
            except TimeoutError:
                return data, False
            if not got:
                return data, True
            data += got


def statuses(data: bytes, pipelined: bool = False) -> list[int]:
    """The status codes of the answers in ``data``, each checked well formed (status line, header
    lines; for ``pipelined`` GET answers, bodies delimited by ``Content-Length``)."""
    codes = []
    rest = data
    while rest:
        m = STATUS_LINE.match(rest)
        assert m, data[:300]
        end = rest.find(b"\r\n\r\n", m.end() - 2)
        assert end >= 0, data[:300]  # the whole head came
        length = 0
        for line in rest[m.end():end].split(b"\r\n") if end > m.end() else []:
            assert HEADER_LINE.fullmatch(line), line
            name, _, value = line.partition(b": ")
            if name.lower() == b"content-length":
                length = int(value)
        codes.append(int(m.group(1)))
        if not pipelined:
            break
        rest = rest[end + 4 + length:]
    return codes


def check_answer(data: bytes, closed: bool, must_answer: bool, pipelined: bool = False) -> None:
    if not data:
        # Silence is only fair while the daemon waits for the rest of a request; a close without
        # a word is what a client or proxy would take for a crash.
        assert not closed and not must_answer
        return
    codes = statuses(data, pipelined)
    assert codes
    for code in codes:
        assert code < 500 or code == 503, data[:300]


# Request parts: tokens the daemon knows, arbitrary bytes, and everything between.
METHODS = st.one_of(st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS",
                                     b"TRACE", b"CONNECT", b"PATCH", b"get", b""]),
                    st.binary(min_size=1, max_size=12).filter(lambda b: b" " not in b))
TARGETS = st.one_of(
    st.sampled_from([b"/", b"/pub/file.txt", b"/pub/file.txt?mirrorlist", b"/pub/file.txt?stats",
                     b"/pub/file.txt?sha256", b"/pub/missing?fromip=1.2.3.4&mirrorlist",
                     b"/pub/../../etc/passwd", b"*", b"http://x/pub/file.txt", b"//pub//file.txt",
                     b"/%zz", b"/pub/file.txt?mirrorstats", b"/?stats=2025-13-99"]),
    st.binary(max_size=200).map(lambda b: b"/" + b),
    st.text(max_size=60).map(lambda t: ("/" + t).encode("utf-8", "surrogatepass")))
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1x",
                            b"http/1.1", b"HTTP/", b""])
NO_CRLF = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
HEADER_NAMES = st.one_of(st.sampled_from([b"Host", b"Accept", b"Accept-Encoding", b"If-Modified-Since",
                                          b"X-Forwarded-For", b"Connection", b"Range", b"Expect",
                                          b"Cookie", b""]), NO_CRLF.filter(lambda b: b":" not in b))
HEADER_VALUES = st.one_of(st.sampled_from([b"gzip", b"application/json", b"close", b"keep-alive",
                                           b"100-continue", b"bytes=0-1", b"1.2.3.4, ::1",
                                           b"Sat, 01 Jan 2000 00:00:00 GMT", b"garbage"]), NO_CRLF)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8)


def head_of(method: bytes, target: bytes, version: bytes,
            headers: list[tuple[bytes, bytes]]) -> bytes:
    line = b" ".join(part for part in (method, target.replace(b"\r", b"").replace(b"\n", b""),
                                       version) if part)
    return line + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"


@given(METHODS, TARGETS, VERSIONS, HEADERS, st.binary(max_size=64))
@settings(FUZZ, max_examples=150 * SCALE)
def test_random_requests(running: Running, method: bytes, target: bytes, version: bytes,
                         headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [(n, v) for n, v in headers
               if n.lower() not in (b"content-length", b"transfer-encoding")]
    if body:
        headers.append((b"Content-Length", b"%d" % len(body)))
    data, closed = exchange(running.daemon.port, [head_of(method, target, version, headers) + body])
    check_answer(data, closed, must_answer=True)


PLAIN = b"GET /pub/file.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"


@given(st.lists(st.tuples(st.integers(0, len(PLAIN) - 1), st.sampled_from(["set", "insert", "delete"]),
                          st.integers(0, 255)), min_size=1, max_size=6))
@settings(FUZZ, max_examples=120 * SCALE)
def test_mutated_requests(running: Running, mutations: list[tuple[int, str, int]]) -> None:
    raw = bytearray(PLAIN)
    for at, how, byte in mutations:
        at = min(at, len(raw) - 1)
        if how == "set":
            raw[at] = byte
        elif how == "insert":
            raw.insert(at, byte)
        elif len(raw) > 1:
            del raw[at]
    data, closed = exchange(running.daemon.port, [bytes(raw)], first=0.3)
    check_answer(data, closed, must_answer=False)


@given(st.lists(st.tuples(TARGETS.filter(lambda t: b" " not in t and b"\r" not in t
                                         and b"\n" not in t), st.sampled_from([b"", b"gzip"])),
                min_size=2, max_size=6))
@settings(FUZZ, max_examples=40 * SCALE)
def test_pipelined_requests(running: Running, requests: list[tuple[bytes, bytes]]) -> None:
    """GETs sent back to back in one write: one answer each, in order, on the one connection."""
    raw = b"".join(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nAccept-Encoding: " + encoding
                   + b"\r\n\r\n" for target, encoding in requests)
    data, closed = exchange(running.daemon.port, [raw], quiet=0.3)
    check_answer(data, closed, must_answer=True, pipelined=True)
    codes = statuses(data, pipelined=True)
    # Every request answered, unless one was refused outright (400 closes the connection).
    assert len(codes) == len(requests) or (codes[-1] == 400 and closed), codes


@given(st.integers(1, 7), st.sampled_from([PLAIN, b"GET /pub/missing HTTP/1.0\r\n\r\n",
                                           b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n"]))
@settings(FUZZ, max_examples=6)
def test_slow_senders(running: Running, size: int, raw: bytes) -> None:
    """A request that arrives a few bytes at a time is answered as if it came at once."""
    if len(raw) > 1000:  # the oversize line: slow only around the limit, to stay short
        chunks = [raw[:16_300]] + [raw[i:i + 50] for i in range(16_300, 16_700, 50)]
    else:
        chunks = [raw[i:i + size] for i in range(0, len(raw), size)]
    data, closed = exchange(running.daemon.port, chunks, pause=0.005)
    check_answer(data, closed, must_answer=True)


def refused(port: int, raw: bytes) -> tuple[bytes, bool]:
    data, closed = exchange(port, [raw], quiet=REFUSED_DRAIN_SECONDS + 3)  # until closed
    return data, closed


def test_oversize_request_line_is_414(running: Running) -> None:
    raw = b"GET /" + b"a" * (20_000 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert len(raw.split(b"\r\n")[0]) == 20_000
    data, closed = refused(running.daemon.port, raw)
    assert data == (b"HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Connection: close\r\n\r\n414 URI Too Long")
    assert closed


@pytest.mark.parametrize("headers", [
    [(b"X-Filler-%d" % i, b"v" * 1000) for i in range(17)],  # 17 KB of header lines
    [(b"Cookie", b"c" * 17_000)],  # one header line over the line limit
], ids=["block", "line"])
def test_oversize_header_block_is_431(running: Running, headers: list[tuple[bytes, bytes]]) -> None:
    raw = head_of(b"GET", b"/pub/file.txt", b"HTTP/1.1", [(b"Host", b"x"), *headers])
    assert len(raw) > 17_000
    data, closed = refused(running.daemon.port, raw)
    assert data == (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
                    b"431 Request Header Fields Too Large")
    assert closed


def test_a_refused_client_still_sending_reads_the_answer(running: Running) -> None:
    """A client that keeps writing (a megabyte of request line) is not reset before it reads
    the 414: the daemon drops what follows the limit instead of closing on unread bytes."""
    data, closed = refused(running.daemon.port, b"GET /" + b"a" * 1_000_000)
    assert data.startswith(b"HTTP/1.1 414 URI Too Long\r\n") and closed


#: A complete request a smuggling shape could hide after itself, as a proxy might have read it.
SMUGGLED = b"GET /pub/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("raw", [
    b"POST /pub/file.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    b"POST /pub/file.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    b"POST /pub/file.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n" + SMUGGLED,
    b"POST /pub/file.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nContent-Length: 44\r\n\r\n" + SMUGGLED,
    b"POST /pub/file.txt HTTP/1.1\r\nHost: x\r\nContent-Length: +44\r\n\r\n" + SMUGGLED,
    b"POST /pub/file.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHost: x\r\n\tContent-Length: 44\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\nHost: x\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHost: x\nContent-Length: 44\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHost: x\rContent-Length: 44\r\n\r\n" + SMUGGLED,
    b"GET /pub/file\x00.txt HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED,
    b"GET /pub/file\x01.txt HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED,
    b"GET /pub/file\x7f.txt HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHost: x\x00y\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHost: x\x01y\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHost: x\x7f\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHost : x\r\n\r\n" + SMUGGLED,
    b"GET /pub/file.txt HTTP/1.1\r\nHo\x00st: x\r\n\r\n" + SMUGGLED,
], ids=["cl-then-te", "te-then-cl", "two-lengths", "same-length-twice", "signed-length",
        "unknown-coding", "obs-fold", "obs-fold-hides-length", "bare-lf-request-line",
        "bare-lf-header", "bare-cr-header", "nul-target", "ctl-target", "del-target", "nul-value",
        "ctl-value", "del-value", "space-before-colon", "nul-name"])
def test_smuggling_shapes_get_one_400_and_a_close(running: Running, raw: bytes) -> None:
    """Each shape a front proxy and this daemon could read differently is refused with a 400 and a
    close; the request hidden after it is never answered (exactly one answer on the connection)."""
    data, closed = refused(running.daemon.port, raw)
    assert statuses(data) == [400], data[:300]
    assert data.count(b"HTTP/1.1 ") == 1, data[:300]
    assert closed


def test_absolute_form_is_answered_once_as_its_origin_form(running: Running) -> None:
    """An absolute-form target is a valid request (RFC 9112 3.2.2; Go answers it for its path):
    answered like the origin form, once, on a connection that stays open for the next one."""
    data, closed = exchange(running.daemon.port, [b"GET http://x/pub/file.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                                                  + PLAIN], quiet=0.3)
    assert statuses(data, pipelined=True) == [503, 503] and not closed
    origin, _ = exchange(running.daemon.port, [PLAIN])
    assert without_date(data) == without_date(origin) * 2


def without_date(data: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", data)


def test_pipelined_requests_after_a_refusal_are_never_answered(running: Running) -> None:
    """Good, bad, good in one write: the first answered, the second refused, the third dropped."""
    data, closed = refused(running.daemon.port, PLAIN + b"GET /pub/file.txt HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n" + PLAIN)
    assert statuses(data, pipelined=True) == [503, 400] and closed


def test_a_plain_request_still_answers_and_the_log_has_no_traceback(running: Running) -> None:
    data, closed = exchange(running.daemon.port, [PLAIN])
    assert statuses(data) == [503] and not closed
    log = running.daemon.output()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def test_descriptors_and_memory_return_to_baseline(running: Running) -> None:
    """Last in this module: after everything above, no descriptor is left open and resident
    memory stays near where the warmed-up daemon started."""
    pid = running.daemon.proc.pid
    deadline = time.monotonic() + REFUSED_DRAIN_SECONDS + 10
    while fds(pid) > running.baseline.fds:
        assert time.monotonic() < deadline, (fds(pid), running.baseline)
        time.sleep(0.2)
    grown = rss_kb(pid) - running.baseline.rss_kb
    print(f"fds {fds(pid)} (baseline {running.baseline.fds}); RSS {rss_kb(pid)} kB "
          f"(baseline {running.baseline.rss_kb} kB, +{grown} kB)")
    assert grown < RSS_SLACK_KB
