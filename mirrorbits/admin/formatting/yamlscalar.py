"""The yaml.v3 emitter, for one scalar at a time: how Go's ``yaml.Marshal`` writes a string (plain,
single-quoted, double-quoted or literal block), a float32 and a ``Key: value`` line.

``show`` and ``edit`` print the mirror as yaml.v3 writes it, and scripts diff that text, so the
choice of quoting follows yaml.v3's resolver ("would this plain text read back as something else
than a string?") and its scalar analysis rule by rule.
"""

from __future__ import annotations

import re
from datetime import date

from mirrorbits.gocompat import format_float32, parse_go_float, parse_go_int, parse_go_uint

__all__ = ["yaml_float32", "yaml_key_value", "yaml_scalar"]


def yaml_float32(value: float) -> str:
    """yaml.v3's float32 scalar: Go's shortest 'g' text with Inf/NaN spelled the YAML way."""
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
    """strconv.ParseFloat(s, 64) succeeds (out of range is an error in Go)."""
    try:
        parse_go_float(s)
    except ValueError:
        return False
    return True


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


def yaml_scalar(value: str) -> str:
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


def yaml_key_value(key: str, rendered: str) -> str:
    """One ``Key: value`` entry of a top-level block mapping, newline-terminated."""
    if rendered.startswith("|"):
        body = rendered
        return f"{key}: {body}" + ("" if body.endswith("\n") else "\n")
    return f"{key}: {rendered}\n"
