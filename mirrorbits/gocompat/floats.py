"""Go's float text: ``float32`` rounding and the shortest decimal forms of ``strconv`` and
``encoding/json``.

Go Mirrorbits keeps coordinates as ``float32`` and writes them with the shortest decimal that reads
back as the same float32 (``48.8567``, not ``48.856700897216797``); Redis, the JSON answers and the
CLI all carry that text, so it must come out byte for byte.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from functools import lru_cache

__all__ = [
    "Float32",
    "f32",
    "format_float32",
    "json_float32",
    "json_float64",
]

_F32 = struct.Struct("<f")
_f32_pack = _F32.pack
_f32_unpack = _F32.unpack


def f32(x: float) -> float:
    """Round ``x`` to IEEE-754 binary32, as a Go ``float32(x)`` conversion does (overflow -> ±Inf).

    The one float32 rounding of the package (it is on the selection hot path: pre-bound struct)."""
    try:
        return _f32_unpack(_f32_pack(x))[0]  # type: ignore[no-any-return]
    except OverflowError:
        return math.copysign(math.inf, x)


class Float32(float):
    """A float that Go holds as ``float32``: the value is rounded on creation, and JSON/Redis
    encoders write it with the float32 shortest form (``48.8567``, not ``48.856700897216797``)."""

    __slots__ = ()

    def __new__(cls, x: float = 0.0) -> Float32:
        return super().__new__(cls, f32(float(x)))

    def __repr__(self) -> str:
        return f"Float32({format_float32(self)})"


def _digits_from_repr(x: float) -> tuple[str, int]:
    """Shortest round-trip digits of a positive finite float64: (digits, dp), value = 0.DIGITS × 10**dp.

    Python's ``repr`` is the shortest round-trip string and, among those, the closest one; Go's
    Ryu-based ``FormatFloat(x, _, -1, 64)`` picks the same digits.
    """
    s = repr(x)
    mant, _, exp = s.partition("e")
    e = int(exp) if exp else 0
    ip, _, fp = mant.partition(".")
    digits = (ip + fp).lstrip("0")
    lead_zeros = len(ip + fp) - len((ip + fp).lstrip("0"))
    dp = len(ip) - lead_zeros + e
    digits = digits.rstrip("0") or "0"
    return digits, dp


@lru_cache(maxsize=4096)
def _shortest32(x: float) -> tuple[str, int]:
    """Shortest decimal that reads back as the same float32 (Go ``FormatFloat(x, _, -1, 32)``).

    Fast path: when the rounding interval of ``x`` is symmetric (``x`` not a power of two), the
    correctly rounded p-digit decimal is in the interval whenever any p-digit decimal is, so the
    first p whose ``%.{p-1}e`` text reads back as ``x`` wins.  Reading back goes through float64,
    which could double-round only when the float64 lands exactly on a float32 midpoint: those
    cases, and powers of two, take the exact path.
    """
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    if bits & 0x7FFFFF == 0:
        return _shortest32_exact(x)
    below = struct.unpack("<f", struct.pack("<I", bits - 1))[0]
    above = struct.unpack("<f", struct.pack("<I", bits + 1))[0] if bits < 0x7F7FFFFF else math.inf
    mid_lo, mid_hi = (x + below) / 2, (x + above) / 2
    for p in range(1, 10):
        text = f"{x:.{p - 1}e}"
        d = float(text)
        if d == mid_lo or d == mid_hi:
            return _shortest32_exact(x)
        if f32(d) == x:
            mant, _, exp = text.partition("e")
            return mant.replace(".", "").rstrip("0") or "0", int(exp) + 1
    return _shortest32_exact(x)  # pragma: no cover - 9 digits always round-trip a float32


def _shortest32_exact(x: float) -> tuple[str, int]:
    """Exact arithmetic over the rounding interval of ``x`` (asymmetric at powers of two, inclusive
    when the mantissa is even, like round-half-even parsing); among the shortest candidates the
    one nearest to ``x`` wins.  Returns (digits, dp) with value = 0.DIGITS × 10**dp.
    """
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    exp_bits = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    if exp_bits == 0:
        mant, e = frac, -149
    else:
        mant, e = frac | 0x800000, exp_bits - 150
    ulp = Fraction(2) ** e
    v = mant * ulp
    half_up = ulp / 2
    half_down = ulp / 4 if (frac == 0 and exp_bits > 1) else ulp / 2
    lo, hi = v - half_down, v + half_up
    inclusive = mant % 2 == 0
    # dp: smallest integer with v < 10**dp
    dp = math.floor(math.log10(float(v))) + 1
    while v >= Fraction(10) ** dp:
        dp += 1
    while v < Fraction(10) ** (dp - 1):
        dp -= 1
    for p in range(1, 18):
        scale = Fraction(10) ** (dp - p)
        lo_s, hi_s = lo / scale, hi / scale
        d_lo = math.ceil(lo_s)
        if not inclusive and d_lo == lo_s:
            d_lo += 1
        d_hi = math.floor(hi_s)
        if not inclusive and d_hi == hi_s:
            d_hi -= 1
        if d_lo > d_hi:
            continue
        t = v / scale
        d = math.floor(t)
        rest = t - d
        if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and d % 2 == 1):
            d += 1
        d = min(max(d, d_lo), d_hi)
        s = str(d)
        new_dp = dp - p + len(s)
        return s.rstrip("0") or "0", new_dp
    raise AssertionError("no shortest representation found")  # pragma: no cover


def _shortest(x: float, bits: int) -> tuple[bool, str, int]:
    """(negative, digits, dp) of the shortest form; zero is ("0", 1)."""
    neg = math.copysign(1.0, x) < 0
    ax = abs(x)
    if ax == 0:
        return neg, "0", 1
    if bits == 32:
        digits, dp = _shortest32(f32(ax))
    else:
        digits, dp = _digits_from_repr(ax)
    return neg, digits, dp


def _fmt_e(neg: bool, digits: str, dp: int) -> str:
    """Go ``%e`` with the shortest digits: ``d.ddde±XX`` (at least two exponent digits)."""
    out = "-" if neg else ""
    out += digits[0]
    if len(digits) > 1:
        out += "." + digits[1:]
    exp = dp - 1 if digits != "0" else 0
    sign = "-" if exp < 0 else "+"
    exp = abs(exp)
    return f"{out}e{sign}{exp:02d}"


def _fmt_f(neg: bool, digits: str, dp: int) -> str:
    """Go ``%f`` with ``max(nd - dp, 0)`` decimals (exactly the shortest digits)."""
    out = "-" if neg else ""
    nd = len(digits)
    if dp > 0:
        out += digits[:dp] + "0" * max(dp - nd, 0)
    else:
        out += "0"
    decimals = max(nd - dp, 0)
    if decimals:
        frac = "".join(digits[i] if 0 <= i < nd else "0" for i in range(dp, dp + decimals))
        out += "." + frac
    return out


def _check_finite(x: float) -> None:
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"unsupported value: {x!r}")


def _format_g(x: float, bits: int) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    neg, digits, dp = _shortest(x, bits)
    exp = dp - 1
    if digits != "0" and (exp < -4 or exp >= 6):
        return _fmt_e(neg, digits, dp)
    return _fmt_f(neg, digits, dp)


def format_float32(x: float) -> str:
    """Go ``strconv.FormatFloat(float32(x), 'g', -1, 32)``: how redigo writes a float32 to Redis
    (``latitude``/``longitude``) and how ``%v`` prints one: ``48.8582``, ``0``, ``1e-05``, ``1e+06``.

    ``x`` is rounded to float32 first, so a float64 beyond the float32 range prints ``+Inf``."""
    return _format_g(f32(x), 32)


_F32_1E_6 = f32(1e-6)
_F32_1E21 = f32(1e21)


def _json_float(x: float, bits: int) -> str:
    _check_finite(x)
    ax = abs(x)
    use_e = False
    if ax != 0:
        if bits == 64:
            use_e = ax < 1e-6 or ax >= 1e21
        else:
            # Go compares float32(abs) with the constants converted to float32.
            a32 = f32(ax)
            use_e = a32 < _F32_1E_6 or a32 >= _F32_1E21
    neg, digits, dp = _shortest(x, bits)
    if not use_e:
        return _fmt_f(neg, digits, dp)
    s = _fmt_e(neg, digits, dp)
    # encoding/json cleans up e-09 to e-9
    if len(s) >= 4 and s[-4] == "e" and s[-3] == "-" and s[-2] == "0":
        s = s[:-2] + s[-1]
    return s


def json_float32(x: float) -> str:
    """Go ``encoding/json`` text of a float32: ``48.8567``, ``0``, ``100``, ``1e-7``, ``1e+21``."""
    return _json_float(x, 32)


def json_float64(x: float) -> str:
    """Go ``encoding/json`` text of a float64 (exponent only when abs < 1e-6 or >= 1e21)."""
    return _json_float(x, 64)

