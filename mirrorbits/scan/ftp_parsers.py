"""Parsers for what FTP servers send when a mirror is listed: MLSD fact lines, Unix ``ls`` and
Windows/DOS ``LIST`` lines, FEAT and MDTM replies, plus the rule deciding a listing's time precision.

They follow the Go client (etix/goftp) line for line, so the stored sizes and times match a Go node,
and they are pure functions: the client (:mod:`mirrorbits.scan.ftp_client`) feeds them, the tests
call them directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from twisted.logger import Logger

from mirrorbits import gocompat
from mirrorbits.scan.listing import PRECISION_MS, PRECISION_NONE, PRECISION_S

log = Logger(namespace="mirrorbits.scan.ftp")


class EntryType(Enum):
    FILE = 0
    FOLDER = 1
    LINK = 2


@dataclass(frozen=True, slots=True)
class FtpEntry:
    """One parsed listing line.  ``mtime_ns`` None is Go's zero time."""

    name: str
    type: EntryType
    size: int = 0
    mtime_ns: int | None = None
    zone: str = "UTC"


class _Unsupported(Exception):
    """This parser does not recognise the line; try the next one."""


class _Invalid(Exception):
    """The parser recognised the line but it is broken: drop the line (Go returns an error)."""


def _uint(text: str, base: int = 0) -> int | None:
    """Go's ``strconv.ParseUint(text, base, 64)``; None on a syntax or range error."""
    try:
        return gocompat.parse_go_uint(text, base=base)
    except gocompat.NumError:
        return None


_STAMP_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})(?:[.,]([0-9]+))?\Z")


def parse_ftp_timestamp(text: str) -> int | None:
    """``YYYYMMDDhhmmss[.frac]`` (MLSD ``modify=`` and MDTM) to Unix ns, as Go's time.Parse."""
    m = _STAMP_RE.match(text)
    if m is None:
        return None
    frac = m.group(7) or ""
    nanos = int((frac[:9]).ljust(9, "0")) if frac else 0
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    return gocompat.civil_to_unix_ns(y, mo, d, h, mi, s, nanos)


def parse_rfc3659_line(line: str) -> FtpEntry | None:
    """An MLSD line ``fact=value;...; name``.  None means "drop" (cdir/pdir)."""
    i_semicolon = line.find(";")
    i_space = line.find(" ")
    if i_semicolon < 0 or i_semicolon > i_space:
        raise _Unsupported
    name = line[i_space + 1 :]
    kind = EntryType.FILE
    size = 0
    mtime: int | None = None
    # Go takes the facts up to the character *before* the space (the final ";").
    for fact in line[: i_space - 1].split(";"):
        eq = fact.find("=")
        if eq < 1:
            raise _Unsupported
        key, value = fact[:eq], fact[eq + 1 :]
        if key == "modify":
            mtime = parse_ftp_timestamp(value)
            if mtime is None:
                raise _Invalid
        elif key == "type":
            if value in ("cdir", "pdir"):
                return None
            if value == "dir":
                kind = EntryType.FOLDER
            elif value == "file":
                kind = EntryType.FILE
            elif value == "OS.unix=symlink":
                kind = EntryType.LINK
        elif key == "size":
            # Go ignores a bad size (ParseUint error); it would keep 0 or 2^64-1, we keep 0.
            size = _uint(value) or 0
    return FtpEntry(name, kind, size, mtime, "UTC")


def _fields_ls(line: str) -> list[str]:
    """goftp's fieldsLsList: 8 whitespace-separated fields, then the rest after one separator."""
    fields: list[str] = []
    start = -1
    next_break = False
    for i, ch in enumerate(line):
        if gocompat.go_isspace(ch):
            if start >= 0:
                fields.append(line[start:i])
                start = -1
            if next_break:
                fields.append(line[i + 1 :])
                return fields
        elif start == -1:
            start = i
            if len(fields) == 7:
                next_break = True
    if start != -1:
        fields.append(line[start:])
    return fields


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_RE = re.compile(r"[0-9]{1,2}\Z")
_HHMM_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})\Z")


def _go_two_digit_year(yy: int) -> int:
    return 1900 + yy if yy >= 69 else 2000 + yy


def _ls_time(fields: list[str], this_year: int) -> int:
    """goftp's setTime on [month, day, year-or-hh:mm]; raises _Invalid."""
    month_text, day_text, last = fields
    if len(month_text) != 3 or month_text.lower() not in _MONTHS or not _DAY_RE.match(day_text):
        raise _Invalid
    month = _MONTHS.index(month_text.lower()) + 1
    if ":" in last:
        hm = _HHMM_RE.match(last)
        if hm is None:
            raise _Invalid
        year = _go_two_digit_year(this_year % 100)
        hour, minute = int(hm.group(1)), int(hm.group(2))
    else:
        raw = last.encode("utf-8", "surrogateescape")
        if len(raw) != 4 or not raw[2:].isdigit():
            raise _Invalid
        year = _go_two_digit_year(int(raw[2:]))
        hour = minute = 0
    ns = gocompat.civil_to_unix_ns(year, month, int(day_text), hour, minute)
    if ns is None:
        raise _Invalid
    return ns


def parse_ls_line(line: str, this_year: int | None = None) -> FtpEntry:
    """A Unix ``ls -l`` style LIST line (times in GMT; ``hh:mm`` means this year)."""
    if this_year is None:
        this_year = datetime.now(UTC).year
    f = _fields_ls(line)
    if len(f) >= 7 and f[1] == "folder" and f[2] == "0":
        return FtpEntry(" ".join(f[6:]), EntryType.FOLDER, 0, _ls_time(f[3:6], this_year), "GMT")
    if len(f) < 8:
        raise _Unsupported
    if f[1] == "0":
        size = _uint(f[2])
        if size is None:
            raise _Invalid
        return FtpEntry(" ".join(f[7:]), EntryType.FILE, size, _ls_time(f[4:7], this_year), "GMT")
    if len(f) < 9:
        raise _Unsupported
    kind_char = f[0][0]
    size = 0
    if kind_char == "-":
        kind = EntryType.FILE
        parsed = _uint(f[4])
        if parsed is None:
            raise _Invalid
        size = parsed
    elif kind_char == "d":
        kind = EntryType.FOLDER
    elif kind_char == "l":
        kind = EntryType.LINK
    else:
        raise _Invalid  # Go: "Unknown entry type"
    return FtpEntry(f[8], kind, size, _ls_time(f[5:8], this_year), "GMT")


_DOS_12H_RE = re.compile(r"([0-9]{2})-([0-9]{2})-([0-9]{2})  ([0-9]{2}):([0-9]{2})(AM|PM)\Z")
_DOS_24H_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})  ([0-9]{2}):([0-9]{2})\Z")


def _dos_time(prefix: str) -> int | None:
    m = _DOS_12H_RE.match(prefix)
    if m is not None:
        mo, d, yy, h, mi = (int(g) for g in m.groups()[:5])
        if h > 12:
            return None
        if m.group(6) == "PM" and h < 12:
            h += 12
        elif m.group(6) == "AM" and h == 12:
            h = 0
        return gocompat.civil_to_unix_ns(_go_two_digit_year(yy), mo, d, h, mi)
    m = _DOS_24H_RE.match(prefix)
    if m is not None:
        y, mo, d, h, mi = (int(g) for g in m.groups())
        return gocompat.civil_to_unix_ns(y, mo, d, h, mi)
    return None


def parse_dos_line(line: str) -> FtpEntry:
    """A Windows/DOS ``DIR`` style LIST line: ``MM-DD-YY  hh:mmAM`` or ``YYYY-MM-DD  HH:MM``.

    Go's parser skips the date when the line has 17 characters or fewer and then reads
    e.g. ``"5 x"`` as a file; we require the date, which the format always has.
    """
    if len(line) <= 17:
        raise _Unsupported
    mtime = _dos_time(line[:17])
    if mtime is None:
        raise _Unsupported
    rest = line[17:].lstrip(" ")
    if rest.startswith("<DIR>"):
        return FtpEntry(rest[5:].lstrip(" "), EntryType.FOLDER, 0, mtime, "UTC")
    space = rest.find(" ")
    if space < 0:
        raise _Unsupported
    size = _uint(rest[:space], base=10)
    if size is None:
        raise _Unsupported
    return FtpEntry(rest[space:].lstrip(" "), EntryType.FILE, size, mtime, "UTC")


def parse_list_line(line: str, this_year: int | None = None) -> FtpEntry | None:
    """Parse an MLSD or LIST line with the first parser that accepts it; None = ignore.

    Never raises: a line no parser accepts, or one a parser rejects, is ignored.
    """
    try:
        parsers: tuple[Callable[[str], FtpEntry | None], ...] = (
            parse_rfc3659_line,
            lambda text: parse_ls_line(text, this_year),
            parse_dos_line,
        )
        for parser in parsers:
            try:
                entry = parser(line)
            except _Unsupported:
                continue
            if entry is not None and entry.name == "":
                # Go would list the directory itself as a file; drop the entry instead.
                return None
            return entry
    except _Invalid:
        return None
    except Exception:  # defensive: a parser bug must never stop a scan
        log.failure("FTP listing parser failed on {line!r}", line=line)
        return None
    return None


def reply_message(lines: list[str]) -> str:
    """The reply text as Go's textproto gives it (code of the first line removed, lines joined)."""
    if not lines:
        return ""
    code = lines[0][:3]
    out = [lines[0][4:]]
    for line in lines[1:]:
        if len(line) >= 4 and line.startswith(code) and line[3] in " -":
            out.append(line[4:])
        else:
            out.append(line)
    return "\n".join(out)


def parse_feat_reply(code: int, lines: list[str]) -> dict[str, str]:
    """Features from a FEAT reply: 211, then each message line starting with a space."""
    if code != 211:
        return {}
    features: dict[str, str] = {}
    for line in reply_message(lines).split("\n"):
        if not line.startswith(" "):
            continue
        name, _, desc = line.strip().partition(" ")
        features[name] = desc
    return features


def parse_mdtm_reply(code: int, text: str) -> int | None:
    """Unix ns from an MDTM reply (213, at least 14 characters, GMT), else None (ignored)."""
    if code != 213 or len(text.encode("utf-8", "surrogateescape")) < 14:
        return None
    ns = parse_ftp_timestamp(text)
    if ns is None or ns == gocompat.ZERO_TIME_NS:
        return None
    return ns


@dataclass(slots=True)
class Precision:
    """A listing's time precision: 0 → 1 s or 1 ms on MDTM, 1 ms is sticky; MLST → 1 s."""

    value: int = PRECISION_NONE

    def saw_mdtm(self, mtime_ns: int) -> None:
        if self.value != PRECISION_MS:
            self.value = PRECISION_S if mtime_ns % PRECISION_S == 0 else PRECISION_MS

    def saw_listing_time(self) -> None:
        if self.value == PRECISION_NONE:
            self.value = PRECISION_S
