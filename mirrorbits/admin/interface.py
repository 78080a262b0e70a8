"""The admin surface, declared once: every operation an operator can ask of the daemon.

:class:`AdminAPI` lists each operation with its signature and says, through :func:`operation`, which
CLI commands use it and how long a remote caller waits for it by default.  Everything else is derived
from it or checked against it:

* :class:`~mirrorbits.admin.commands.AdminCommands` implements it on Redis (in the daemon, and in the
  CLI when the daemon is down);
* :class:`~mirrorbits.admin.rpc.RemoteAdmin` implements it over the AMP admin channel; the methods the
  channel accepts (``rpc.METHODS``), the default deadlines and the value types it may carry come from
  :data:`OPERATIONS`;
* the CLI commands call it (``mirrorbits.admin.cli``), and the SSH manhole offers every CLI command.

``tests/admin/test_interface.py`` fails when an operation exists in one of these places and not in the
others, when a signature differs, or when a CLI command calls operations it does not declare here.

The values the operations exchange (and :class:`AdminError`) live here too, so that the two
implementations and the channel share one definition without importing each other.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ParamSpec, Protocol, TypeVar

from mirrorbits.admin.formatting import VersionInfo
from mirrorbits.history.export import MirrorCounters, StatsExport
from mirrorbits.history.retention import FamilyUsage, KeySize, PruneReport
from mirrorbits.model import Mirror

__all__ = [
    "AddResult",
    "AdminAPI",
    "AdminError",
    "DEFAULT_DEADLINE",
    "FamilyState",
    "FamilyUsage",
    "KeySize",
    "MirrorCounters",
    "GeoUpdateResult",
    "MirrorRef",
    "OPERATIONS",
    "Operation",
    "PROTOCOL_ALL",
    "PROTOCOL_FTP",
    "PROTOCOL_RSYNC",
    "PruneReport",
    "ScanReply",
    "StatsExport",
    "StatsMirrorReply",
    "operation",
    "wire_types",
]

#: ``ScanMirrorRequest.Protocol`` (the Go proto enum values).
PROTOCOL_ALL = 0
PROTOCOL_FTP = 1
PROTOCOL_RSYNC = 2

#: How long a remote caller waits for an answer unless the operation says otherwise (Go: 10 s).
DEFAULT_DEADLINE = 10.0


class AdminError(Exception):
    """An operation failed: ``message`` says what went wrong in plain words, and is what the CLI
    prints (the Go CLI printed ``rpc error: code = Unknown desc = <message>``; no script parses that
    wrapper, and it only told users that a gRPC call they never made had failed).  ``code`` classifies
    the failure for programs (``Unknown``, ``FailedPrecondition``, ``Unauthenticated``, ...)."""

    def __init__(self, message: str, code: str = "Unknown") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class MirrorRef:
    """A mirror's id and name (``MatchMirror`` reply entry)."""

    id: int
    name: str


@dataclass(frozen=True)
class AddResult:
    """``AddMirrorReply``: where GeoIP put the mirror, and the warnings to print."""

    id: int = 0
    latitude: float = 0.0
    longitude: float = 0.0
    country: str = ""
    continent: str = ""
    asn: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FamilyState:
    """One protocol of a mirror over one address family, as the last ``SelectByIPFamily`` check saw
    it: ``protocol`` ``HTTP``/``HTTPS``, ``family`` ``IPv4``/``IPv6``, ``state`` ``up``, ``down`` or
    ``none`` (no address of that family), ``checked`` Unix seconds (0: unknown)."""

    mirror_id: int
    protocol: str
    family: str
    state: str
    reason: str = ""
    checked: int = 0


@dataclass(frozen=True)
class GeoUpdateResult:
    """``GeoUpdateMirrorReply``: the would-be record (not saved), its diff and the warnings."""

    mirror: Mirror
    diff: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScanReply:
    """``ScanMirrorReply``."""

    enabled: bool = False
    files_indexed: int = 0
    known_indexed: int = 0
    removed: int = 0
    tz_offset_ms: int = 0


@dataclass(frozen=True)
class StatsMirrorReply:
    """``StatsMirrorReply``: the mirror and its counters over the period."""

    mirror: Mirror
    requests: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Operation:
    """What :class:`AdminAPI` declares about one operation besides its signature."""

    name: str
    #: The CLI commands that call it (empty: used by the channel itself).
    cli: tuple[str, ...]
    #: Seconds a remote caller waits by default; None: as long as it takes.
    deadline: float | None
    signature: inspect.Signature


_P = ParamSpec("_P")
_R = TypeVar("_R")
_DECLARED: dict[str, tuple[tuple[str, ...], float | None]] = {}


def operation(*cli: str, deadline: float | None = DEFAULT_DEADLINE
              ) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R]]]:
    """Declare an :class:`AdminAPI` method as an operation used by the CLI commands ``cli``."""

    def declare(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        _DECLARED[method.__name__] = (cli, deadline)
        return method

    return declare


class AdminAPI(Protocol):
    """Every admin operation.  Names and semantics are the Go daemon's RPC methods (``List``,
    ``AddMirror``, ``ScanMirror``...); failures raise :class:`AdminError`."""

    @operation()
    async def ping(self) -> None:
        """Nothing; a caller uses it to check its password before the real command."""

    @operation("version")
    async def version(self) -> VersionInfo:
        """The daemon's build information."""

    @operation("scan")
    async def match_mirror(self, pattern: str) -> list[MirrorRef]:
        """Every mirror whose name contains ``pattern`` (case-insensitive); empty pattern = all."""

    @operation("disable", "edit", "enable", "geoupdate", "logs", "remove", "scan", "show", "stats")
    async def resolve(self, pattern: str) -> list[MirrorRef]:
        """``match_mirror``, except that a name equal to ``pattern`` wins over substring matches."""

    @operation("export", "list")
    async def list_mirrors(self) -> list[Mirror]:
        """Every mirror record."""

    @operation("edit", "show")
    async def mirror_info(self, mirror_id: int) -> Mirror:
        """One mirror's full record (an empty record for an unknown id, as in Go)."""

    @operation("list", "show")
    async def family_states(self, mirror_ids: list[int]) -> list[FamilyState]:
        """The per-address-family health of these mirrors (``SelectByIPFamily``), for ``list
        -families`` and ``show``; nothing for a mirror never checked per family."""

    @operation("logs")
    async def mirror_logs(self, mirror_id: int, max_results: int = 500) -> list[str]:
        """The last ``max_results`` log entries of a mirror as text, oldest first."""

    @operation("stats")
    async def stats_file(self, pattern: str, start: datetime, end: datetime) -> dict[str, int]:
        """Downloads per path matching the regular expression ``pattern`` over [start, end]."""

    @operation("stats")
    async def stats_mirror(self, mirror_id: int, start: datetime, end: datetime) -> StatsMirrorReply:
        """Redirects and bytes of one mirror over [start, end]."""

    @operation("stats", deadline=None)
    async def stats_prune(self, dry_run: bool = False) -> PruneReport:
        """Delete the statistics keys outside the ``StatsRetention`` window (``dry_run``: only list
        them), with the memory each one takes."""

    @operation("stats", deadline=60.0)
    async def stats_usage(self) -> list[FamilyUsage]:
        """The Redis memory taken by each family and level of statistics keys."""

    @operation("stats", deadline=None)
    async def stats_export(self, start: datetime | None = None, end: datetime | None = None) -> StatsExport:
        """The download counters of every file and mirror over [start, end] (both None: all time)."""

    @operation("add")
    async def add_mirror(self, mirror: Mirror) -> AddResult:
        """Geolocate and save a new mirror, disabled."""

    @operation("edit", "geoupdate")
    async def update_mirror(self, mirror: Mirror) -> str:
        """Save an edited record; returns the diff against the stored one."""

    @operation("geoupdate")
    async def geo_update_mirror(self, mirror_id: int) -> GeoUpdateResult:
        """The record with a fresh geolocation and its diff; nothing is saved."""

    @operation("disable", "enable")
    async def change_status(self, mirror_id: int, enabled: bool) -> None:
        """Enable or disable a mirror."""

    @operation("remove", deadline=60.0)
    async def remove_mirror(self, mirror_id: int) -> None:
        """Delete a mirror and its file index (its download statistics are kept)."""

    @operation("refresh", deadline=None)
    async def refresh(self, rehash: bool = False) -> None:
        """Scan the local repository now (``rehash``: recompute every digest)."""

    @operation("scan", deadline=None)
    async def scan_mirror(self, mirror_id: int, auto_enable: bool = False, protocol: int = PROTOCOL_ALL,
                          timeout: float | None = None) -> ScanReply:
        """Scan a mirror over rsync or FTP; ``timeout`` seconds abort it."""

    @operation("reload")
    async def reload(self) -> None:
        """What SIGHUP does: reload the configuration (and GeoIP, templates, download log)."""

    @operation("upgrade")
    async def upgrade(self) -> None:
        """What SIGUSR2 does: hand over to a new process (answered before it starts)."""


#: Every operation of :class:`AdminAPI`, by method name, in declaration order.
OPERATIONS: Mapping[str, Operation] = {
    name: Operation(name, cli, deadline, inspect.signature(vars(AdminAPI)[name]))
    for name, (cli, deadline) in _DECLARED.items()
}


def wire_types() -> tuple[type, ...]:
    """The dataclasses that operations take or return (what the admin channel must encode)."""
    found: list[type] = []

    def visit(tp: object) -> None:
        for arg in typing.get_args(tp):
            visit(arg)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp not in found:
            found.append(tp)
            for field_type in typing.get_type_hints(tp).values():
                visit(field_type)

    for name in OPERATIONS:
        for hint in typing.get_type_hints(getattr(AdminAPI, name)).values():
            visit(hint)
    return tuple(found)
