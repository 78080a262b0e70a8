"""Request-target parsing, the Go mux 301 rule and repository path sanitisation.

Every download request goes through these functions, so they are written to be cheap and to fail
only with the small exception family below (never with a stray ValueError/OSError/UnicodeError):

* :func:`parse_request_target` — raw request-target bytes → percent-decoded path + raw query
  (Go's ``url.ParseRequestURI``; malformed input → :class:`BadRequest`);
* :func:`canonical_redirect` / :func:`canonical_location` — the 301 that Go's ``http.ServeMux``
  sends for a non-canonical path, before any Mirrorbits code runs; :func:`moved_permanently_body`
  is the body Go writes with it;
* :func:`sanitize_path` — ``filesystem.EvaluateFilePath``: lexical cleaning, the repository check
  and symlink resolution → a repository-relative path, or :class:`Forbidden` / :class:`NotFound`.

Paths are ``str``; bytes that are not UTF-8 are carried as surrogate escapes (like ``os.fsdecode``),
so ``os.fsencode(path)`` gives back the exact bytes Go would use for Redis keys and log lines.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from html import escape as _html_escape
from typing import Generic, TypeVar
from urllib.parse import unquote_to_bytes

from mirrorbits.web.pathwatch import SymlinkFreePaths

__all__ = [
    "BadRequest",
    "Forbidden",
    "NotFound",
    "PathError",
    "RequestTarget",
    "canonical_location",
    "canonical_redirect",
    "clean_path",
    "go_clean",
    "moved_permanently_body",
    "parse_request_target",
    "sanitize_path",
]

K = TypeVar("K")
V = TypeVar("V")

# Longest path we hand to the kernel; anything longer would fail with ENAMETOOLONG anyway (Go then
# answers 404), we just say so without a syscall.
PATH_MAX = 4096


class PathError(Exception):
    """A request path that cannot be served; ``status`` and ``text`` are the plain-error reply."""

    status: int = 500
    text: str = "Internal Server Error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.text)
        self.detail = detail


class BadRequest(PathError):
    """Malformed request-target (bad percent escape, control byte, not origin/absolute form).

    Go's server answers these itself, before the handler: status 400, body ``400 Bad Request``
    (no trailing newline), ``Content-Type: text/plain; charset=utf-8``, ``Connection: close``,
    no ``Server`` header.
    """

    status = 400
    text = "400 Bad Request"


class Forbidden(PathError):
    """The path lies outside the repository (after cleaning or symlink resolution): plain 403."""

    status = 403
    text = "Forbidden"


class NotFound(PathError):
    """The path does not exist on the local filesystem (or cannot be resolved): plain 404."""

    status = 404
    text = "Not Found"


# ---------------------------------------------------------------------------------------------
# Request-target parsing (Go url.ParseRequestURI)

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CTL_BYTE = re.compile(rb"[\x00-\x1f\x7f]")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """A parsed request-target: ``path`` is percent-decoded (Go ``r.URL.Path``), ``raw_query`` is not."""

    path: str
    raw_query: str


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class _Recent(Generic[K, V]):
    """The recent results of a pure function of a request's bytes, bounded.

    Why: a download site's requests repeat their targets (popular files, Range requests, retries),
    and the parse, decode and cleaning of one costs several times a dict hit.  Only pure results
    are kept (nothing about the disk or the configuration).  Two generations of at most
    ``capacity`` entries each: a full young generation becomes the old one (the previous old one
    is dropped), and an entry found in the old one moves back to the young one.
    """

    __slots__ = ("capacity", "_young", "_old")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        value = self._young.get(key)
        if value is None:
            value = self._old.pop(key, None)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        young = self._young
        if len(young) >= self.capacity:
            self._old = young
            young = self._young = {}
        young[key] = value


#: Parsed request-targets by their bytes, for targets of at most :data:`_RECENT_MAX_LEN` bytes
#: (~250 bytes per entry for a typical path; at most ~40 MB for both generations).
_TARGETS: _Recent[bytes, RequestTarget] = _Recent(16384)
_RECENT_MAX_LEN = 512


def parse_request_target(target: bytes | str) -> RequestTarget:
    """Split and percent-decode a raw request-target the way Go's server does.

    Accepts origin form (``/a/b?q``) and absolute form (``http://host/a/b?q``, whose path may be
    empty). Raises :class:`BadRequest` for control bytes, ``*``, a relative target, or a ``%`` not
    followed by two hex digits. ``+`` stays ``+`` in the path; ``%2F`` decodes to ``/`` (as in Go).
    A target seen recently gives the same (immutable) result again, from memory.
    """
    raw = target.encode("utf-8", "surrogateescape") if isinstance(target, str) else bytes(target)
    if len(raw) > _RECENT_MAX_LEN:
        return _parse_request_target(raw)
    parsed = _TARGETS.get(raw)
    if parsed is None:
        parsed = _parse_request_target(raw)
        _TARGETS.put(raw, parsed)
    return parsed


def _parse_request_target(raw: bytes) -> RequestTarget:
    if _CTL_BYTE.search(raw):
        raise BadRequest("invalid control character in URL")
    path_part, sep, query = raw.partition(b"?")
    if not path_part.startswith(b"/"):
        m = _SCHEME.match(path_part)
        if m is None or not path_part.startswith(b"//", m.end()):
            # "*" (OPTIONS-style; ServeMux answers 400) and relative targets: Go rejects them.
            raise BadRequest("invalid URI for request")
        slash = path_part.find(b"/", m.end() + 2)
        path_part = b"" if slash < 0 else path_part[slash:]
    if b"%" in path_part:
        if _BAD_ESCAPE.search(path_part):
            raise BadRequest("invalid URL escape")
        path_part = unquote_to_bytes(path_part)
    return RequestTarget(_decode(path_part), _decode(query) if sep else "")


# ---------------------------------------------------------------------------------------------
# Lexical cleaning (Go path.Clean) and the ServeMux 301


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: resolve ``.``/``..``, collapse ``//``, drop a trailing ``/``.

    Unlike ``posixpath.normpath`` a leading ``//`` is collapsed too, and ``..`` above the root is
    dropped.
    """
    if not path:
        return "."
    rooted = path[0] == "/"
    if rooted and "//" not in path and "/." not in path and (len(path) == 1 or path[-1] != "/"):
        return path  # already clean: the common case, no allocation
    out: list[str] = []
    for part in path.split("/"):
        if not part or part == ".":
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def clean_path(path: str) -> str:
    """Go ``net/http.cleanPath``: rooted ``path.Clean`` that keeps a trailing slash."""
    if not path:
        return "/"
    if path[0] != "/":
        path = "/" + path
    cleaned = go_clean(path)
    if path[-1] == "/" and cleaned != "/":
        cleaned += "/"
    return cleaned


# Go url.escape(s, encodePath): unreserved and $&+,/:;=@ stay, everything else is %XX (upper hex).
_PATH_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~$&+,/:;=@")
_ESCAPES = tuple(chr(b) if b in _PATH_SAFE else f"%{b:02X}" for b in range(256))


def _escape_path(path: str) -> str:
    return "".join([_ESCAPES[b] for b in path.encode("utf-8", "surrogateescape")])


#: Decoded paths known to be canonical (``clean_path(path) == path``), of at most
#: :data:`_RECENT_MAX_LEN` characters; the value is always True.
_CANONICAL: _Recent[str, bool] = _Recent(16384)


def canonical_location(path: str, raw_query: str = "") -> str | None:
    """The ``Location`` of ServeMux's 301 for a decoded path, or ``None`` if it is canonical.

    The cleaned path is re-escaped as Go's ``URL.String`` does; a non-empty query is kept as sent.
    """
    if _CANONICAL.get(path):
        return None
    cleaned = clean_path(path)
    if cleaned == path:
        if len(path) <= _RECENT_MAX_LEN:
            _CANONICAL.put(path, True)
        return None
    location = _escape_path(cleaned)
    if raw_query:
        location += "?" + raw_query
    return location


def canonical_redirect(raw_target: bytes | str) -> str | None:
    """Go's ``ServeMux`` rule: 301 target for a non-canonical request-target, else ``None``.

    ``raw_target`` is the request-target as received (Twisted ``request.uri``). Raises
    :class:`BadRequest` when it cannot be parsed at all.
    """
    target = parse_request_target(raw_target)
    return canonical_location(target.path, target.raw_query)


def moved_permanently_body(location: str) -> str:
    """Body Go's ``http.Redirect`` writes with the 301 for a GET (no body for other methods).

    The rest of that response, for the caller: ``Location: <location>``, and for GET and HEAD
    ``Content-Type: text/html; charset=utf-8``; no ``Server`` header, never gzip-compressed.
    """
    return f'<a href="{_go_html_escape(location)}">Moved Permanently</a>.\n\n'


def _go_html_escape(s: str) -> str:
    # Go htmlReplacer: & < > " ' → &amp; &lt; &gt; &#34; &#39;
    return _html_escape(s, quote=True).replace("&quot;", "&#34;").replace("&#x27;", "&#39;")


# ---------------------------------------------------------------------------------------------
# Repository sanitisation (Go filesystem.EvaluateFilePath)

_lstat = os.lstat
_S_ISLNK = stat.S_ISLNK


def _normalise_repository(repository: str) -> str:
    if not repository.startswith("/"):
        repository = os.getcwd() + "/" + repository  # Go filepath.Abs
    return go_clean(repository)


def _relative(repo: str, path: str) -> str | None:
    """``path`` without the ``repo`` prefix when it lies inside ``repo`` (both clean, absolute)."""
    if repo == "/":
        # Go bug: with Repository "/" it tests the prefix "//", so everything but "/" is 403 and the
        # sliced result loses its leading "/". A root repository simply contains every path.
        return "" if path == "/" else path
    if path.startswith(repo):
        if len(path) == len(repo):
            return ""
        if path[len(repo)] == "/":
            return path[len(repo) :]
    return None


def _resolve(path: str) -> str:
    try:
        return os.path.realpath(path, strict=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise NotFound(str(exc)) from None


#: Paths confirmed symlink-free, kept while nothing on their way changes (one per process).
_confirmed = SymlinkFreePaths()


def sanitize_path(repository: str, url_path: str) -> str:
    """Map a decoded URL path to the repository-relative path that is looked up.

    Returns ``""`` for the repository root and ``/dir/file`` otherwise (symlinks resolved, so
    ``/latest.iso → releases/1.0.iso`` gives ``/releases/1.0.iso``). Raises :class:`Forbidden` for a
    path outside the repository and :class:`NotFound` for one that does not resolve on disk.

    Cost and caching: every answer is the disk's as it is now.  A path is confirmed with one
    ``lstat`` per path component below the repository (~4 µs each in a redirect on the 2-core
    test VM: a syscall on the request path is dear); only paths that do contain a symlink go
    through ``os.path.realpath``.  A path with no symlink anywhere from ``/`` (the common case)
    is then kept by :class:`~mirrorbits.web.pathwatch.SymlinkFreePaths` under inotify watches of
    every directory on its way, and answered from memory only while the kernel reports no change
    there (one ``poll`` per request instead of an ``lstat`` per component).  No time-limited cache: a
    removed file or a re-pointed link is seen by the next request.

    Deliberate deviation from Go: when ``repository`` itself contains a symlinked component,
    Go compares the fully resolved path with the unresolved prefix and answers 403 to everything.
    Here a resolved path is also accepted when it lies inside the *resolved* repository; with a
    symlink-free repository the behaviour is exactly Go's.
    """
    confirmed = _confirmed
    key = (repository, url_path)
    kept = confirmed.get(key)
    if kept is not None:
        return kept
    repo = _normalise_repository(repository)
    candidate = go_clean(repo + url_path)
    rel = _relative(repo, candidate)
    if rel is None:
        raise Forbidden(candidate)
    if len(candidate) > PATH_MAX or "\x00" in candidate:
        raise NotFound("path too long or contains a NUL byte")
    if not rel:
        # The repository root itself: in our semantics (see above) only its existence matters.
        try:
            os.stat(repo)
        except (OSError, ValueError) as exc:
            raise NotFound(str(exc)) from None
        return rel

    # Watched before the disk is asked (a change after the watch is reported, one before is
    # seen by the walk); kept only when the repository's own path has no symlink either (and
    # does not depend on the working directory).
    keep = (confirmed.usable and repository[:1] == "/" and confirmed.watch(candidate)
            and _repository_symlink_free(repo))

    # Walk the components below the repository with lstat. Every one must exist; if none is a
    # symlink, the resolved path is the candidate itself.
    path = repo if repo != "/" else ""
    try:
        for part in rel[1:].split("/"):
            path = path + "/" + part
            if _S_ISLNK(_lstat(path).st_mode):
                break
        else:
            if keep:
                confirmed.keep(key, candidate, rel)
            return rel
    except (OSError, ValueError) as exc:
        raise NotFound(str(exc)) from None

    resolved = _resolve(candidate)
    if resolved == candidate:
        return rel
    inside = _relative(repo, resolved)
    if inside is None:
        real_repo = _resolve(repo)
        if real_repo != repo:
            inside = _relative(real_repo, resolved)
        if inside is None:
            raise Forbidden(resolved)
    return inside


def _repository_symlink_free(repo: str) -> bool:
    """Whether no component of the repository's own path is a symlink (kept like the paths below
    it, its directories being watched by then).  The paths below it are kept only then: a
    symlink above them could be re-pointed without any event in the directories they are in."""
    if repo == "/" or _confirmed.get(("", repo)) is not None:
        return True
    current = ""
    try:
        for part in repo[1:].split("/"):
            current = current + "/" + part
            if _S_ISLNK(_lstat(current).st_mode):
                return False
    except (OSError, ValueError):
        return False
    _confirmed.keep(("", repo), repo, "")
    return True
