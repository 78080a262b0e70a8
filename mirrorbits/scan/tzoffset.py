"""FixTimezoneOffsets: detecting a mirror's clock shift from sampled files, as a pure function.

Some mirrors serve times shifted by their local time zone.  After a scan we compare a
random sample of files present both locally and on the mirror; when nearly all of them
disagree by the same amount, that amount is the mirror's ``tzoffset``.  The Redis reads
(SRANDMEMBER, FILE_*, FILEINFO_*) and the write belong to the caller; this module only
decides, so the exact thresholds can be tested without a database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mirrorbits.gocompat import ZERO_TIME_NS

#: How many paths the caller samples with SRANDMEMBER.
SAMPLE_SIZE = 100
#: Fewer valid pairs than this never yields an offset.
MIN_VALID_PAIRS = 10
WARN_UNABLE = "Unable to guess the timezone offset"


@dataclass(frozen=True, slots=True)
class TzSample:
    """The local and mirror view of one sampled path (mtimes in Unix ns, None = zero time)."""

    local_size: int
    local_mtime_ns: int | None
    mirror_size: int
    mirror_mtime_ns: int | None


@dataclass(frozen=True, slots=True)
class TzOffsetResult:
    """``offset_ms`` is what to store in ``MIRROR_<id>.tzoffset`` (0 when not detected)."""

    offset_ms: int
    detected: bool
    valid_pairs: int
    threshold: int


def tz_threshold(valid_pairs: int) -> int:
    """Votes needed for an offset: ``int((p / 100.0) * 90.0)`` in IEEE doubles, as in Go.

    Usually floor(0.9 p), but rounding makes p = 70 give 62.
    """
    return int((valid_pairs / 100.0) * 90.0)


def to_unix_ms(mtime_ns: int | None, precision_ns: int) -> int:
    """Truncate to the scan precision, then Unix ms rounding toward zero (Go's UnixNano()/1e6).

    Go's Time.Truncate rounds down since the zero time; for 1 s and 1 ms steps that is the
    same as flooring Unix time, since the epoch lies a whole number of seconds after it.
    """
    ns = ZERO_TIME_NS if mtime_ns is None else mtime_ns
    if precision_ns > 0:
        ns -= (ns - ZERO_TIME_NS) % precision_ns
    ms = abs(ns) // 1_000_000
    return ms if ns >= 0 else -ms


def compute_tz_offset(sampled: int, samples: Iterable[TzSample], precision_ns: int) -> TzOffsetResult:
    """Decide the mirror's time-zone offset from ``sampled`` random paths.

    ``samples`` holds the pairs that could be read (the caller aborts on a read error);
    pairs whose mirror mtime is the zero time or whose sizes differ are not valid.
    """
    diffs: list[int] = []
    for s in samples:
        if s.mirror_mtime_ns is None or s.mirror_mtime_ns == ZERO_TIME_NS:
            continue
        if s.local_size != s.mirror_size:
            continue
        diffs.append(to_unix_ms(s.local_mtime_ns, precision_ns) - to_unix_ms(s.mirror_mtime_ns, precision_ns))
    valid = len(diffs)
    threshold = tz_threshold(valid)
    if valid < MIN_VALID_PAIRS or valid < sampled // 2:
        return TzOffsetResult(0, False, valid, threshold)
    for diff, count in Counter(diffs).items():
        if count >= threshold:
            return TzOffsetResult(diff, True, valid, threshold)
    return TzOffsetResult(0, False, valid, threshold)
