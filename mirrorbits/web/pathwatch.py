"""Paths of the repository known to be symlink-free, kept exactly as long as the disk says so.

Why: confirming on every request that no component of a path is a symlink costs an ``lstat`` per
component (Go's ``EvalSymlinks`` semantics), ~11 us of a ~90 us redirect on the test VM: syscalls
on the request path are dear (each one also cools the caches the rest of the request uses).  A
time-limited cache would answer for deleted files and moved links; this one is *exact*:

* before a path is confirmed, every directory on its way (from ``/`` down to its parent) gets an
  inotify watch, so any later change of one of the names on the way (a file removed, renamed over,
  replaced by a symlink, a directory moved, its permissions changed) queues an event in the kernel
  before the call that made the change returns;
* before a kept verdict is used, one ``poll`` with no timeout asks whether anything is queued
  there, or whether the mount table changed (``/proc/self/mounts`` signals mounts and unmounts,
  which inotify does not report).  Anything that concerns a kept path, and any overflow, mount
  change or watch removal, forgets every verdict and every watch at once; the next requests
  confirm their paths again on the disk.

So a request is answered from memory only when the kernel says that nothing on the way to the
file has changed since the disk was last asked.  Events about other names in a watched directory
(the other files of a busy directory, the rest of ``/tmp``) are read and ignored.

Only directories on local file systems are watched (:data:`LOCAL_FILE_SYSTEMS`): on NFS, CIFS,
FUSE and the like a change made elsewhere is no event here, so their paths are checked on every
request.  Linux only; where inotify is missing or refused (no instance left, watches exhausted)
the caller checks the disk on every request, as before.  Only the reactor thread uses it; a forked
child starts without any verdict (the inotify instance would be shared with the parent).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys

__all__ = ["SymlinkFreePaths"]

# <sys/inotify.h>
_IN_ATTRIB = 0x00000004
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_ONLYDIR = 0x01000000
_IN_NAMED = _IN_ATTRIB | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
#: What is watched on each directory: changes of its entries, and of the directory itself.
_WATCH_MASK = _IN_NAMED | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
#: File systems whose every change is made by this kernel, so inotify reports all of them.  Not
#: network or FUSE file systems (NFS, CIFS, Ceph, 9p, virtiofs, sshfs...): a change made by another
#: machine, or behind the FUSE daemon, is no event here, so their paths are checked on every request.
LOCAL_FILE_SYSTEMS = frozenset((
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "jfs", "reiserfs", "zfs", "bcachefs",
    "overlay", "vfat", "exfat", "ramfs",
))

#: Paths checked on the disk alone after an inotify instance could not be had (the per-user limit,
#: 128 by default, is shared by every process of the user), before asking for one again.
_RETRY_AFTER = 10000  # wd, mask, cookie, len (then len bytes of NUL-padded name)


def _inotify() -> tuple[object, object] | None:
    """libc's ``inotify_init1`` and ``inotify_add_watch``, or None off Linux / without them."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        init1 = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    init1.argtypes = [ctypes.c_int]
    init1.restype = ctypes.c_int
    add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add_watch.restype = ctypes.c_int
    return init1, add_watch


def _unescape(field: bytes) -> bytes:
    """A mountinfo path field: space, tab, newline and backslash are written as octal escapes."""
    if b"\\" not in field:
        return field
    out = bytearray()
    k = 0
    while k < len(field):
        if field[k:k + 1] == b"\\" and field[k + 1:k + 4].isdigit():
            out.append(int(field[k + 1:k + 4], 8))
            k += 4
        else:
            out.append(field[k])
            k += 1
    return bytes(out)


def mount_points(mountinfo: bytes) -> dict[bytes, bytes]:
    """Mount point -> file system type, from the text of ``/proc/<pid>/mountinfo`` (the last
    mount on a point is the one seen there)."""
    mounts: dict[bytes, bytes] = {}
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        try:
            dash = fields.index(b"-", 6)
            mounts[_unescape(fields[4])] = fields[dash + 1]
        except (ValueError, IndexError):
            continue
    return mounts


def file_system(mounts: dict[bytes, bytes], directory: bytes) -> bytes:
    """The type of the file system ``directory`` (absolute, clean) lies on: that of the longest
    mount point above it."""
    path = directory
    while True:
        fs = mounts.get(path)
        if fs is not None:
            return fs
        if path == b"/":
            return b""
        cut = path.rfind(b"/")
        path = path[:cut] if cut > 0 else b"/"


class SymlinkFreePaths:
    """Answers about absolute, clean paths confirmed to exist with no symlink anywhere on their
    way, each under the caller's key (e.g. the request's own terms, so that a kept answer costs no
    path arithmetic); see the module docstring for why they stay exact.

    ``max_paths`` bounds the verdicts kept (all are dropped when it is reached), ``max_dirs`` the
    watched directories (when it is reached, every verdict and watch is dropped).
    """

    def __init__(self, max_paths: int = 32768, max_dirs: int = 8192,
                 mountinfo: str = "/proc/self/mountinfo") -> None:
        self.max_paths = max_paths
        self.max_dirs = max_dirs
        self._mountinfo = mountinfo
        #: Mount point -> file system type, read when the inotify instance is made (a mount or an
        #: unmount forgets everything, this table included).
        self._fs: dict[bytes, bytes] = {}
        self._libc = _inotify()
        self._fd = -1
        self._mounts: int = -1
        self._poll: select.poll | None = None
        #: The caller's key -> the value kept for it.
        self._paths: dict[tuple[str, str], str] = {}
        #: directory -> its watch descriptor; watch descriptor -> names in it that matter.
        self._dirs: dict[bytes, int] = {}
        self._names: dict[int, set[bytes]] = {}
        self.resets = 0
        self._off = False
        self._retry = 0
        if self._libc is not None and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    @property
    def usable(self) -> bool:
        """Whether verdicts are kept (inotify works here, and they are not turned off)."""
        return self._libc is not None and not self._off

    @usable.setter
    def usable(self, enabled: bool) -> None:
        """Turn keeping verdicts off (a benchmark's "before", a test of the disk checks) or back on;
        the watches stay, so what changes meanwhile is still seen."""
        self._off = not enabled

    def get(self, key: tuple[str, str]) -> str | None:
        """The value kept under ``key`` when nothing on the way to its path has changed since it
        was confirmed, else None."""
        kept = self._paths.get(key)
        if kept is None or self._off:
            return None
        poll = self._poll
        if poll is None:
            return None
        events = poll.poll(0)
        if events and not self._settle(events):
            return None
        return kept

    def watch(self, path: str) -> bool:
        """Watch every directory on the way to ``path`` (absolute and clean); True when they all
        are.  Call it *before* confirming ``path`` on the disk, then :meth:`keep` the verdict:
        a change made after the watch is queued, one made before is seen by the confirmation."""
        libc = self._libc
        if libc is None or self._off:
            return False
        if len(self._paths) >= self.max_paths:
            # The watches stay (what changes meanwhile is still queued); the names that matter
            # are those of the paths kept from now on.
            self._paths = {}
            self._names = {}
        if self._fd < 0:
            if self._retry > 0:  # no inotify instance to be had lately: not on every request
                self._retry -= 1
                return False
            if not self._open():
                self._retry = _RETRY_AFTER
                return False
        try:
            parts = os.fsencode(path).split(b"/")[1:]
        except UnicodeError:
            return False
        if not parts or not all(parts):
            return False
        add_watch = libc[1]
        dirs = self._dirs
        directory = b"/"
        for name in parts:
            if directory not in dirs:
                if len(dirs) >= self.max_dirs:
                    self.reset()  # the next requests start again with what they need
                    return False
                if os.fsdecode(file_system(self._fs, directory)) not in LOCAL_FILE_SYSTEMS:
                    return False  # changes may come from elsewhere, without any event here
                wd = add_watch(self._fd, directory, _WATCH_MASK)  # type: ignore[operator]
                if wd < 0:
                    return False
                dirs[directory] = wd
            directory = (directory if directory != b"/" else b"") + b"/" + name
        return True

    def keep(self, key: tuple[str, str], path: str, value: str) -> None:
        """Keep ``value`` under ``key``: ``path`` was confirmed on the disk after :meth:`watch`
        said True.

        The names on its way become the ones whose events matter in their directories (the
        events are read later, by :meth:`get`, so one queued meanwhile is judged with them)."""
        if self._fd < 0:
            return
        dirs = self._dirs
        names = self._names
        directory = b"/"
        for name in os.fsencode(path).split(b"/")[1:]:
            wd = dirs.get(directory)
            if wd is None:  # not watched (a reset since watch()): do not keep it
                return
            watched = names.get(wd)
            if watched is None:
                watched = names[wd] = set()
            watched.add(name)
            directory = (directory if directory != b"/" else b"") + b"/" + name
        self._paths[key] = value

    def reset(self) -> None:
        """Forget every verdict and every watch (the inotify instance is closed)."""
        if self._fd >= 0:
            self.resets += 1
        self._paths = {}
        self._dirs = {}
        self._names = {}
        self._poll = None
        for fd in (self._fd, self._mounts):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._mounts = -1

    # -- internals ---------------------------------------------------------------------------------

    def _open(self) -> bool:
        assert self._libc is not None
        fd = self._libc[0](os.O_NONBLOCK | os.O_CLOEXEC)  # type: ignore[operator]
        if fd < 0:
            return False
        try:
            mounts = os.open("/proc/self/mounts", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(fd)
            return False
        try:
            with open(self._mountinfo, "rb") as f:
                self._fs = mount_points(f.read())
        except OSError:
            self._fs = {}
        self._fd, self._mounts = fd, mounts
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        poll.register(mounts, select.POLLPRI)
        self._poll = poll
        return True

    def _settle(self, events: list[tuple[int, int]]) -> bool:
        """Read what ``poll`` reported; True when none of it concerns a kept path (otherwise
        everything is forgotten)."""
        for fd, _ in events:
            if fd != self._fd:  # the mount table changed (or the descriptor failed)
                self.reset()
                return False
        names = self._names
        size = _EVENT.size
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                self.reset()
                return False
            offset = 0
            while offset + size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + size:offset + size + length].rstrip(b"\0")
                offset += size + length
                if mask & _IN_NAMED and name:
                    watched = names.get(wd)
                    if watched is None or name not in watched:
                        continue  # an entry no kept path goes through
                # A kept name changed, the directory itself moved or went, a watch was removed,
                # or the queue overflowed: nothing kept can be trusted any more.
                self.reset()
                return False

    def _after_fork(self) -> None:
        self.reset()
