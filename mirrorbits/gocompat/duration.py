"""Go's ``time.Duration`` text: ``String()`` (``1m40s``, ``1.5µs``) and ``time.ParseDuration``.

Durations show in exclusion reasons (``Mod time mismatch (diff: 1h0m0s)``), mirror logs and the
configuration (``RedisTimeout: 5s``), so both directions follow Go exactly.  Values are integer
nanoseconds, like Go's ``int64``.
"""

from __future__ import annotations

__all__ = ["format_duration", "parse_duration"]

_INT64_MAX = (1 << 63) - 1


_NS, _US, _MS, _S, _M, _H = 1, 1_000, 1_000_000, 1_000_000_000, 60_000_000_000, 3_600_000_000_000


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


_UNITS = {"ns": _NS, "us": _US, "µs": _US, "μs": _US, "ms": _MS, "s": _S, "m": _M, "h": _H}


def parse_duration(s: str) -> int:
    """Go ``time.ParseDuration``: ``[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+`` to nanoseconds (ValueError)."""
    orig = s
    bad = ValueError(f'time: invalid duration "{orig}"')
    neg = False
    if s and s[0] in "-+":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise bad
    total = 0
    while s:
        if not (s[0] == "." or s[0].isascii() and s[0].isdigit()):
            raise bad
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        pre = i > 0
        v = int(s[:i]) if pre else 0
        if v > 1 << 63:
            raise bad
        s = s[i:]
        f, scale, post = 0, 1.0, False
        if s.startswith("."):
            s = s[1:]
            j = 0
            overflow = False
            while j < len(s) and "0" <= s[j] <= "9":
                if not overflow:
                    if f > ((1 << 63) - 1) // 10:
                        overflow = True
                    else:
                        f = f * 10 + int(s[j])
                        scale *= 10
                j += 1
            post = j > 0
            s = s[j:]
        if not pre and not post:
            raise bad
        k = 0
        while k < len(s) and s[k] != "." and not ("0" <= s[k] <= "9"):
            k += 1
        if k == 0:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        u = s[:k]
        s = s[k:]
        unit = _UNITS.get(u)
        if unit is None:
            raise ValueError(f'time: unknown unit "{u}" in duration "{orig}"')
        if v > (1 << 63) // unit:
            raise bad
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))
            if v > 1 << 63:
                raise bad
        total += v
        if total > 1 << 63:
            raise bad
    if neg:
        return -total
    if total > _INT64_MAX:
        raise bad
    return total

