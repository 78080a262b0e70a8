"""Go's ``strconv`` number and boolean parsing, ``%q`` quoting and ``strings.Fields``.

Three readers depend on these: redigo's ``ScanStruct`` reads hash fields with base-10
``ParseInt``/``ParseUint``/``ParseFloat``/``ParseBool``; the ``flag`` package and yaml.v3 read
integers with base 0 (``0x1F``, ``0o17``, ``010``, ``1_000``); the FTP listing parsers read sizes
either way.  What one accepts and the other rejects decides whether a Python node reads the same
data as a Go node, so each rule is ported, not approximated.
"""

from __future__ import annotations

import math
import re

from mirrorbits.gocompat.floats import f32

__all__ = [
    "NumError",
    "go_fields",
    "go_isspace",
    "go_quote",
    "parse_go_bool",
    "parse_go_float",
    "parse_go_int",
    "parse_go_uint",
    "redis_version_number",
]

ERR_SYNTAX = "invalid syntax"
ERR_RANGE = "value out of range"


class NumError(ValueError):
    """Go's ``*strconv.NumError``: which function failed (``ParseInt``…), on what text, and why
    (``invalid syntax`` or ``value out of range``); ``str()`` is Go's ``Error()`` text."""

    def __init__(self, func: str, num: str, err: str) -> None:
        super().__init__(f'strconv.{func}: parsing "{num}": {err}')
        self.func = func
        self.num = num
        self.err = err

    @property
    def out_of_range(self) -> bool:
        """The text is a number, but not one that fits the width (Go's ``ErrRange``)."""
        return self.err == ERR_RANGE


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(s: str) -> bool:
    """Go ``strconv.ParseBool``: the twelve spellings above, nothing else (NumError)."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise NumError("ParseBool", s, ERR_SYNTAX)


_INT_RE = re.compile(r"[+-]?[0-9]+")
_UINT_RE = re.compile(r"[0-9]+")


def _underscore_ok(s: str) -> bool:
    """Go ``underscoreOK``: ``_`` only between digits, or between a base prefix and a digit."""
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def _parse_uint_base0(s: str, bits: int) -> int:
    """Go ``ParseUint(s, 0, bits)``: the base from the prefix, ``_`` separators, first error wins."""
    s0 = s
    base = 10
    if s[0] == "0":
        if len(s) >= 3 and s[1].lower() == "b":
            base, s = 2, s[2:]
        elif len(s) >= 3 and s[1].lower() == "o":
            base, s = 8, s[2:]
        elif len(s) >= 3 and s[1].lower() == "x":
            base, s = 16, s[2:]
        else:
            base, s = 8, s[1:]
    max_val = (1 << bits) - 1
    n = 0
    underscores = False
    for c in s:
        if c == "_":
            underscores = True
            continue
        if "0" <= c <= "9":
            d = ord(c) - ord("0")
        elif "a" <= c.lower() <= "z":
            d = ord(c.lower()) - ord("a") + 10
        else:
            raise NumError("ParseUint", s0, ERR_SYNTAX)
        if d >= base:
            raise NumError("ParseUint", s0, ERR_SYNTAX)
        n = n * base + d
        if n > max_val:
            raise NumError("ParseUint", s0, ERR_RANGE)
    if underscores and not _underscore_ok(s0):
        raise NumError("ParseUint", s0, ERR_SYNTAX)
    return n


def parse_go_uint(s: str, bits: int = 64, base: int = 10) -> int:
    """Go ``strconv.ParseUint(s, base, bits)`` for base 10 (strict digits, no sign) or base 0
    (prefixes ``0x``/``0o``/``0b``/``0``, ``_`` between digits); NumError otherwise."""
    if base == 10:
        if not _UINT_RE.fullmatch(s):
            raise NumError("ParseUint", s, ERR_SYNTAX)
        v = int(s)
        if v >> bits:
            raise NumError("ParseUint", s, ERR_RANGE)
        return v
    if base != 0:
        raise ValueError(f"unsupported base {base}")
    if s == "":
        raise NumError("ParseUint", s, ERR_SYNTAX)
    return _parse_uint_base0(s, bits)


def parse_go_int(s: str, bits: int = 64, signed: bool = True, base: int = 10) -> int:
    """Go ``strconv.ParseInt(s, base, bits)`` (``ParseUint`` when not ``signed``) for base 10 or
    base 0: a sign only when signed, range-checked against the width (NumError)."""
    if not signed:
        return parse_go_uint(s, bits, base)
    if base == 10:
        if not _INT_RE.fullmatch(s):
            raise NumError("ParseInt", s, ERR_SYNTAX)
        v = int(s)
    else:
        if base != 0:
            raise ValueError(f"unsupported base {base}")
        if s == "":
            raise NumError("ParseInt", s, ERR_SYNTAX)
        body = s[1:] if s[0] in "+-" else s
        if body == "":
            raise NumError("ParseInt", s, ERR_SYNTAX)
        try:
            un = _parse_uint_base0(body, bits)
        except NumError as exc:
            raise NumError("ParseInt", s, exc.err) from None
        v = -un if s[0] == "-" else un
    if not -(1 << (bits - 1)) <= v < 1 << (bits - 1):
        raise NumError("ParseInt", s, ERR_RANGE)
    return v


_FLOAT_RE = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.I)
_INF_RE = re.compile("inf", re.I)


def parse_go_float(s: str, bits: int = 64) -> float:
    """Go ``strconv.ParseFloat(s, bits)`` for decimal text (hex floats are not supported);
    a value out of the width's range raises NumError like Go's ``ErrRange``."""
    if not _FLOAT_RE.fullmatch(s):
        raise NumError("ParseFloat", s, ERR_SYNTAX)
    v = float(s)
    if bits == 32:
        r = f32(v)
        if math.isinf(r) and not math.isinf(v):
            raise NumError("ParseFloat", s, ERR_RANGE)
        return r
    if math.isinf(v) and not _INF_RE.search(s):
        raise NumError("ParseFloat", s, ERR_RANGE)
    return v


# Go unicode.IsSpace (Python's str.split() also splits on U+001C..U+001F, Go does not).
_GO_SPACE_CHARS = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_GO_SPACE = re.compile(f"[{_GO_SPACE_CHARS}]+")
_GO_SPACE_CHAR = re.compile(f"[{_GO_SPACE_CHARS}]")


def go_isspace(ch: str) -> bool:
    """Go ``unicode.IsSpace`` of one character."""
    return _GO_SPACE_CHAR.fullmatch(ch) is not None


def go_fields(s: str) -> list[str]:
    """Go ``strings.Fields``: split on runs of Unicode white space, no empty items."""
    return [p for p in _GO_SPACE.split(s) if p]


_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                  "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(s: str) -> str:
    """Go ``strconv.Quote`` (``%q``): how flag defaults and flag errors show a string."""
    out = ['"']
    for ch in s:
        cp = ord(ch)
        esc = _QUOTE_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def redis_version_number(v: str) -> int:
    """The Go ``parseVersion`` of a Redis server version: split on ``.``, pad to 3 parts with
    ``0``, zero-pad each part to 2 characters, concatenate and read as int64; -1 when that fails.
    Quirks kept on purpose: ``5.0.0-rc1`` -> -1 and ``3.2.100`` -> 302100 (above ``6.0.0``)."""
    parts = v.split(".")
    while len(parts) < 3:
        parts.append("0")
    text = "".join(p.rjust(2, "0") for p in parts)
    try:
        return parse_go_int(text, 64)
    except ValueError:
        return -1
