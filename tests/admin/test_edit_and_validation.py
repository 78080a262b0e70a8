"""Pure parts of the admin commands: the edit YAML reader, Go URL leniency, regexp errors, the RPC
value encoding."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mirrorbits.admin.commands import (
    AddResult,
    AdminError,
    MirrorRef,
    go_url_parse_error,
    regexp_compile,
    url_host,
    validate_add,
)
from mirrorbits.admin.edityaml import EditError, apply_mirror_yaml, validate_edited
from mirrorbits.admin.formatting import edit_file_text, mirror_yaml, split_edit_file
from mirrorbits.admin.rpc import decode_value, encode_value
from mirrorbits.model import Mirror

BASE = Mirror(id=3, name="m", http_url="http://h/", admin_email="a@b", score=2, latitude=1.5,
              allow_redirects=0, comment="c")


def edit(text: str) -> Mirror:
    return apply_mirror_yaml(text, BASE)


def test_the_unchanged_document_gives_the_same_record() -> None:
    yaml_part, comment = split_edit_file(edit_file_text(mirror_yaml(BASE), BASE.comment))
    assert comment == "c"
    assert edit(yaml_part) == BASE


@pytest.mark.parametrize(("text", "changes"), [
    ("Enabled: yes\nCountryOnly: off\n", {"enabled": True, "country_only": False}),  # YAML 1.1 booleans
    ("AllowRedirects: true\n", {"allow_redirects": 1}),
    ("AllowRedirects: false\n", {"allow_redirects": 2}),
    ("AllowRedirects: null\n", {"allow_redirects": 0}),
    ("Score: -5\nASNum: 0x10\n", {"score": -5, "asnum": 16}),
    ("Latitude: 48.8582\nLongitude: 3\n", {"latitude": 48.8582, "longitude": 3.0}),
    ("Name: 123\nAdminEmail: ~\n", {"name": "123", "admin_email": ""}),  # any scalar into a string
    ("", {}),
    ("# only a comment\n", {}),
])
def test_values_are_applied_on_top_of_the_record(text: str, changes: dict[str, object]) -> None:
    expected = Mirror(**{**{f: getattr(BASE, f) for f in BASE.__dataclass_fields__}, **changes})
    assert edit(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("Score: abc\n", "yaml: unmarshal errors:\n  line 1: cannot unmarshal !!str `abc` into int"),
    ("x\nScore: [1]\n", None),
    ("ASNum: -1\n", "yaml: unmarshal errors:\n  line 1: cannot unmarshal !!int `-1` into uint"),
    ("Enabled: maybe\n", "yaml: unmarshal errors:\n  line 1: cannot unmarshal !!str `maybe` into bool"),
    ("Bogus: 1\n", "yaml: unmarshal errors:\n  line 1: field Bogus not found in type Mirror"),
    ("Name: a\nName: b\n", 'yaml: unmarshal errors:\n  line 2: mapping key "Name" already defined at line 1'),
    ("Score: [unclosed\n", "yaml: line 2: did not find expected ',' or ']'"),
    ("- a\n", "yaml: unmarshal errors:\n  line 1: cannot unmarshal !!seq into Mirror"),
])
def test_errors_read_like_yaml_v3(text: str, message: str | None) -> None:
    with pytest.raises(EditError) as e:
        edit(text)
    if message is not None:
        assert str(e.value) == message


@pytest.mark.parametrize(("mirror", "error"), [
    (Mirror(name="", http_url="http://h/"), "The identifier cannot be empty"),
    (Mirror(name="a b", http_url="http://h/"), "The identifier cannot contain a space"),
    (Mirror(name="a", http_url=""), "You *must* pass at least an HTTP URL"),
    (Mirror(name="a", http_url="ftp://h/"), "The HTTP URL has an invalid scheme"),
    (Mirror(name="a", http_url="http://h/%zz"), "Can't parse HTTP URL"),
    (Mirror(name="a", http_url="h/path/"), None),
])
def test_edited_records_are_validated(mirror: Mirror, error: str | None) -> None:
    if error is None:
        validate_edited(mirror)
    else:
        with pytest.raises(EditError, match=error.replace("*", r"\*")):
            validate_edited(mirror)


@pytest.mark.parametrize(("url", "ok"), [
    ("http://h/a b", True), ("http://h/?q=%zz", True), ("http://h:99999/", True), ("http://", True),
    ("http://u:p@h/", True), ("http://[::1]:80/", True), ("http://h/a%20b", True),
    ("http://h/a%zz", False), ("http://h/a\x7f", False), ("http://host name/", False),
    ("http://h:abc/", False), ("http://[::1/", False), ("http://h/#%zz", False), ("http://h/%4", False),
])
def test_go_url_leniency(url: str, ok: bool) -> None:
    assert (go_url_parse_error(url) is None) is ok


def test_add_checks_in_go_order() -> None:
    assert validate_add("a b", "") == "The identifier cannot contain a space"
    assert validate_add("a", "") == "You *must* pass at least an HTTP URL"
    assert validate_add("a", "127.0.0.3/repo") is None
    assert validate_add("a", "127.0.0.3/%zz") == "Can't parse HTTP URL"
    assert validate_add("a", "rsync://h/") == "The HTTP URL has an invalid scheme"


@pytest.mark.parametrize(("url", "host"), [
    ("http://127.0.0.1:18081/repo", "127.0.0.1"),  # fix of the Go bug: the port is not resolved
    ("127.0.0.3/repo/", "127.0.0.3"), ("https://u:p@example.org/x", "example.org"),
    ("http://[2001:db8::1]:80/", "2001:db8::1"), ("http://[2001:db8::1]/", "2001:db8::1"),
])
def test_url_host(url: str, host: str) -> None:
    assert url_host(url) == host


def test_regexp_errors_name_the_pattern_like_go() -> None:
    assert regexp_compile("README").search("/README")
    with pytest.raises(AdminError) as e:
        regexp_compile("[")
    assert e.value.message == "error parsing regexp: missing closing ]: `[`"
    with pytest.raises(AdminError, match="missing argument to repetition operator"):
        regexp_compile("*a")


def test_rpc_values_round_trip() -> None:
    values = [BASE, [MirrorRef(1, "a")], AddResult(1, 1.5, 2.5, "France", "EU", "X (1)", ("w",)),
              datetime(2026, 11, 26, tzinfo=UTC), {"/README": 3}, None, "text"]
    for v in values:
        assert decode_value(encode_value(v)) == v
    with pytest.raises(ValueError):
        decode_value({"__type__": "os.system"})
