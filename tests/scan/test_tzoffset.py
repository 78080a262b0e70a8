"""The FixTimezoneOffsets decision: detected shifts, too few samples, disagreeing samples, precision."""

from __future__ import annotations

import calendar

from hypothesis import given
from hypothesis import strategies as st

from mirrorbits.gocompat import ZERO_TIME_NS
from mirrorbits.scan.listing import PRECISION_MS, PRECISION_NONE, PRECISION_S
from mirrorbits.scan.tzoffset import TzSample, compute_tz_offset, to_unix_ms, tz_threshold

BASE_NS = calendar.timegm((2024, 2, 4, 12, 0, 0)) * 1_000_000_000
HOUR_NS = 3600 * 1_000_000_000


def _pair(i: int, diff_ns: int, *, size: int = 10, mirror_size: int | None = None) -> TzSample:
    local = BASE_NS + i * 1_000_000_000
    return TzSample(size, local, size if mirror_size is None else mirror_size, local - diff_ns)


def test_case_29_nineteen_of_twenty_agree_on_minus_one_hour() -> None:
    samples = [_pair(i, -HOUR_NS) for i in range(19)] + [_pair(19, 0)]
    result = compute_tz_offset(20, samples, PRECISION_S)
    assert result.threshold == 18
    assert result.detected
    assert result.offset_ms == -3_600_000


def test_case_30_fewer_than_ten_valid_pairs() -> None:
    samples = [_pair(i, -HOUR_NS) for i in range(9)]
    result = compute_tz_offset(9, samples, PRECISION_S)
    assert not result.detected
    assert result.offset_ms == 0
    assert result.valid_pairs == 9


def test_case_31_forty_valid_of_hundred_sampled() -> None:
    valid = [_pair(i, -HOUR_NS) for i in range(40)]
    wrong_size = [_pair(100 + i, -HOUR_NS, mirror_size=11) for i in range(30)]
    zero_time = [TzSample(10, BASE_NS, 10, None) for _ in range(15)]
    go_zero = [TzSample(10, BASE_NS, 10, ZERO_TIME_NS) for _ in range(15)]
    result = compute_tz_offset(100, valid + wrong_size + zero_time + go_zero, PRECISION_S)
    assert result.valid_pairs == 40
    assert not result.detected and result.offset_ms == 0
    # The same 40 pairs alone (sampled 40) would have been enough.
    assert compute_tz_offset(40, valid, PRECISION_S).offset_ms == -3_600_000


def test_case_32_thresholds() -> None:
    assert tz_threshold(70) == 62
    assert tz_threshold(10) == 9
    assert tz_threshold(30) == 27
    assert tz_threshold(100) == 90
    # 62 votes out of 70 are enough precisely because of the float rounding.
    samples = [_pair(i, -HOUR_NS) for i in range(62)] + [_pair(100 + i, i * 1_000_000_000) for i in range(8)]
    assert compute_tz_offset(70, samples, PRECISION_S).offset_ms == -3_600_000


def test_not_enough_votes_gives_zero() -> None:
    samples = [_pair(i, -HOUR_NS) for i in range(17)] + [_pair(100 + i, 0) for i in range(3)]
    result = compute_tz_offset(20, samples, PRECISION_S)
    assert (result.detected, result.offset_ms) == (False, 0)


def test_case_34_truncation_to_precision() -> None:
    local = calendar.timegm((2024, 1, 1, 12, 0, 0)) * 1_000_000_000 + 700_000_000
    mirror = calendar.timegm((2024, 1, 1, 13, 0, 0)) * 1_000_000_000
    samples = [TzSample(1, local + i * 1_000_000_000, 1, mirror + i * 1_000_000_000) for i in range(10)]
    assert compute_tz_offset(10, samples, PRECISION_S).offset_ms == -3_600_000
    assert compute_tz_offset(10, samples, PRECISION_MS).offset_ms == -3_599_300
    assert compute_tz_offset(10, samples, PRECISION_NONE).offset_ms == -3_599_300


def test_unix_ms_rounds_toward_zero_after_flooring() -> None:
    # Before 1970: truncation floors (Go's Truncate since year 1), UnixNano()/1e6 rounds toward 0.
    assert to_unix_ms(-1_500_000, PRECISION_NONE) == -1
    assert to_unix_ms(-1_500_000, PRECISION_MS) == -2
    assert to_unix_ms(-1, PRECISION_S) == -1000
    assert to_unix_ms(1_999_999_999, PRECISION_S) == 1000


@given(
    st.lists(st.integers(min_value=-(10**18), max_value=10**18), max_size=120),
    st.sampled_from([PRECISION_NONE, PRECISION_MS, PRECISION_S]),
    st.integers(min_value=0, max_value=100),
)
def test_offset_is_a_majority_value_or_zero(diffs: list[int], precision: int, sampled: int) -> None:
    samples = [TzSample(1, BASE_NS, 1, BASE_NS - d) for d in diffs]
    result = compute_tz_offset(sampled, samples, precision)
    assert result.valid_pairs == len(diffs)
    if result.detected:
        ms = [to_unix_ms(BASE_NS, precision) - to_unix_ms(BASE_NS - d, precision) for d in diffs]
        assert ms.count(result.offset_ms) >= tz_threshold(len(diffs))
        assert len(diffs) >= 10 and len(diffs) >= sampled // 2
    else:
        assert result.offset_ms == 0
