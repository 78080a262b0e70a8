"""Go's ``encoding/json`` output: key order kept, HTML-safe escapes, float32 and float64 numbers
in Go's shortest forms.  The HTTP JSON answers and the ``MIRRORLOGS_<id>`` elements are written with
it, so a Go client or a Go node reading them sees its own bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from mirrorbits.gocompat.floats import Float32, json_float32, json_float64

__all__ = ["go_json_dumps", "go_json_marshal"]


_JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    # Go >= 1.22 writes \b and \f short; older Go wrote \u0008 / \u000c (both decode the same).
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_SPECIAL = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _json_escape_char(mt: re.Match[str]) -> str:
    ch = mt.group(0)
    esc = _JSON_ESCAPES.get(ch)
    if esc is not None:
        return esc
    o = ord(ch)
    if 0xD800 <= o <= 0xDFFF:
        # A lone surrogate stands for undecodable bytes (surrogateescape): Go writes each invalid
        # byte as the replacement character.
        return "\\ufffd"
    return f"\\u{o:04x}"


def _json_str(s: str) -> str:
    return '"' + _JSON_SPECIAL.sub(_json_escape_char, s) + '"'


def _encode(value: object, out: list[str], indent: str | None, level: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_json_str(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Float32):
        out.append(json_float32(value))
    elif isinstance(value, float):
        out.append(json_float64(value))
    elif isinstance(value, Mapping):
        if not value:
            out.append("{}")
            return
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            if indent is not None:
                out.append("\n" + indent * (level + 1))
            out.append(_json_str(str(k)))
            out.append(": " if indent is not None else ":")
            _encode(v, out, indent, level + 1)
        if indent is not None:
            out.append("\n" + indent * level)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            if indent is not None:
                out.append("\n" + indent * (level + 1))
            _encode(v, out, indent, level + 1)
        if indent is not None:
            out.append("\n" + indent * level)
        out.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(value).__name__}")


def go_json_marshal(value: object, indent: str | None = None) -> str:
    """Go ``json.Marshal`` (or ``json.MarshalIndent(v, "", indent)``): no trailing newline.

    Dict key order is kept (Go struct field order); ``Float32`` values use the float32 form,
    plain floats the float64 form; NaN/Inf raise ValueError like Go's UnsupportedValueError.
    """
    out: list[str] = []
    _encode(value, out, indent, 0)
    return "".join(out)


def go_json_dumps(value: object, pretty: bool = False) -> str:
    """The JSON renderer's body: compact output ends with one ``\\n`` (``json.Encoder``); pretty
    output is indented by 4 spaces with ``": "`` and no trailing newline (``json.MarshalIndent``)."""
    if pretty:
        return go_json_marshal(value, "    ")
    return go_json_marshal(value) + "\n"

