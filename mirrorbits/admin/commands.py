"""Every administration operation, once: async functions on Redis that return data.

The CLI (directly, when the daemon is down), the AMP admin channel inside the daemon and the SSH
manhole all call :class:`AdminCommands`; none of them touches Redis itself.  The operations are the Go
daemon's RPC methods and they write exactly what the Go RPC writes, so Go and Python nodes can share
one Redis.

Errors are :class:`AdminError`: a plain message (what the CLI prints) and a code that classifies
the failure (``Unknown``, ``FailedPrecondition``, ``Internal``, ``Unauthenticated``, ``Unavailable``).

Deliberate deviations from Go, each noted where it is made:

* an exact (case-insensitive) name wins over a substring match (:meth:`AdminCommands.resolve`);
* ``add``/``geoupdate`` geolocate a URL with an explicit port (Go passed ``host:port`` to DNS);
* ``ChangeStatus`` on an unknown id fails instead of creating a stray hash and log list;
* an edit that changes the number of YAML lines does not crash (see ``formatting.yaml_diff``).
"""

from __future__ import annotations

import os
import platform
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from twisted.internet import defer, threads
from twisted.logger import Logger

import twisted
from mirrorbits import VERSION, faults
from mirrorbits.admin.formatting import VersionInfo, mirror_yaml, stats_key_coverage, yaml_diff
from mirrorbits.admin.interface import (
    PROTOCOL_ALL,
    PROTOCOL_FTP,
    PROTOCOL_RSYNC,
    AddResult,
    AdminAPI,
    AdminError,
    FamilyState,
    FamilyUsage,
    GeoUpdateResult,
    MirrorRef,
    PruneReport,
    ScanReply,
    StatsExport,
    StatsMirrorReply,
)
from mirrorbits.config import Config
from mirrorbits.geo import CITY_DB, GeoIP, GeoRecord
from mirrorbits.history.export import collect_export
from mirrorbits.history.retention import prune, usage
from mirrorbits.ipfamily import family_states
from mirrorbits.model import (
    LOG_ADDED,
    LOG_DISABLED,
    LOG_EDITED,
    LOG_ENABLED,
    EmptyMirrorHash,
    Mirror,
    mirror_log_json,
    render_mirror_log,
)
from mirrorbits.reactor import default_reactor
from mirrorbits.redis import schema
from mirrorbits.redis.connection import NotReady, RedisClient, RedisUnavailable, ResponseError
from mirrorbits.redis.protocol import Reply
from mirrorbits.redis.replies import hash_dict

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from mirrorbits.app import Mirrorbits

#: An argument of a Redis command.
RedisArg = str | int | bytes  # what txredisapi encodes as Go writes it (no float)

__all__ = [
    "AddResult",
    "AdminCommands",
    "AdminError",
    "GeoUpdateResult",
    "MirrorRef",
    "MirrorScanner",
    "PROTOCOL_ALL",
    "PROTOCOL_FTP",
    "PROTOCOL_RSYNC",
    "ScanReply",
    "StatsMirrorReply",
    "go_url_parse_error",
    "regexp_compile",
    "validate_add",
    "version_info",
]

log = Logger(namespace="mirrorbits.admin")

#: Max log lines returned when the caller asks for 0 or less (Go default).
DEFAULT_MAX_LOGS = 500


def _fp(message: str) -> AdminError:
    return AdminError(message, "FailedPrecondition")


class MirrorScanner(Protocol):
    """What the mirror scan code (``mirrorbits.scan``) must offer to ``scan``.

    ``protocol`` is ``"rsync"`` or ``"ftp"``; the scanner takes the ``SCANNING_<id>`` lock itself and
    returns a :class:`ScanReply` (without ``enabled``) or raises with the cause as message.
    """

    def scan_mirror(self, mirror: Mirror, protocol: str) -> Awaitable[ScanCounts]: ...


async def _await(awaitable: Awaitable[ScanCounts]) -> ScanCounts:
    return await awaitable


class ScanCounts(Protocol):
    """The counters of a finished mirror scan (``mirrorbits.scan.commit.ScanResult``)."""

    @property
    def files_indexed(self) -> int: ...
    @property
    def known_indexed(self) -> int: ...
    @property
    def removed(self) -> int: ...
    @property
    def tz_offset_ms(self) -> int: ...


# ---------------------------------------------------------------------------------------------------
# Validation helpers (Go's url.Parse leniency)

_HEX = set("0123456789abcdefABCDEF")
# Go's shouldEscape(c, encodeHost) is false for these (plus letters and digits).
_HOST_OK = set("-_.~!$&'()*+,;=:[]<>\"")


def _bad_escape(s: str) -> bool:
    i = 0
    while i < len(s):
        if s[i] == "%":
            if len(s[i + 1:i + 3]) < 2:
                return True
            if s[i + 1] not in _HEX or s[i + 2] not in _HEX:
                return True
            i += 3
            continue
        i += 1
    return False


def _bad_host(host: str) -> bool:
    if _bad_escape(host):
        return True
    return any(ord(c) < 0x80 and not (c.isalnum() or c in _HOST_OK or c == "%") for c in host)


def go_url_parse_error(url: str) -> str | None:
    """Why Go's ``url.Parse`` rejects an absolute URL (None when it accepts it).

    Rejected: control characters, bad ``%`` escapes in path/fragment/host, invalid host characters,
    a non-numeric port, an unclosed IPv6 bracket.  Accepted: spaces in the path, bad escapes in the
    query, out-of-range ports, an empty host, user info.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "invalid control character in URL"
    rest, _, fragment = url.partition("#")
    if _bad_escape(fragment):
        return "invalid URL escape"
    scheme, sep, rest = rest.partition(":")
    if not sep or not scheme:
        return "missing protocol scheme"
    rest = rest.split("?", 1)[0]
    path = rest
    if rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        path = slash + tail
        host = authority.rpartition("@")[2]
        if host.startswith("["):
            end = host.find("]")
            if end < 0:
                return "missing ']' in host"
            port = host[end + 1:]
            if port and not re.fullmatch(r":[0-9]*", port):
                return f"invalid port {port!r} after host"
            if _bad_escape(host[1:end]):
                return "invalid URL escape"
        else:
            colon = host.rfind(":")
            if colon >= 0:
                port = host[colon:]
                if not re.fullmatch(r":[0-9]*", port):
                    return f"invalid port {port!r} after host"
                host = host[:colon]
            if _bad_host(host):
                return "invalid character in host name"
    if _bad_escape(path):
        return "invalid URL escape"
    return None


def validate_add(identifier: str, http_url: str) -> str | None:
    """The ``add`` client-side checks, in Go's order; returns the error text or None."""
    if " " in identifier:
        return "The identifier cannot contain a space"
    if not http_url:
        return "You *must* pass at least an HTTP URL"
    if http_url.startswith("http://") or http_url.startswith("https://"):
        if go_url_parse_error(http_url) is not None:
            return "Can't parse HTTP URL"
    elif "://" in http_url:
        return "The HTTP URL has an invalid scheme"
    elif go_url_parse_error("http://" + http_url) is not None:
        return "Can't parse HTTP URL"
    return None


def url_host(http_url: str) -> str:
    """The host name of a mirror's HTTP URL, without user info, port or IPv6 brackets."""
    url = http_url if "://" in http_url else "http://" + http_url
    authority = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    # Fix of a Go bug: the port is not part of the name to resolve.
    colon = host.rfind(":")
    if colon >= 0 and host.count(":") == 1:
        host = host[:colon]
    return host


# ---------------------------------------------------------------------------------------------------
# Regular expressions (RE2 syntax in Go; Python's re is close for the patterns people type)

_RE_ERRORS = (
    ("unterminated character set", "missing closing ]"),
    ("missing ), unterminated subpattern", "missing closing )"),
    ("unbalanced parenthesis", "unexpected )"),
    ("nothing to repeat", "missing argument to repetition operator"),
    ("multiple repeat", "invalid nested repetition operator"),
    ("bad escape", "invalid escape sequence"),
)


def regexp_compile(pattern: str) -> re.Pattern[str]:
    """Compile a ``stats file`` pattern; errors read like Go's ``error parsing regexp: ...``."""
    try:
        return re.compile(pattern)
    except re.error as e:
        text = e.msg
        for py, go in _RE_ERRORS:
            if text.startswith(py):
                pos = e.pos or 0
                text = f"{go}: `{pattern[pos:]}`"
                break
        raise AdminError(f"error parsing regexp: {text}") from None


def version_info() -> VersionInfo:
    """This process' build information, in the six Go labels (Python and Twisted as "GoVersion")."""
    return VersionInfo(
        version=f"v{VERSION}",
        build=os.environ.get("MIRRORBITS_BUILD", "python"),
        go_version=f"{platform.python_implementation()} {platform.python_version()} / "
                   f"Twisted {twisted.__version__}",
        os=platform.system().lower(),
        arch={"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        gomaxprocs=os.cpu_count() or 1,
    )


def _default_geoip(directory: str) -> GeoIP:
    return GeoIP(directory, cache_size=16)


async def _resolve_default(host: str) -> list[str]:
    infos = await threads.deferToThread(socket.getaddrinfo, host, None, 0, socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


def _to_int(v: object) -> int:
    if v is None:
        return 0
    try:
        return int(v)  # type: ignore[call-overload]  # a Redis integer or numeric string
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------------


@dataclass
class AdminCommands(AdminAPI):
    """The admin operations (:class:`~mirrorbits.admin.interface.AdminAPI`) on one Redis.  Daemon-only hooks are optional: without them the
    operation fails with a clear error (e.g. ``refresh`` from a CLI running without the daemon).

    ``refresher(rehash)`` runs the local scan; ``mirror_scanner`` the mirror scans; ``on_reload``
    and ``on_upgrade`` are the daemon's SIGHUP/SIGUSR2 actions; ``now`` is the clock (tests).
    """

    redis: RedisClient
    config: Callable[[], Config]
    refresher: Callable[[bool], Awaitable[object]] | None = None
    mirror_scanner: MirrorScanner | None = None
    on_reload: Callable[[], None] | None = None
    on_upgrade: Callable[[], None] | None = None
    geoip_factory: Callable[[str], GeoIP] = _default_geoip
    resolver: Callable[[str], Awaitable[list[str]]] = _resolve_default
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    where: str = "daemon"

    # -- plumbing -----------------------------------------------------------------------------

    async def _exec(self, *args: RedisArg) -> Reply:
        with _redis_errors():
            return await self.redis.execute(*args)

    async def _transaction(self, commands: Sequence[Sequence[RedisArg]]) -> list[object]:
        with _redis_errors():
            return list(await self.redis.transaction(commands))

    async def _publish_mirror(self, mirror_id: int) -> None:
        await self._exec("PUBLISH", schema.CHANNEL_MIRROR_UPDATE, str(mirror_id))

    async def _log(self, mirror_id: int, typ: int) -> None:
        entry = mirror_log_json(typ, mirror_id, time.time_ns())
        await self._exec("RPUSH", schema.mirror_logs_key(mirror_id), entry)

    @staticmethod
    def _check_id(mirror_id: int) -> None:
        if mirror_id <= 0:
            raise _fp("invalid mirror id")

    async def _names(self) -> dict[int, str]:
        try:
            raw = await self._exec("HGETALL", schema.MIRRORS)
        except AdminError as e:
            if e.code == "Unavailable":
                raise
            raise AdminError(f"can't fetch the list of mirrors: {e.message}") from None
        pairs = hash_dict(raw)
        out: dict[int, str] = {}
        for k, v in pairs.items():
            try:
                out[int(k)] = v
            except ValueError:
                continue
        return out

    async def _load(self, mirror_id: int) -> Mirror | None:
        raw = await self._exec("HGETALL", schema.mirror_key(mirror_id))
        try:
            return Mirror.from_redis(hash_dict(raw))
        except EmptyMirrorHash:
            return None
        except ValueError as e:
            raise AdminError(f"the record of mirror {mirror_id} in Redis is unreadable: {e}") from None

    # -- read-only ------------------------------------------------------------------------------

    async def ping(self) -> None:
        """No-op; the channel uses it to check the password."""

    async def version(self) -> VersionInfo:
        return version_info()

    async def match_mirror(self, pattern: str) -> list[MirrorRef]:
        """Every mirror whose name contains ``pattern`` (case-insensitive); empty pattern = all."""
        needle = pattern.lower()
        refs = [MirrorRef(i, n) for i, n in (await self._names()).items() if needle in n.lower()]
        refs.sort(key=lambda r: (r.name, r.id))
        return refs

    async def resolve(self, pattern: str) -> list[MirrorRef]:
        """``match_mirror`` with the exact-name preference of v0.3 (#19), lost by Go in v0.5.

        Deviation from Go: when one name equals ``pattern`` case-insensitively, only that
        mirror is returned, so a mirror named ``mirror`` can be designated next to ``mirror1``.
        """
        refs = await self.match_mirror(pattern)
        exact = [r for r in refs if r.name.lower() == pattern.lower()]
        if len(exact) == 1:
            return exact
        exact_case = [r for r in refs if r.name == pattern]
        return exact_case if len(exact_case) == 1 else refs

    async def _hashes(self, ids: list[int]) -> list[tuple[int, dict[str, str]]]:
        """(id, ``HGETALL MIRROR_<id>``) of each mirror, in one pipeline."""
        if not ids:
            return []
        with _redis_errors():
            replies = await self.redis.pipeline([("HGETALL", schema.mirror_key(i)) for i in ids])
        out = []
        for mirror_id, raw in zip(ids, replies, strict=True):
            if isinstance(raw, Exception):
                raise AdminError(f"Redis refused to read mirror {mirror_id}: {raw}")
            out.append((mirror_id, hash_dict(raw)))
        return out

    async def list_mirrors(self) -> list[Mirror]:
        """Every mirror record (``List``)."""
        out = []
        for mirror_id, fields in await self._hashes(sorted(await self._names())):
            try:
                out.append(Mirror.from_redis(fields))
            except EmptyMirrorHash:
                continue  # removed meanwhile
            except ValueError as e:
                raise AdminError(f"the record of mirror {mirror_id} in Redis is unreadable: {e}") from None
        return out

    async def mirror_info(self, mirror_id: int) -> Mirror:
        """The full record (``MirrorInfo``); an unknown id gives an empty record, as in Go."""
        self._check_id(mirror_id)
        return await self._load(mirror_id) or Mirror()

    async def family_states(self, mirror_ids: list[int]) -> list[FamilyState]:
        """The per-family states stored in the mirrors' hashes (none for a mirror never checked per
        family, or gone)."""
        return [FamilyState(mirror_id, protocol, family, state, reason, checked)
                for mirror_id, fields in await self._hashes([int(i) for i in mirror_ids])
                for protocol, family, state, reason, checked in family_states(fields)]

    async def mirror_logs(self, mirror_id: int, max_results: int = DEFAULT_MAX_LOGS) -> list[str]:
        """The last ``max_results`` log entries rendered as text, oldest first (bad entries skipped)."""
        self._check_id(mirror_id)
        n = max_results if max_results > 0 else DEFAULT_MAX_LOGS
        try:
            raw = await self._exec("LRANGE", schema.mirror_logs_key(mirror_id), -n, -1)
        except AdminError as e:
            raise AdminError(f"mirror logs error: {e.message}", e.code) from None
        lines = []
        for item in _strings(raw):
            text = render_mirror_log(item)
            if text is None:
                log.warn("Skipping a log entry of mirror {id}: {item!r}", id=mirror_id, item=item)
                continue
            lines.append(text)
        return lines

    async def stats_file(self, pattern: str, start: datetime, end: datetime) -> dict[str, int]:
        """Downloads per matching path over [start, end] (``StatsFile``)."""
        rx = regexp_compile(pattern)
        suffixes = stats_key_coverage(start, end)
        replies = await self.redis.pipeline([("HGETALL", "STATS_FILE_" + s) for s in suffixes])
        out: dict[str, int] = {}
        for raw in replies:
            if isinstance(raw, Exception):
                raise AdminError(f"can't fetch stats: {raw}")
            for path, count in hash_dict(raw).items():
                if rx.search(path):
                    out[path] = out.get(path, 0) + _to_int(count)
        return out

    async def stats_prune(self, dry_run: bool = False) -> PruneReport:
        """The statistics keys outside the retention window, deleted unless ``dry_run``."""
        retention = self.config().StatsRetention
        if not retention.enabled:
            raise AdminError("no StatsRetention is configured: every statistics key is kept",
                             "FailedPrecondition")
        with _stats_errors():
            return await prune(self.redis, retention, self.now().astimezone(UTC).date(), dry_run)

    async def stats_usage(self) -> list[FamilyUsage]:
        """Memory per family and level of statistics keys."""
        with _stats_errors():
            return await usage(self.redis)

    async def stats_export(self, start: datetime | None = None, end: datetime | None = None) -> StatsExport:
        """Counters per file and per mirror over [start, end] (all time without dates)."""
        if (start is None) != (end is None):
            raise AdminError("give both ends of the period, or neither", "InvalidArgument")
        first = start.astimezone(UTC).date() if start is not None else None
        last = end.astimezone(UTC).date() if end is not None else None
        if first is not None and last is not None and first > last:
            raise AdminError("the period ends before it starts", "InvalidArgument")
        names = {m.id: m.name for m in await self.list_mirrors()}
        with _stats_errors():
            return await collect_export(self.redis, first, last, names)

    async def stats_mirror(self, mirror_id: int, start: datetime, end: datetime) -> StatsMirrorReply:
        """Redirects and bytes of one mirror over [start, end] (``StatsMirror``)."""
        self._check_id(mirror_id)
        suffixes = stats_key_coverage(start, end)
        cmds: list[tuple[str, ...]] = []
        for s in suffixes:
            cmds.append(("HGET", "STATS_MIRROR_" + s, str(mirror_id)))
            cmds.append(("HGET", "STATS_MIRROR_BYTES_" + s, str(mirror_id)))
        replies = await self.redis.pipeline(cmds) if cmds else []
        requests = nbytes = 0
        for i, raw in enumerate(replies):
            if isinstance(raw, Exception):
                raise AdminError(f"can't fetch stats: {raw}")
            if i % 2 == 0:
                requests += _to_int(raw)
            else:
                nbytes += _to_int(raw)
        mirror = await self._load(mirror_id) or Mirror()
        return StatsMirrorReply(mirror, requests, nbytes)

    # -- writes ---------------------------------------------------------------------------------

    async def _save(self, mirror: Mirror, *, new: bool) -> Mirror:
        """The Go save path: unique name, id, normalise, one MULTI."""
        names = await self._names()
        for other_id, other_name in names.items():
            if other_name == mirror.name and other_id != mirror.id:
                raise AdminError("name already taken")
        if new:
            try:
                mirror_id = _to_int(await self._exec("INCR", schema.LAST_MID))
            except AdminError as e:
                raise AdminError(f"failed creating a new id: {e.message}", e.code) from None
            mirror = replace(mirror, id=mirror_id)
            faults.point("admin.save.id")
        mirror = mirror.normalized()
        hmset: list[str] = ["HMSET", schema.mirror_key(mirror.id)]
        for k, v in mirror.config_fields_to_redis():
            hmset += [k, v]
        try:
            await self._transaction([hmset, ("HSET", schema.MIRRORS, str(mirror.id), mirror.name)])
        except AdminError:
            raise
        except Exception as e:
            raise AdminError(f"couldn't save the mirror configuration: {e}") from None
        faults.point("admin.save.written")
        await self._publish_mirror(mirror.id)
        faults.point("admin.save.published")
        await self._log(mirror.id, LOG_ADDED if new else LOG_EDITED)
        return mirror

    async def _geolocate(self, http_url: str) -> tuple[GeoRecord, list[str], GeoIP]:
        """DNS + GeoIP of the mirror's host, as Go's AddMirror/GeoUpdateMirror (with the port fix).

        Missing GeoIP data is not an error here (Go refused to add the mirror): the record is
        whatever the loaded databases say, possibly nothing, and the caller decides what to tell."""
        warnings: list[str] = []
        host = url_host(http_url)
        try:
            addrs = await self.resolver(host)
        except socket.gaierror as e:
            reason = "no such host" if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)) \
                else (e.strerror or str(e))
            raise AdminError(f"IP lookup failed: lookup {host}: {reason}") from None
        except Exception as e:  # noqa: BLE001 - any resolver failure is reported, never raised raw
            raise AdminError(f"IP lookup failed: lookup {host}: {e}") from None
        if not addrs:
            raise AdminError(f"IP lookup failed: lookup {host}: no such host")
        if len(addrs) > 1:
            warnings.append("Warning: the hostname returned more than one address. "
                            "Assuming they're sharing the same location.")
        geo = await threads.deferToThread(self.geoip_factory, self.config().GeoipDatabasePath)
        record = geo.lookup(addrs[0])
        if not record.country_code and CITY_DB not in geo.missing:
            warnings.append("Warning: unable to guess the geographic location of this mirror")
        return record, warnings, geo

    async def add_mirror(self, mirror: Mirror) -> AddResult:
        """``AddMirror``: geolocate, then save as a new, disabled mirror.

        Deviation from Go: without GeoIP data the mirror is still added, without a location, and the
        reply warns that ``geoupdate`` must run once the data is there (Go refused with "One or more
        GeoIP database could not be loaded", which stopped every newcomer at the first mirror)."""
        if mirror.id != 0:
            raise _fp("unexpected ID")
        err = validate_add(mirror.name, mirror.http_url)
        if err is not None:
            # The Go daemon trusted its client; ours also serves the manhole, so it checks too.
            raise AdminError(err)
        names = await self._names()
        if mirror.name in names.values():
            raise AdminError("name already taken")
        record, warnings, geo = await self._geolocate(mirror.http_url)
        if geo.missing:
            what = "has no location" if CITY_DB in geo.missing else "has no AS number"
            warnings.append(f"Warning: this mirror {what} until 'mirrorbits geoupdate {mirror.name}' runs "
                            f"with GeoIP data present. {geo.missing_text()}")
        mirror = replace(mirror, enabled=False)
        if record.country_code:
            mirror = replace(mirror, latitude=record.latitude, longitude=record.longitude,
                             continent_code=record.continent_code, country_codes=record.country_code,
                             asnum=record.as_num)
        saved = await self._save(mirror, new=True)
        if record.country_code:
            return AddResult(saved.id, record.latitude, record.longitude, record.country,
                             record.continent_code, f"{record.as_name} ({record.as_num})", tuple(warnings))
        return AddResult(saved.id, warnings=tuple(warnings))

    async def update_mirror(self, mirror: Mirror) -> str:
        """``UpdateMirror``: save an edited record; returns the diff against the stored one."""
        self._check_id(mirror.id)
        old = await self._load(mirror.id) or Mirror()
        diff = yaml_diff(mirror_yaml(old), mirror_yaml(mirror))
        await self._save(mirror, new=False)
        return diff

    async def geo_update_mirror(self, mirror_id: int) -> GeoUpdateResult:
        """``GeoUpdateMirror``: the record with a fresh geolocation, and the diff (nothing saved)."""
        self._check_id(mirror_id)
        old = await self._load(mirror_id)
        if old is None:
            raise AdminError("mirror not found")
        record, warnings, geo = await self._geolocate(old.http_url)
        if CITY_DB in geo.missing:
            # Nothing to compare with: saying "up to date" would be a lie.
            raise AdminError(f"cannot locate mirror '{old.name}': {geo.missing_text()}", "FailedPrecondition")
        if geo.missing:
            warnings.append(f"Warning: the AS number stays unknown. {geo.missing_text()}")
        new = old
        if record.country_code:
            new = replace(old, latitude=record.latitude, longitude=record.longitude,
                          asnum=record.as_num, continent_code=record.continent_code)
            if record.country_code not in old.country_list:
                new = replace(new, country_codes=record.country_code)
        return GeoUpdateResult(new, yaml_diff(mirror_yaml(old), mirror_yaml(new)), tuple(warnings))

    async def change_status(self, mirror_id: int, enabled: bool) -> None:
        """``ChangeStatus``: enable or disable, publish, log (no idempotence check, as in Go)."""
        self._check_id(mirror_id)
        # Deviation: Go wrote a stray MIRROR_<id> holding only ``enabled``.
        if not await self._exec("EXISTS", schema.mirror_key(mirror_id)):
            raise AdminError("mirror not found")
        await self._exec("HMSET", schema.mirror_key(mirror_id), "enabled", "1" if enabled else "0")
        await self._publish_mirror(mirror_id)
        await self._log(mirror_id, LOG_ENABLED if enabled else LOG_DISABLED)

    async def remove_mirror(self, mirror_id: int) -> None:
        """``RemoveMirror``: disable, drop every key of the mirror; stats are kept."""
        self._check_id(mirror_id)
        try:
            await self.change_status(mirror_id, False)
        except AdminError as e:
            if e.message != "mirror not found":
                raise AdminError(f"unable to disable the mirror: {e.message}", e.code) from None
        faults.point("admin.remove.disabled")
        try:
            files = _strings(await self._exec("SMEMBERS", schema.mirror_files_key(mirror_id)))
        except AdminError as e:
            raise AdminError(f"unable to fetch the file list: {e.message}", e.code) from None
        cmds: list[Sequence[RedisArg]] = []
        for path in files:
            cmds.append(("DEL", schema.file_info_key(mirror_id, path)))
            cmds.append(("SREM", schema.file_mirrors_key(path), str(mirror_id)))
            cmds.append(("PUBLISH", schema.CHANNEL_MIRROR_FILE_UPDATE, f"{mirror_id} {path}"))
        cmds.append(("DEL", schema.mirror_key(mirror_id), schema.mirror_files_key(mirror_id),
                     schema.mirror_files_tmp_key(mirror_id), schema.handled_files_key(mirror_id),
                     schema.scanning_key(mirror_id), schema.mirror_logs_key(mirror_id),
                     schema.mirror_scan_digest_key(mirror_id)))
        cmds.append(("HDEL", schema.MIRRORS, str(mirror_id)))
        try:
            await self._transaction(cmds)
        except AdminError as e:
            raise AdminError(f"operation failed: {e.message}", e.code) from None
        except Exception as e:
            raise AdminError(f"operation failed: {e}") from None
        faults.point("admin.remove.written")
        await self._publish_mirror(mirror_id)

    # -- daemon operations ------------------------------------------------------------------------

    async def refresh(self, rehash: bool = False) -> None:
        """``RefreshRepository``: the full local scan, synchronously."""
        if self.refresher is None:
            raise AdminError(f"refresh is not available in the {self.where} (it runs in the daemon)",
                             "Unavailable")
        try:
            await self.refresher(rehash)
        except AdminError:
            raise
        except Exception as e:
            raise AdminError(str(e) or e.__class__.__name__) from None

    async def scan_mirror(self, mirror_id: int, auto_enable: bool = False,
                          protocol: int = PROTOCOL_ALL, timeout: float | None = None) -> ScanReply:
        """``ScanMirror``: checks, then the scan itself through ``mirror_scanner``.

        ``timeout`` (seconds, ``scan -timeout``) aborts a scan that takes longer, as the Go daemon
        did when the caller's deadline passed."""
        self._check_id(mirror_id)
        if not await self._exec("EXISTS", schema.FILES):
            raise _fp("local repository not yet indexed. You should run 'refresh' first!")
        mirror = await self._load(mirror_id)
        if mirror is None:
            raise AdminError("mirror not found")
        name = mirror.name
        protocols: list[str] = []
        if protocol in (PROTOCOL_ALL, PROTOCOL_RSYNC) and mirror.rsync_url:
            protocols.append("rsync")
        if protocol in (PROTOCOL_ALL, PROTOCOL_FTP) and mirror.ftp_url:
            protocols.append("ftp")
        if not protocols:
            raise AdminError(f"scanning {name} failed: no suitable URL for the scan")
        if await self._exec("EXISTS", schema.scanning_key(mirror_id)):
            raise AdminError(f"scanning {name} failed: scan already in progress")
        if self.mirror_scanner is None:
            raise AdminError(f"scanning {name} failed: mirror scanning is not available in the "
                             f"{self.where}", "Unavailable")
        cause = ""
        reply: ScanReply | None = None
        for proto in protocols:
            try:
                d = defer.Deferred.fromCoroutine(_await(self.mirror_scanner.scan_mirror(mirror, proto)))
                if timeout:
                    d.addTimeout(timeout, default_reactor())
                try:
                    r = await d
                except defer.TimeoutError:
                    raise AdminError(f"scanning {name} took longer than {timeout:g} s and was stopped",
                                     "DeadlineExceeded") from None
                reply = ScanReply(files_indexed=r.files_indexed, known_indexed=r.known_indexed,
                                  removed=r.removed, tz_offset_ms=r.tz_offset_ms)
                break
            except AdminError:
                raise
            except Exception as e:  # only the last protocol's cause is reported, as in Go
                cause = str(e) or e.__class__.__name__
        if reply is None:
            raise AdminError(f"scanning {name} failed: {cause}")
        if auto_enable:
            try:
                await self.change_status(mirror_id, True)
            except AdminError as e:
                raise AdminError(f"couldn't enable the mirror: {e.message}") from None
            reply = replace(reply, enabled=True)
        return reply

    async def reload(self) -> None:
        """``Reload``: what SIGHUP does (the outcome is only logged, as in Go)."""
        if self.on_reload is None:
            raise AdminError(f"reload is not available in the {self.where}", "Unavailable")
        self.on_reload()

    async def upgrade(self) -> None:
        """``Upgrade``: what SIGUSR2 does; the hook must act on a later reactor turn so that the
        caller gets its answer first (Go's daemon died before answering)."""
        if self.on_upgrade is None:
            raise AdminError(f"upgrade is not available in the {self.where}", "Unavailable")
        self.on_upgrade()


@contextmanager
def _stats_errors() -> Iterator[None]:
    """:func:`_redis_errors`, and a command Redis refused (``MEMORY``, ``UNLINK`` disabled...)."""
    try:
        with _redis_errors():
            yield
    except ResponseError as e:
        raise AdminError(f"Redis refused: {e}") from None


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Redis being away, in words an operator can act on."""
    try:
        yield
    except NotReady:
        raise AdminError("Redis is not ready yet (the daemon is connecting to it or loading it); "
                         "try again in a moment", "Unavailable") from None
    except RedisUnavailable as e:
        raise AdminError(f"Redis is unreachable: {e}", "Unavailable") from None


def _strings(raw: object) -> list[str]:
    """A multi-bulk reply (LRANGE, SMEMBERS; None for nothing) as a list of str."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple | set):
        raise AdminError(f"unexpected database reply: {raw!r}")
    return [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else str(x) for x in raw]


def upgrade_by_signal(reactor: IReactorTime) -> Callable[[], None]:
    """The daemon's ``upgrade`` hook until the lifecycle code offers one: SIGUSR2 to ourselves, a
    moment later so the caller gets its answer first.  Refused when nothing handles SIGUSR2 (its
    default action would kill the daemon)."""
    def upgrade() -> None:
        handler = signal.getsignal(signal.SIGUSR2)
        if handler in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise AdminError("seamless upgrade is not available: no SIGUSR2 handler is installed",
                             "Unavailable")
        reactor.callLater(0.1, os.kill, os.getpid(), signal.SIGUSR2)

    return upgrade


def admin_for_app(app: Mirrorbits) -> AdminCommands:
    """The daemon's AdminCommands, wired to the app's Redis, config, local and mirror scans and the
    lifecycle's reload/upgrade (``app.lifecycle``; without one — tests, no HTTP daemon — reload is
    the config holder's and upgrade is refused unless SIGUSR2 is handled)."""

    async def refresh(rehash: bool) -> None:
        await app.get_source_scanner().refresh(rehash)

    def reload() -> None:
        lifecycle = app.lifecycle
        if lifecycle is None:
            app.config_holder.reload()
            return
        d = lifecycle.reload()
        d.addErrback(lambda f: log.failure("reload failed", f))

    def upgrade() -> None:
        lifecycle = app.lifecycle
        if lifecycle is None:
            upgrade_by_signal(app.reactor)()
            return

        def start() -> None:
            # A failure is logged by the lifecycle ("Relaunch failed: ..."); the daemon keeps serving.
            lifecycle.upgrade().addErrback(lambda f: None)

        # Answer the caller first, then hand over (Go's daemon died mid-answer: "transport is closing").
        app.reactor.callLater(0.1, start)

    return AdminCommands(
        app.get_redis(),
        lambda: app.config,
        refresher=refresh,
        mirror_scanner=app.get_mirror_scanner(),
        on_reload=reload,
        on_upgrade=upgrade,
    )
