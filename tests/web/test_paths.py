"""Path sanitisation, the ServeMux 301 and request-target parsing, on a real tree."""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorbits.web.paths import (
    BadRequest,
    Forbidden,
    NotFound,
    PathError,
    canonical_location,
    canonical_redirect,
    clean_path,
    go_clean,
    moved_permanently_body,
    parse_request_target,
    sanitize_path,
)

# Go's own path.Clean test table (src/path/path_test.go).
GO_CLEAN_CASES = [
    ("", "."),
    ("abc", "abc"),
    ("abc/def", "abc/def"),
    ("a/b/c", "a/b/c"),
    (".", "."),
    ("..", ".."),
    ("../..", "../.."),
    ("../../abc", "../../abc"),
    ("/abc", "/abc"),
    ("/", "/"),
    ("abc/", "abc"),
    ("abc/def/", "abc/def"),
    ("a/b/c/", "a/b/c"),
    ("./", "."),
    ("../", ".."),
    ("../../", "../.."),
    ("/abc/", "/abc"),
    ("abc//def//ghi", "abc/def/ghi"),
    ("//abc", "/abc"),
    ("///abc", "/abc"),
    ("//abc//", "/abc"),
    ("abc//", "abc"),
    ("abc/./def", "abc/def"),
    ("/./abc/def", "/abc/def"),
    ("abc/.", "abc"),
    ("abc/def/ghi/../jkl", "abc/def/jkl"),
    ("abc/def/../ghi/../jkl", "abc/jkl"),
    ("abc/def/..", "abc"),
    ("abc/def/../..", "."),
    ("/abc/def/../..", "/"),
    ("abc/def/../../..", ".."),
    ("/abc/def/../../..", "/"),
    ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
    ("abc/./../def", "def"),
    ("abc//./../def", "def"),
    ("abc/../../././../def", "../../def"),
]


@pytest.mark.parametrize(("raw", "expected"), GO_CLEAN_CASES)
def test_go_clean_matches_go_table(raw: str, expected: str) -> None:
    assert go_clean(raw) == expected
    assert go_clean(expected) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", ".x"]), max_size=8), st.booleans())
def test_go_clean_agrees_with_normpath(parts: list[str], rooted: bool) -> None:
    path = ("/" if rooted else "") + "/".join(parts)
    expected = posixpath.normpath(path) if path else "."
    if expected.startswith("//"):
        expected = expected[1:]  # POSIX keeps a leading "//", Go does not
    assert go_clean(path) == expected


def test_clean_path_keeps_trailing_slash() -> None:
    assert clean_path("") == "/"
    assert clean_path("a/b") == "/a/b"
    assert clean_path("/a//b/") == "/a/b/"
    assert clean_path("/a/b/") == "/a/b/"
    assert clean_path("/a/..") == "/"
    assert clean_path("/a/../") == "/"


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/a//b", "/a/b"),
        ("/a//b?x=1&y", "/a/b?x=1&y"),
        ("/a//b?", "/a/b"),  # an empty query is not kept (Go URL.String)
        ("/a/./b/", "/a/b/"),
        ("/a/../b", "/b"),
        ("/../foobar", "/foobar"),
        ("//testy.tgz", "/testy.tgz"),
        ("/dir/.", "/dir"),
        ("/%2e%2e/etc/passwd", "/etc/passwd"),  # Go cleans the *decoded* path
        ("/a%2F%2Fb", "/a/b"),
        ("/x//%C3%A9 !", "/x/%C3%A9%20%21"),  # re-escaped like Go's escape(path, encodePath)
        ("/x//a+b$&,:;=@~", "/x/a+b$&,:;=@~"),
        ("/x//q%3Fz", "/x/q%3Fz"),
        ("http://example.org/a//b?q=1", "/a/b?q=1"),
        ("http://example.org", "/"),
    ],
)
def test_canonical_redirect_targets(target: str, location: str) -> None:
    assert canonical_redirect(target) == location
    assert canonical_redirect(target.encode()) == location


@pytest.mark.parametrize("target", ["/", "/testy.tgz", "/dir/", "/a/b?x=//..", "/.hidden/f", "/a+b%20c"])
def test_canonical_paths_are_left_alone(target: str) -> None:
    assert canonical_redirect(target) is None


@pytest.mark.parametrize(
    "target",
    [b"/a%zz", b"/a%", b"/a%4", b"/a\x01b", b"/a\x7f", b"*", b"foo/bar", b"", b"mailto:x"],
)
def test_malformed_targets_are_bad_requests(target: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request_target(target)
    assert info.value.status == 400
    assert info.value.text == "400 Bad Request"
    with pytest.raises(BadRequest):
        canonical_redirect(target)


def test_parse_request_target_decoding() -> None:
    t = parse_request_target(b"/a+b%20c/%C3%A9?x=%zz&y")
    assert t.path == "/a+b c/\u00e9"
    assert t.raw_query == "x=%zz&y"  # the query is not validated here
    raw = parse_request_target(b"/%FF.bin")
    assert os.fsencode(raw.path) == b"/\xff.bin"
    assert parse_request_target(b"/a%00b").path == "/a\x00b"
    assert parse_request_target(b"/a").raw_query == ""


def test_moved_permanently_body_matches_go() -> None:
    assert moved_permanently_body("/a/b") == '<a href="/a/b">Moved Permanently</a>.\n\n'
    assert moved_permanently_body("/a?x=1&y='\"") == (
        '<a href="/a?x=1&amp;y=&#39;&#34;">Moved Permanently</a>.\n\n'
    )


def test_canonical_location_from_parsed_target() -> None:
    assert canonical_location("/a//b", "q") == "/a/b?q"
    assert canonical_location("", "") == "/"
    assert canonical_location("/ok", "q") is None


# --------------------------------------------------------------------------------------------
# sanitize_path on a real tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """repo/ with files, dirs and symlinks pointing inside, outside, nowhere and in a loop."""
    repo = tmp_path / "repo"
    (repo / "releases").mkdir(parents=True)
    (repo / "dir").mkdir()
    (repo / "testy.tgz").write_bytes(b"")
    (repo / "releases" / "1.0.iso").write_bytes(b"iso")
    (repo / "latest.iso").symlink_to("releases/1.0.iso")
    (repo / "current").symlink_to(repo / "releases")  # absolute link to a directory inside
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (tmp_path / "foobar").write_bytes(b"exists outside")
    (repo / "link_out").symlink_to("../outside/secret")
    (repo / "link_out_dir").symlink_to(outside)
    (repo / "dangling").symlink_to("nowhere")
    (repo / "loop1").symlink_to("loop2")
    (repo / "loop2").symlink_to("loop1")
    (tmp_path / "repo2").mkdir()
    (tmp_path / "repo2" / "file").write_bytes(b"")
    (repo / os.fsdecode(b"\xff.bin")).write_bytes(b"")
    return repo


@pytest.mark.parametrize(
    ("url_path", "expected"),
    [
        ("/testy.tgz", "/testy.tgz"),
        ("/", ""),
        ("", ""),
        ("/dir/", "/dir"),
        ("/dir", "/dir"),
        ("//dir//", "/dir"),
        ("/releases/../testy.tgz", "/testy.tgz"),
        ("/latest.iso", "/releases/1.0.iso"),
        ("/current/1.0.iso", "/releases/1.0.iso"),
        ("/current", "/releases"),
        ("/../repo/testy.tgz", "/testy.tgz"),  # leaves and re-enters lexically: allowed, like Go
    ],
)
def test_sanitize_accepts(tree: Path, url_path: str, expected: str) -> None:
    assert sanitize_path(str(tree), url_path) == expected


@pytest.mark.parametrize(
    ("url_path", "error"),
    [
        ("/foobar", NotFound),
        ("/../foobar", Forbidden),  # exists outside the repository: still 403, before any stat
        ("/../../../../../../etc/passwd", Forbidden),
        ("/../repo2/file", Forbidden),  # sibling sharing the prefix "repo"
        ("/link_out", Forbidden),
        ("/link_out_dir/secret", Forbidden),
        ("/link_out_dir/missing", NotFound),  # resolution fails before the check, as in Go
        ("/dangling", NotFound),
        ("/loop1", NotFound),
        ("/testy.tgz/x", NotFound),
        ("/dir/missing/x", NotFound),
        ("/a\x00b", NotFound),
        ("/" + "a" * 300, NotFound),
        ("/" + "/".join(["d"] * 3000), NotFound),
        ("/" + "/".join([".."] * 3000), Forbidden),
        ("/\udcfe", NotFound),
        ("/\ud800", NotFound),  # a lone surrogate that cannot even be encoded
    ],
)
def test_sanitize_rejects(tree: Path, url_path: str, error: type[PathError]) -> None:
    with pytest.raises(error) as info:
        sanitize_path(str(tree), url_path)
    assert info.value.status == {Forbidden: 403, NotFound: 404}[error]
    assert info.value.text == {Forbidden: "Forbidden", NotFound: "Not Found"}[error]


def test_sanitize_non_utf8_name(tree: Path) -> None:
    target = parse_request_target(b"/%FF.bin")
    result = sanitize_path(str(tree), target.path)
    assert os.fsencode(result) == b"/\xff.bin"


def test_repository_missing_gives_404(tree: Path) -> None:
    shutil.rmtree(tree)
    for url_path in ("/foobar", "/testy.tgz", "/"):
        with pytest.raises(NotFound):
            sanitize_path(str(tree), url_path)
    with pytest.raises(Forbidden):
        sanitize_path(str(tree), "/../x")


def test_repository_spelled_loosely(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sanitize_path(str(tree) + "/", "/latest.iso") == "/releases/1.0.iso"
    assert sanitize_path(str(tree) + "/./", "/dir/") == "/dir"
    monkeypatch.chdir(tree.parent)
    assert sanitize_path("repo", "/testy.tgz") == "/testy.tgz"
    with pytest.raises(Forbidden):
        sanitize_path("repo", "/link_out")


def test_symlinked_repository_is_served(tree: Path) -> None:
    """Deliberate deviation: Go answers 403 to everything when Repository has a symlinked part."""
    alias = tree.parent / "alias"
    alias.symlink_to(tree)
    assert sanitize_path(str(alias), "/testy.tgz") == "/testy.tgz"
    assert sanitize_path(str(alias), "/") == ""
    assert sanitize_path(str(alias), "/latest.iso") == "/releases/1.0.iso"
    assert sanitize_path(str(alias), "/current/1.0.iso") == "/releases/1.0.iso"
    with pytest.raises(Forbidden):
        sanitize_path(str(alias), "/link_out")
    with pytest.raises(NotFound):
        sanitize_path(str(alias), "/foobar")
    via_parent = tree.parent.parent / (tree.parent.name + "-link")
    via_parent.symlink_to(tree.parent)
    try:
        assert sanitize_path(str(via_parent / "repo"), "/latest.iso") == "/releases/1.0.iso"
    finally:
        via_parent.unlink()


def test_root_repository(tree: Path) -> None:
    """Go's prefix test is "//" for Repository "/" (everything 403); here "/" contains everything."""
    assert sanitize_path("/", str(tree / "testy.tgz")) == str(tree / "testy.tgz")
    assert sanitize_path("/", "/") == ""
    assert sanitize_path("/", str(tree / "latest.iso")) == str(tree / "releases" / "1.0.iso")


def test_sanitize_sees_changes_immediately(tree: Path) -> None:
    """No cache: a file removed or a link re-pointed is seen by the next call."""
    assert sanitize_path(str(tree), "/testy.tgz") == "/testy.tgz"
    (tree / "testy.tgz").unlink()
    with pytest.raises(NotFound):
        sanitize_path(str(tree), "/testy.tgz")
    (tree / "latest.iso").unlink()
    (tree / "latest.iso").symlink_to("../outside/secret")
    with pytest.raises(Forbidden):
        sanitize_path(str(tree), "/latest.iso")


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tree for the property test (hypothesis re-runs the body, not function fixtures)."""
    base = tmp_path_factory.mktemp("prop")
    repo = base / "repo"
    (repo / "releases").mkdir(parents=True)
    (repo / "dir").mkdir()
    (repo / "releases" / "1.0.iso").write_bytes(b"")
    (repo / "latest.iso").symlink_to("releases/1.0.iso")
    (repo / "current").symlink_to("releases")
    (base / "outside").mkdir()
    (base / "outside" / "secret").write_bytes(b"")
    (repo / "link_out").symlink_to("../outside/secret")
    (repo / "link_out_dir").symlink_to("../outside")
    (repo / "loop1").symlink_to("loop1")
    (repo / "dangling").symlink_to("nowhere")
    return str(repo)


PROPERTY_PARTS = [
    "",
    ".",
    "..",
    "dir",
    "releases",
    "1.0.iso",
    "latest.iso",
    "current",
    "link_out",
    "link_out_dir",
    "secret",
    "loop1",
    "dangling",
    "%",
    "\x00",
    "\u00e9",
    "\udcff",
    "x" * 40,
]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(PROPERTY_PARTS), max_size=10), trailing=st.booleans())
def test_sanitize_only_raises_path_errors_and_stays_inside(
    shared_repo: str, parts: list[str], trailing: bool
) -> None:
    url_path = "/" + "/".join(parts) + ("/" if trailing else "")
    try:
        result = sanitize_path(shared_repo, url_path)
    except PathError as exc:
        assert exc.status in (403, 404)
        return
    assert result == "" or result.startswith("/")
    real = os.path.realpath(shared_repo + result)
    assert real == shared_repo or real.startswith(shared_repo + "/")
    assert os.path.lexists(shared_repo + result)
    assert not os.path.islink(shared_repo + result)
