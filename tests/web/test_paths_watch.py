"""sanitize_path with symlink-free paths kept under inotify watches, against the disk checks of
every request: the same answer for every change a repository on disk can show between two
requests (files removed, renamed over, replaced by symlinks, directories moved, the repository
or one of its parents re-pointed, a mount, a queue overflow), and bounded memory."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrorbits.web import paths
from mirrorbits.web.paths import Forbidden, NotFound, PathError, sanitize_path
from mirrorbits.web.pathwatch import SymlinkFreePaths, file_system, mount_points

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["watched", "disk"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every case below, with kept paths and with the disk asked on every request."""
    confirmed = paths._confirmed
    assert confirmed._libc is not None, "Linux with inotify: paths must be kept"
    confirmed.usable = request.param == "watched"
    try:
        yield request.param
    finally:
        confirmed.usable = True


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    repo = tmp_path / "top" / "repo"
    (repo / "dir" / "sub").mkdir(parents=True)
    (repo / "releases").mkdir()
    (repo / "dir" / "f").write_bytes(b"f")
    (repo / "dir" / "sub" / "g").write_bytes(b"g")
    (repo / "releases" / "f").write_bytes(b"r")
    (repo / "testy.tgz").write_bytes(b"")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"secret")
    return repo


def outcome(repo: Path | str, url_path: str) -> str | int:
    try:
        return sanitize_path(str(repo), url_path)
    except PathError as exc:
        return exc.status


def served_from_memory(repo: Path, url_path: str) -> bool:
    return paths._confirmed.get((str(repo), url_path)) is not None


def first(repo: Path, url_path: str, mode: str) -> str:
    """The first answer: kept from then on when paths are watched."""
    return kept(repo, url_path) if mode == "watched" else sanitize_path(str(repo), url_path)


def kept(repo: Path, url_path: str) -> str:
    """sanitize_path's answer once it is kept: events earlier tests left queued are read (and
    may forget everything) on the first look."""
    for _ in range(3):
        answer = sanitize_path(str(repo), url_path)
        if served_from_memory(repo, url_path):
            return answer
    raise AssertionError(f"{url_path} is not kept")


def test_a_confirmed_path_is_kept_only_when_watched(tree: Path, mode: str) -> None:
    if mode == "watched":
        assert kept(tree, "/dir/sub/g") == "/dir/sub/g"
    else:
        assert sanitize_path(str(tree), "/dir/sub/g") == "/dir/sub/g"
        assert not served_from_memory(tree, "/dir/sub/g")


def test_file_removed_between_two_requests(tree: Path, mode: str) -> None:
    assert first(tree, "/dir/sub/g", mode) == "/dir/sub/g"
    (tree / "dir" / "sub" / "g").unlink()
    with pytest.raises(NotFound):
        sanitize_path(str(tree), "/dir/sub/g")
    (tree / "dir" / "sub" / "g").write_bytes(b"back")
    assert sanitize_path(str(tree), "/dir/sub/g") == "/dir/sub/g"


def test_file_renamed_over_by_a_symlink(tree: Path, mode: str) -> None:
    assert first(tree, "/dir/f", mode) == "/dir/f"
    (tree / "dir" / "tmp-link").symlink_to("../../../outside/f")
    os.rename(tree / "dir" / "tmp-link", tree / "dir" / "f")  # atomic: no delete event
    with pytest.raises(Forbidden):
        sanitize_path(str(tree), "/dir/f")


def test_directory_replaced_by_a_symlink(tree: Path, mode: str) -> None:
    assert first(tree, "/dir/f", mode) == "/dir/f"
    (tree / "dir").rename(tree.parent / "old-dir")
    (tree / "dir").symlink_to("../../outside")
    with pytest.raises(Forbidden):
        sanitize_path(str(tree), "/dir/f")
    (tree / "dir").unlink()
    (tree / "dir").symlink_to("releases")
    assert sanitize_path(str(tree), "/dir/f") == "/releases/f"
    (tree / "dir").unlink()
    (tree.parent / "old-dir").rename(tree / "dir")
    assert sanitize_path(str(tree), "/dir/f") == "/dir/f"


def test_a_parent_of_the_repository_moved(tree: Path, mode: str) -> None:
    assert first(tree, "/dir/f", mode) == "/dir/f"
    top = tree.parent
    top.rename(top.parent / "moved")
    with pytest.raises(NotFound):
        sanitize_path(str(tree), "/dir/f")
    top.mkdir()
    (top.parent / "moved" / "repo").rename(tree)
    assert sanitize_path(str(tree), "/dir/f") == "/dir/f"


def test_repository_itself_a_symlink_repointed(tree: Path, mode: str) -> None:
    other = tree.parent / "other"
    (other / "dir").mkdir(parents=True)
    (other / "dir" / "only-in-other").write_bytes(b"")
    alias = tree.parent / "alias"
    alias.symlink_to(tree)
    assert sanitize_path(str(alias), "/dir/f") == "/dir/f"
    assert not served_from_memory(alias, "/dir/f")  # a symlink on the way: never kept
    with pytest.raises(NotFound):
        sanitize_path(str(alias), "/dir/only-in-other")
    alias.unlink()
    alias.symlink_to(other)
    assert sanitize_path(str(alias), "/dir/only-in-other") == "/dir/only-in-other"
    with pytest.raises(NotFound):
        sanitize_path(str(alias), "/dir/f")


def test_same_path_under_another_repository(tree: Path, mode: str) -> None:
    assert first(tree, "/dir/sub/g", mode) == "/dir/sub/g"
    assert sanitize_path(str(tree / "dir"), "/sub/g") == "/sub/g"
    assert sanitize_path(str(tree), "/dir/sub/g") == "/dir/sub/g"


def test_names_too_long_and_link_chains(tree: Path, mode: str) -> None:
    with pytest.raises(NotFound):
        sanitize_path(str(tree), "/dir/" + "n" * 256)
    (tree / ("n" * 255)).write_bytes(b"")
    assert sanitize_path(str(tree), "/" + "n" * 255) == "/" + "n" * 255
    (tree / "loop1").symlink_to("loop2")
    (tree / "loop2").symlink_to("loop1")
    with pytest.raises(NotFound):
        sanitize_path(str(tree), "/loop1/x")
    (tree / "dir" / "chain0").symlink_to("../testy.tgz")
    for k in range(1, 45):  # longer than the kernel follows (40): realpath resolves it
        (tree / "dir" / f"chain{k}").symlink_to(f"chain{k - 1}")
    assert sanitize_path(str(tree), "/dir/chain44") == "/testy.tgz"


def test_other_entries_of_a_watched_directory_change_nothing(tree: Path) -> None:
    assert kept(tree, "/dir/f") == "/dir/f"
    resets = paths._confirmed.resets
    for k in range(50):
        (tree / "dir" / f"new{k}").write_bytes(b"")
        (tree / "dir" / f"new{k}").unlink()
    (tree / "dir" / "sub2").mkdir()
    assert sanitize_path(str(tree), "/dir/f") == "/dir/f"
    assert served_from_memory(tree, "/dir/f")
    assert paths._confirmed.resets == resets


def test_directories_no_kept_path_goes_through_change_nothing(tree: Path) -> None:
    """A missing file's directory is watched (before the disk is asked) but nothing is kept
    through it: its other entries may change freely."""
    assert kept(tree, "/dir/f") == "/dir/f"
    assert outcome(tree, "/releases/missing") == 404
    resets = paths._confirmed.resets
    for k in range(20):
        (tree / "releases" / f"new{k}").write_bytes(b"")
    (tree / "releases" / "missing").write_bytes(b"")  # no longer missing: asked on the disk again
    assert sanitize_path(str(tree), "/dir/f") == "/dir/f"
    assert served_from_memory(tree, "/dir/f")
    assert paths._confirmed.resets == resets
    assert sanitize_path(str(tree), "/releases/missing") == "/releases/missing"


def test_disk_and_memory_agree_everywhere(tree: Path) -> None:
    (tree / "latest").symlink_to("releases/f")
    (tree / "current").symlink_to(tree / "releases")
    (tree / "out").symlink_to("../../outside")
    (tree / "dangling").symlink_to("nowhere")
    (tree / "self").symlink_to("self")
    alias = tree.parent / "alias"
    alias.symlink_to(tree)
    parts = ["dir", "sub", "f", "g", "releases", "latest", "current", "out", "dangling", "self",
             "..", "testy.tgz", "missing"]
    urls = ["/" + "/".join(p) for n in range(4) for p in itertools.product(parts, repeat=n)]
    for repo in (tree, alias):
        for _ in range(2):  # the second round is answered from memory where it can be
            watched = [outcome(repo, u) for u in urls]
            paths._confirmed.usable = False
            try:
                assert [outcome(repo, u) for u in urls] == watched
            finally:
                paths._confirmed.usable = True
    assert {"/releases/f", "/dir/sub/g", 403, 404} <= set(watched)


def test_queue_overflow_forgets_everything(tree: Path) -> None:
    """Past the kernel's queue (16384 events by default) events are lost: the overflow itself
    is reported, and every kept path is asked again."""
    assert kept(tree, "/dir/f") == "/dir/f"
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    noise = tree / "dir"  # watched: each event is queued (and would be ignored by its name)
    for k in range(limit // 2 + 10):  # two events each (create, delete)
        (noise / f"n{k}").write_bytes(b"")
        (noise / f"n{k}").unlink()
    (tree / "dir" / "f").unlink()  # its event no longer fits in the queue
    with pytest.raises(NotFound):
        sanitize_path(str(tree), "/dir/f")


def test_a_mount_over_a_directory_is_seen(tree: Path) -> None:
    """Mounts are no inotify events; the mount table's own signal is: a tmpfs mounted over a
    directory of the repository (in a private mount namespace) hides its files at once."""
    script = textwrap.dedent(f"""
        import subprocess, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mirrorbits.web import paths
        repo = {str(tree)!r}
        assert paths.sanitize_path(repo, "/dir/sub/g") == "/dir/sub/g"
        assert paths._confirmed.get((repo, "/dir/sub/g")) is not None
        subprocess.run(["mount", "-t", "tmpfs", "none", repo + "/dir"], check=True)
        try:
            paths.sanitize_path(repo, "/dir/sub/g")
        except paths.NotFound:
            print("hidden")
        subprocess.run(["umount", repo + "/dir"], check=True)
        print(paths.sanitize_path(repo, "/dir/sub/g"))
    """)
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hidden", "/dir/sub/g"]


def test_forked_child_starts_without_kept_paths(tree: Path) -> None:
    """The inotify instance would be shared with the parent (its events read by either)."""
    assert kept(tree, "/dir/f") == "/dir/f"
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            if not paths._confirmed._paths and sanitize_path(str(tree), "/dir/f") == "/dir/f" \
                    and served_from_memory(tree, "/dir/f"):
                status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert served_from_memory(tree, "/dir/f")
    (tree / "dir" / "f").unlink()  # the child's instance is its own: the parent still sees this
    with pytest.raises(NotFound):
        sanitize_path(str(tree), "/dir/f")


def test_bounded_in_paths_and_directories(tree: Path) -> None:
    confirmed = SymlinkFreePaths(max_paths=3, max_dirs=64)
    base = str(tree)
    for k in range(10):
        (tree / "dir" / f"p{k}").write_bytes(b"")
    for k in range(10):
        path = f"{base}/dir/p{k}"
        assert confirmed.watch(path)
        confirmed.keep((base, f"/dir/p{k}"), path, f"/dir/p{k}")
        assert len(confirmed._paths) <= 3
    assert confirmed.get((base, "/dir/p9")) == "/dir/p9"
    assert confirmed.get((base, "/dir/p0")) is None
    few = SymlinkFreePaths(max_paths=100, max_dirs=len(tree.parts) + 1)
    assert few.watch(f"{base}/dir/f")  # every directory down to dir/ fits
    assert not few.watch(f"{base}/dir/sub/g")  # one more does not: everything is forgotten
    assert not few._dirs and not few._paths
    confirmed.reset()
    few.reset()


def test_without_an_inotify_instance_the_disk_answers(tree: Path) -> None:
    """Out of descriptors (as when the per-user inotify limit is reached): nothing is kept, every
    answer comes from the disk, and the instance is asked for again later."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
            held = []
            try:
                while True:
                    held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            ok = [sanitize_path(str(tree), "/dir/f") == "/dir/f", not served_from_memory(tree, "/dir/f")]
            (tree / "dir" / "sub" / "g").unlink()
            ok.append(outcome(tree, "/dir/sub/g") == 404)
            ok.append(paths._confirmed._retry > 0)
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            paths._confirmed._retry = 0
            ok.append(sanitize_path(str(tree), "/dir/f") == "/dir/f" and served_from_memory(tree, "/dir/f"))
            status = 0 if all(ok) else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_mount_table_and_file_system_of_a_directory() -> None:
    table = mount_points(
        b"22 27 0:21 / / rw,relatime - ext4 /dev/vda rw\n"
        b"30 22 0:40 / /srv/my\\040mirror rw - nfs4 host:/export rw\n"
        b"31 30 0:41 / /srv/my\\040mirror/local rw,relatime shared:5 - tmpfs tmpfs rw\n"
        b"garbage\n")
    assert table == {b"/": b"ext4", b"/srv/my mirror": b"nfs4", b"/srv/my mirror/local": b"tmpfs"}
    assert file_system(table, b"/srv") == b"ext4"
    assert file_system(table, b"/srv/my mirror") == b"nfs4"
    assert file_system(table, b"/srv/my mirror/pub/x") == b"nfs4"
    assert file_system(table, b"/srv/my mirror/local/x") == b"tmpfs"
    assert file_system(table, b"/srv/my mirrors") == b"ext4"


def test_paths_on_a_network_file_system_are_never_kept(tree: Path, tmp_path: Path) -> None:
    """A change made by another machine is no inotify event here: such paths are asked every time."""
    top = str(tree.parent).encode()
    fake = tmp_path / "mountinfo"
    fake.write_bytes(b"1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / " + top + b" rw - nfs4 h:/e rw\n")
    remote = SymlinkFreePaths(mountinfo=str(fake))
    try:
        assert not remote.watch(f"{tree}/dir/f")
        assert remote.watch(f"{tree.parent.parent}/outside/f")
    finally:
        remote.reset()
