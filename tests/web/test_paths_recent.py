"""Request-targets and canonical paths kept from one request to the next: the same answers as a
fresh parse, bounded in count and in the length of what is kept; a malformed target is refused
every time."""

from __future__ import annotations

import pytest

from mirrorbits.web import paths
from mirrorbits.web.paths import BadRequest, RequestTarget, canonical_location, parse_request_target


def test_a_repeated_target_gives_the_same_answer() -> None:
    first = parse_request_target(b"/recent/a%20b.iso?x=1")
    again = parse_request_target(b"/recent/a%20b.iso?x=1")
    assert again is first
    assert again == RequestTarget("/recent/a b.iso", "x=1")
    assert parse_request_target("/recent/a%20b.iso?x=1") is first  # str targets share the table
    assert parse_request_target(b"/recent/a%20b.iso?x=2") == RequestTarget("/recent/a b.iso", "x=2")


@pytest.mark.parametrize("target", [b"/bad%zz", b"*", b"relative", b"/a\x01b"])
def test_a_malformed_target_is_refused_every_time(target: bytes) -> None:
    for _ in range(3):
        with pytest.raises(BadRequest):
            parse_request_target(target)


def test_long_targets_are_parsed_but_not_kept() -> None:
    long = b"/" + b"x" * paths._RECENT_MAX_LEN
    before = len(paths._TARGETS._young) + len(paths._TARGETS._old)
    t = parse_request_target(long)
    assert t.path == long.decode()
    assert parse_request_target(long) is not t
    assert canonical_location(t.path) is None
    assert len(paths._TARGETS._young) + len(paths._TARGETS._old) == before
    assert paths._CANONICAL.get(t.path) is None


def test_canonical_verdicts_and_the_query() -> None:
    assert canonical_location("/recent/ok", "") is None
    assert canonical_location("/recent/ok", "q=1") is None  # kept: canonical whatever the query
    for _ in range(2):  # a non-canonical path is never kept as canonical
        assert canonical_location("/recent//ok", "q=1") == "/recent/ok?q=1"
        assert canonical_location("/recent//ok") == "/recent/ok"
        assert canonical_location("/recent/ok/..", "") == "/recent"


def test_recent_tables_are_bounded_and_keep_what_is_used() -> None:
    recent: paths._Recent[bytes, int] = paths._Recent(4)
    for n in range(20):
        recent.put(b"%d" % n, n)
        assert len(recent._young) + len(recent._old) <= 8
    assert recent.get(b"0") is None
    assert recent.get(b"19") == 19
    old_key = next(iter(recent._old))
    value = recent.get(old_key)  # moved back to the young generation
    for n in range(100, 104):
        recent.put(b"%d" % n, n)
    assert recent.get(old_key) == value
