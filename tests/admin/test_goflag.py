"""Go ``flag`` semantics: syntax, stop rules, error texts and PrintDefaults layout."""

from __future__ import annotations

import pytest

from mirrorbits.admin.goflag import (
    FlagDef,
    FlagSet,
    ParseStatus,
    bool_flag,
    int_flag,
    string_flag,
    uint_flag,
)

FS = FlagSet(
    "test",
    (
        bool_flag("v", False, "verbose"),
        bool_flag("state", True, "state"),
        string_flag("name", "", "a name"),
        int_flag("score", 0, "score"),
        uint_flag("l", 500, "limit"),
    ),
)


def test_defaults_when_no_args() -> None:
    r = FS.parse([])
    assert r.ok
    assert r.values == {"v": False, "state": True, "name": "", "score": 0, "l": 500}
    assert r.args == ()
    assert r.stderr == ""
    assert r.actual == frozenset()


@pytest.mark.parametrize(
    "argv",
    [
        ["-name", "x", "-score", "5"],
        ["--name", "x", "--score", "5"],
        ["-name=x", "-score=5"],
        ["--name=x", "--score=5"],
    ],
)
def test_value_syntaxes_are_equivalent(argv: list[str]) -> None:
    r = FS.parse(argv + ["rest"])
    assert r.ok
    assert r["name"] == "x"
    assert r["score"] == 5
    assert r.args == ("rest",)
    assert r.is_set("name") and not r.is_set("v")


def test_bool_flags_take_no_separate_argument() -> None:
    r = FS.parse(["-state", "false"])
    assert r.ok
    assert r["state"] is True  # "false" is a positional word, not the value
    assert r.args == ("false",)
    r = FS.parse(["-state=false", "-v=1"])
    assert r["state"] is False and r["v"] is True


def test_parsing_stops_at_first_non_flag() -> None:
    # `mirrorbits add mirror1 -http x` does not see -http.
    r = FS.parse(["mirror1", "-name", "x"])
    assert r.ok
    assert r["name"] == ""
    assert r.args == ("mirror1", "-name", "x")


def test_lone_dash_is_positional_and_double_dash_is_consumed() -> None:
    assert FS.parse(["-", "-v"]).args == ("-", "-v")
    r = FS.parse(["-v", "--", "-name", "x"])
    assert r["v"] is True and r.args == ("-name", "x")


def test_value_may_start_with_dash() -> None:
    r = FS.parse(["-name", "-v"])
    assert r["name"] == "-v" and r.args == ()


def test_equals_in_value_is_kept() -> None:
    assert FS.parse(["-name=a=b"])["name"] == "a=b"
    assert FS.parse(["-name="])["name"] == ""


def test_unknown_flag_error_and_usage() -> None:
    r = FS.parse(["-x"])
    assert r.status is ParseStatus.ERROR
    assert r.error == "flag provided but not defined: -x"
    assert r.stderr.startswith("flag provided but not defined: -x\nUsage of test:\n")
    assert r.exit_code == 2


def test_missing_argument() -> None:
    r = FS.parse(["-name"])
    assert r.error == "flag needs an argument: -name"


def test_invalid_values() -> None:
    assert FS.parse(["-score", "abc"]).error == 'invalid value "abc" for flag -score: parse error'
    assert FS.parse(["-l", "-1"]).error == 'invalid value "-1" for flag -l: parse error'
    big = "99999999999999999999"
    assert FS.parse(["-score", big]).error == f'invalid value "{big}" for flag -score: value out of range'
    assert FS.parse(["-v=maybe"]).error == 'invalid boolean value "maybe" for -v: parse error'


@pytest.mark.parametrize("arg", ["---x", "-=x", "--=x"])
def test_bad_flag_syntax(arg: str) -> None:
    assert FS.parse([arg]).error == f"bad flag syntax: {arg}"


@pytest.mark.parametrize("arg", ["-h", "-help", "--help", "--h", "-help=1"])
def test_help_when_not_defined(arg: str) -> None:
    r = FS.parse([arg, "-v"])
    assert r.status is ParseStatus.HELP
    assert r.stderr == FS.usage_text()
    assert r.exit_code == 0


def test_defined_h_is_a_normal_flag() -> None:
    fs = FlagSet("g", (string_flag("h", "localhost", "Server host"),))
    r = fs.parse(["-h"])
    assert r.error == "flag needs an argument: -h"
    assert fs.parse(["-h", "example.org"])["h"] == "example.org"


def test_custom_usage_is_used_for_errors_and_help() -> None:
    fs = FlagSet("c", (bool_flag("f", False, "force"),), usage=lambda s: "USAGE\n" + s.defaults_text())
    assert fs.parse(["-help"]).stderr == "USAGE\n  -f\tforce\n"
    assert fs.parse(["-zz"]).stderr == "flag provided but not defined: -zz\nUSAGE\n  -f\tforce\n"


def test_print_defaults_layout() -> None:
    fs = FlagSet(
        "x",
        (
            bool_flag("f", False, "one letter bool"),
            bool_flag("b", True, "bool default true"),
            string_flag("s", "dflt", "string with default"),
            string_flag("P", "", "empty default"),
            uint_flag("p", 3390, "port"),
            int_flag("n", -3, "negative"),
            string_flag("multi", "", "line one\nline two"),
            string_flag("named", "", "path of the `file` to read"),
        ),
    )
    assert fs.defaults_text() == (
        "  -P string\n    \tempty default\n"
        "  -b\tbool default true (default true)\n"
        "  -f\tone letter bool\n"
        "  -multi string\n    \tline one\n    \tline two\n"
        "  -n int\n    \tnegative (default -3)\n"
        "  -named file\n    \tpath of the file to read\n"
        "  -p uint\n    \tport (default 3390)\n"
        '  -s string\n    \tstring with default (default "dflt")\n'
    )


def test_flag_errors_name_the_kind_only() -> None:
    """Go's flag reports ``parse error`` or ``value out of range``, never strconv's own text."""
    fs = FlagSet("t", (int_flag("n", 0, "n", bits=8), uint_flag("u", 0, "u"), bool_flag("b", False, "b")))
    assert fs.parse(["-n", "300"]).error == 'invalid value "300" for flag -n: value out of range'
    assert fs.parse(["-n", "0x1F"])["n"] == 31
    assert fs.parse(["-u", "-1"]).error == 'invalid value "-1" for flag -u: parse error'
    assert fs.parse(["-b=yes"]).error == 'invalid boolean value "yes" for -b: parse error'


def test_flagdef_validation() -> None:
    with pytest.raises(ValueError):
        FlagDef("x", "float", 0, "")
    with pytest.raises(ValueError):
        FlagDef("-x", "bool", False, "")
    with pytest.raises(ValueError):
        FlagSet("dup", (bool_flag("a", False, ""), bool_flag("a", True, "")))


def test_flagset_is_reusable() -> None:
    r1 = FS.parse(["-score", "3"])
    r2 = FS.parse([])
    assert r1["score"] == 3 and r2["score"] == 0
