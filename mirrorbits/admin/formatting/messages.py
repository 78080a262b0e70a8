"""The one-line and few-line texts of the CLI: ``add`` and ``scan`` successes, ``logs``, the
``version`` block and a fatal error line, with the Go client's exact wording and spacing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mirrorbits.gocompat import f32

__all__ = [
    "VersionInfo",
    "fatal_line",
    "format_add_success",
    "format_logs",
    "format_scan_result",
    "format_version_block",
]


def format_add_success(name: str, warnings: Sequence[str] = (), latitude: float = 0.0,
                       longitude: float = 0.0, continent: str = "", country: str = "",
                       asn: str = "") -> str:
    """stdout of a successful ``add``: warnings, location block (if a country), success lines."""
    out = [w + "\n" for w in warnings]
    if warnings:
        out.append("\n")
    if country:
        out.append("Mirror location:\n")
        out.append(f"Latitude:  {_go_fixed4(latitude)}\n")
        out.append(f"Longitude: {_go_fixed4(longitude)}\n")
        out.append(f"Continent: {continent}\n")
        out.append(f"Country:   {country}\n")
        out.append(f"ASN:       {asn}\n\n")
    out.append(f"Mirror '{name}' added successfully\n")
    out.append(f"Enable this mirror using\n  $ mirrorbits enable {name}\n")
    return "".join(out)


def _go_fixed4(x: float) -> str:
    # Go's %.4f of a float32 value widened to float64 (correctly rounded, like Python's).
    return f"{f32(x):.4f}"


def format_scan_result(files_indexed: int, known_indexed: int, removed: int, tz_offset_ms: int = 0,
                       enabled: bool = False) -> str:
    """The rest of the ``Scanning <name>... `` line on success, plus the ``∟`` lines."""
    out = f"{files_indexed} files indexed, {known_indexed} known and {removed} removed\n"
    if tz_offset_ms:
        out += f"  \u221f Timezone offset detected and corrected: {tz_offset_ms} milliseconds\n"
    if enabled:
        out += "  \u221f Enabled\n"
    return out


def format_logs(name: str, lines: Sequence[str]) -> str:
    """``logs``: ``No logs for <name>`` or ``Printing logs for <name>:`` and the lines."""
    if not lines:
        return f"No logs for {name}\n"
    return f"Printing logs for {name}:\n" + "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class VersionInfo:
    """The six values of a ``version`` block (Go's core.VersionInfo)."""

    version: str
    build: str
    go_version: str
    os: str
    arch: str
    gomaxprocs: int


def format_version_block(info: VersionInfo) -> str:
    """Six lines: one space, the label left-justified to 17, one space, the value."""
    rows = (("Version:", info.version), ("Build:", info.build), ("GoVersion:", info.go_version),
            ("Operating System:", info.os), ("Architecture:", info.arch),
            ("Gomaxprocs:", str(info.gomaxprocs)))
    return "".join(f" {label:<17} {value}\n" for label, value in rows)


def fatal_line(message: str, now: datetime | None = None) -> str:
    """A FATAL(msg) stderr line: Go's log prefix ``YYYY/MM/DD HH:MM:SS`` in the CLI's local time."""
    t = now if now is not None else datetime.now().astimezone()
    return f"{t.strftime('%Y/%m/%d %H:%M:%S')} {message}\n"
