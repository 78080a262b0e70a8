"""Go's ``time.Duration`` text: ``String()`` (``1m40s``, ``1.5µs``).

Durations show in exclusion reasons (``Mod time mismatch (diff: 1h0m0s)``) and in the mirror logs
the CLI prints, so the text follows Go exactly.  Values are integer nanoseconds, like Go's ``int64``.
"""

from __future__ import annotations

__all__ = ["format_duration"]

_US, _MS, _S = 1_000, 1_000_000, 1_000_000_000


def _fmt_frac(v: int, prec: int) -> tuple[str, int]:
    """Go ``fmtFrac``: the fraction of ``v / 10**prec`` without trailing zeros, and the integer part."""
    digits = ""
    printed = False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        v //= 10
    return ("." + digits if printed else ""), v


def format_duration(ns: int) -> str:
    """Go ``time.Duration.String()``: ``0s``, ``1.5µs``, ``500ms``, ``1m40s``, ``1h0m0s``, ``-10s``."""
    neg = ns < 0
    u = -ns if neg else ns
    if u < _S:
        if u == 0:
            return "0s"
        if u < _US:
            frac, ip, unit = "", u, "ns"
        elif u < _MS:
            (frac, ip), unit = _fmt_frac(u, 3), "µs"
        else:
            (frac, ip), unit = _fmt_frac(u, 6), "ms"
        out = f"{ip}{frac}{unit}"
    else:
        frac, secs = _fmt_frac(u, 9)
        out = f"{secs % 60}{frac}s"
        mins = secs // 60
        if mins > 0:
            out = f"{mins % 60}m" + out
            hours = mins // 60
            if hours > 0:
                out = f"{hours}h" + out
    return "-" + out if neg else out
