"""Go-compatible text formats, one module per format.

The Go Mirrorbits leaks several Go-runtime text formats into Redis, HTTP responses and CLI output:
float32 shortest decimals, ``time.Time.String()``, RFC 3339 with nanoseconds, ``time.Duration``
strings, ``strconv`` number syntax and ``encoding/json`` output.  A drop-in replacement sharing one
Redis with Go nodes must write and read these byte for byte, so they all live here as pure
functions, and nowhere else in the package:

* :mod:`~mirrorbits.gocompat.floats`: float32 rounding, ``FormatFloat`` and JSON number text;
* :mod:`~mirrorbits.gocompat.times`: ``time.Time`` texts and their parsers;
* :mod:`~mirrorbits.gocompat.duration`: ``time.Duration`` text;
* :mod:`~mirrorbits.gocompat.strconv`: ``ParseInt``/``ParseUint``/``ParseFloat``/``ParseBool``
  (base 10 and base 0), ``Quote``, ``strings.Fields``;
* :mod:`~mirrorbits.gocompat.jsontext`: ``json.Marshal``.

Every public name is re-exported here, so callers import from ``mirrorbits.gocompat``.
"""

from __future__ import annotations

from mirrorbits.gocompat.duration import format_duration
from mirrorbits.gocompat.floats import (
    Float32,
    f32,
    format_float32,
    json_float32,
    json_float64,
)
from mirrorbits.gocompat.jsontext import go_json_dumps, go_json_marshal
from mirrorbits.gocompat.strconv import (
    NumError,
    go_fields,
    go_isspace,
    go_quote,
    parse_go_bool,
    parse_go_float,
    parse_go_int,
    parse_go_uint,
    redis_version_number,
)
from mirrorbits.gocompat.times import (
    NS_PER_SECOND,
    ZERO_GTS,
    ZERO_RFC3339,
    ZERO_TIME_NS,
    Zone,
    civil_to_unix_ns,
    days_from_civil,
    format_go_datetime,
    format_gts,
    format_rfc1123,
    format_rfc3339nano,
    parse_gts,
    parse_gts_offset,
    parse_rfc3339nano,
    zone_of_parsed_offset,
)

__all__ = [
    "NS_PER_SECOND",
    "Float32",
    "NumError",
    "ZERO_GTS",
    "ZERO_RFC3339",
    "ZERO_TIME_NS",
    "Zone",
    "civil_to_unix_ns",
    "days_from_civil",
    "f32",
    "format_duration",
    "format_float32",
    "format_go_datetime",
    "format_gts",
    "format_rfc1123",
    "format_rfc3339nano",
    "go_fields",
    "go_isspace",
    "go_json_dumps",
    "go_json_marshal",
    "go_quote",
    "json_float32",
    "json_float64",
    "parse_go_bool",
    "parse_go_float",
    "parse_go_int",
    "parse_go_uint",
    "parse_gts",
    "parse_gts_offset",
    "parse_rfc3339nano",
    "redis_version_number",
    "zone_of_parsed_offset",
]
