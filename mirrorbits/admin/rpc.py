"""The admin channel between the ``mirrorbits`` CLI and the daemon: Twisted AMP over TCP.

One AMP command, :class:`AdminCall`, carries the name of an operation of
:class:`~mirrorbits.admin.interface.AdminAPI`, its keyword arguments as JSON and the password; the answer is JSON too (a value, or
an error: a plain message and a code).  Values larger than AMP's 64 KiB
limit are split over several box keys (:class:`BigUnicode`), so ``list`` works with any number of
mirrors.

Security: the password is compared, in constant time, with the *current*
``RPCPassword`` on every call, so ``reload`` changes it live; a call without a password is refused
with ``Unauthenticated``/``access denied`` (the Go daemon crashed on it).  Nothing a client sends can
stop the daemon: unknown methods, bad JSON and unexpected exceptions become error answers.  An
address that gives a wrong password 5 times in a minute is refused for a growing delay
(:class:`~mirrorbits.admin.backoff.FailureBackoff`), and the channel does not start on a non-loopback
address without a password (Go allowed it: anyone who reaches the port could remove every mirror).

The listener is bound to ``RPCListenAddress`` (default ``localhost:3390``) at start and, as in Go, not
re-bound on reload.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from mirrorbits.admin import interface as api
from mirrorbits.admin.backoff import FailureBackoff
from mirrorbits.admin.formatting import VersionInfo
from mirrorbits.admin.interface import OPERATIONS, AdminAPI, AdminError
from mirrorbits.config import Config
from mirrorbits.endpoints import ConfiguredListener
from mirrorbits.model import Mirror
from mirrorbits.reactor import IDaemonReactor, default_reactor

__all__ = [
    "AdminCall",
    "AdminProtocol",
    "BigUnicode",
    "RemoteAdmin",
    "RpcService",
    "connect",
    "decode_value",
    "encode_value",
]

log = Logger(namespace="mirrorbits.admin.rpc")

#: Methods of the daemon's AdminAPI a client may call: every declared operation, nothing else.
METHODS = frozenset(OPERATIONS)

#: A value as JSON carries it.
JSON = str | int | float | bool | None | list["JSON"] | dict[str, "JSON"]

_CHUNK = 60000


class BigUnicode(amp.Argument):
    """A text value of any size: split over ``name``, ``name.1``, ``name.2``... box keys."""

    def toBox(self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, object],  # noqa: N802
              proto: amp.AMP) -> None:
        data = str(objects[name.decode()]).encode("utf-8", "surrogateescape")
        strings[name] = data[:_CHUNK]
        for i, start in enumerate(range(_CHUNK, len(data), _CHUNK), 1):
            strings[name + b".%d" % i] = data[start:start + _CHUNK]

    def fromBox(self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, object],  # noqa: N802
                proto: amp.AMP) -> None:
        if name not in strings:
            objects[name.decode()] = None
            return
        parts = [strings[name]]
        i = 1
        while name + b".%d" % i in strings:
            parts.append(strings[name + b".%d" % i])
            i += 1
        objects[name.decode()] = b"".join(parts).decode("utf-8", "surrogateescape")


class AdminCall(amp.Command):
    """Call ``method(**json.loads(args))`` on the daemon's AdminCommands."""

    arguments = [
        (b"method", amp.Unicode()),
        (b"password", amp.Unicode(optional=True)),
        (b"args", BigUnicode(optional=True)),
    ]
    response = [(b"result", BigUnicode())]


# ---------------------------------------------------------------------------------------------------
# JSON encoding of the values the commands take and return

#: The dataclasses the operations take or return, derived from their signatures.
_TYPES: dict[str, type] = {t.__name__: t for t in api.wire_types()}


def encode_value(value: object) -> JSON:
    """A JSON-able form of arguments/results (dataclasses and datetimes tagged with their type)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, JSON] = {"__type__": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = encode_value(getattr(value, f.name))
        return out
    if isinstance(value, datetime):
        return {"__datetime__": value.astimezone(UTC).isoformat()}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    if isinstance(value, float):
        return float(value)
    if value is None or isinstance(value, str | int):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} over the admin channel")


def decode_value(value: JSON) -> object:
    """Inverse of :func:`encode_value`; unknown type tags raise ValueError."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if "__datetime__" in value:
            return datetime.fromisoformat(str(value["__datetime__"]))
        if "__type__" in value:
            cls = _TYPES.get(str(value["__type__"]))
            if cls is None:
                raise ValueError(f"unknown type {value['__type__']!r}")
            names = {f.name for f in dataclasses.fields(cls)}
            kwargs = {k: decode_value(v) for k, v in value.items() if k in names}
            if isinstance(kwargs.get("warnings"), list):
                kwargs["warnings"] = tuple(kwargs["warnings"])  # type: ignore[arg-type]
            return cls(**kwargs)
        return {k: decode_value(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------------
# Server side


class AdminProtocol(amp.AMP):
    """One admin connection in the daemon.  Calls still running when it drops are cancelled (a scan
    whose CLI went away stops, as the Go daemon aborted on the caller's deadline)."""

    def __init__(self, admin: AdminAPI, config: Callable[[], Config],
                 backoff: FailureBackoff | None = None, *, public: bool = False) -> None:
        super().__init__()
        self.admin = admin
        self.config = config
        self.backoff = backoff
        #: Listening on a non-loopback address: an empty password (emptied by a reload) opens nothing.
        self.public = public
        self._running: set[defer.Deferred[dict[str, str]]] = set()

    @AdminCall.responder
    def call(self, method: str, password: str | None = None,
             args: str | None = None) -> defer.Deferred[dict[str, str]]:
        d = defer.Deferred.fromCoroutine(self._call(method, password, args))
        self._running.add(d)

        def done(result: dict[str, str] | Failure) -> dict[str, str] | Failure:
            self._running.discard(d)
            return result

        d.addBoth(done)
        return d

    async def _call(self, method: str, password: str | None, args: str | None) -> dict[str, str]:
        payload: dict[str, JSON]
        try:
            value = await self._dispatch(method, password, args)
            payload = {"ok": encode_value(value)}
        except AdminError as e:
            payload = {"error": {"code": e.code, "message": e.message}}
        except defer.CancelledError:
            payload = {"error": {"code": "Canceled", "message": "cancelled: the caller went away"}}
        except Exception as e:
            log.failure("admin call {method} failed", method=method)
            payload = {"error": {"code": "Internal", "message": f"internal error: {e}"}}
        return {"result": json.dumps(payload)}

    async def _dispatch(self, method: str, password: str | None, args: str | None) -> object:
        expected = self.config().RPCPassword
        peer = self._peer()
        if self.backoff is not None and (wait := self.backoff.refused_for(peer)):
            raise AdminError(f"too many wrong passwords: try again in {math.ceil(wait)} s", "ResourceExhausted")
        if not expected and self.public:
            raise AdminError("RPCPassword is empty on a non-loopback admin channel", "Unauthenticated")
        # A missing password is refused, never a crash (Go panicked on it).
        if password is None or not hmac.compare_digest(password.encode("utf-8", "surrogateescape"),
                                                       expected.encode("utf-8", "surrogateescape")):
            if self.backoff is not None:
                self.backoff.failure(peer)
            raise AdminError("access denied", "Unauthenticated")
        if self.backoff is not None:
            self.backoff.success(peer)
        op = OPERATIONS.get(method)
        if op is None:
            raise AdminError(f"unknown method {method!r}", "Unimplemented")
        try:
            kwargs = decode_value(json.loads(args)) if args else {}
            if not isinstance(kwargs, dict):
                raise ValueError("arguments must be an object")
            op.signature.bind(self.admin, **kwargs)
        except (ValueError, TypeError) as e:
            raise AdminError(f"bad arguments: {e}", "InvalidArgument") from None
        bound = getattr(self.admin, method)  # an operation of AdminAPI, its arguments bound above
        result: object = await bound(**kwargs)
        return result

    def _peer(self) -> str:
        """The address failures are counted against: the peer's host (one key for a Unix socket)."""
        peer = self.transport.getPeer() if self.transport is not None else None
        if isinstance(peer, IPv4Address | IPv6Address):
            return peer.host
        return "local"

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]  # noqa: N802
        super().connectionLost(reason)
        for d in list(self._running):
            d.cancel()


class _AdminFactory(protocol.Factory):
    noisy = False

    def __init__(self, admin: AdminAPI, config: Callable[[], Config], backoff: FailureBackoff,
                 public: bool) -> None:
        self.admin = admin
        self.config = config
        self.backoff = backoff
        self.public = public

    def buildProtocol(self, addr: IAddress | None) -> AdminProtocol:  # noqa: N802
        p = AdminProtocol(self.admin, self.config, self.backoff, public=self.public)
        p.factory = self
        return p


class RpcService(ConfiguredListener):
    """Listens on ``RPCListenAddress`` with the admin AMP protocol; ``failed(message)`` when it
    cannot at start-up (the daemon's fatal path)."""

    name = "rpc"

    def __init__(self, admin: AdminAPI, config: Callable[[], Config],
                 reactor: IDaemonReactor | None = None, *,
                 failed: Callable[[str], None] | None = None) -> None:
        self.admin = admin
        self.config = config
        reactor = reactor if reactor is not None else default_reactor()
        self.backoff = FailureBackoff(reactor)
        address = config().RPCListenAddress
        super().__init__("RPCListenAddress", address,
                         _AdminFactory(admin, config, self.backoff, not is_loopback(address)), reactor, failed)

    def refusal(self) -> str | None:
        if self.config().RPCPassword or is_loopback(self.address):
            return None
        return (f"RPCListenAddress {self.address} is not a loopback address and RPCPassword is empty: "
                "set RPCPassword (or listen on localhost or a unix: socket)")


def is_loopback(address: str) -> bool:
    """Whether a listen address (Go syntax or endpoint description) only accepts local clients:
    ``unix:``, ``localhost``, 127.0.0.0/8 and ``::1``.  An empty host (``:3390``), another host name
    (not resolved at start) and a ``systemd:`` socket (whose address the daemon does not choose)
    count as reachable from elsewhere."""
    if address.startswith("unix:"):
        return True
    if address.startswith(("tcp:", "tcp6:", "ssl:")):
        params = [p for p in address.replace("\\:", "\0").split(":") if p.startswith("interface=")]
        host = params[0][len("interface="):].replace("\0", ":") if params else ""
    elif address.startswith("systemd:"):
        return False
    else:
        host = address.rpartition(":")[0]
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------
# Client side


class RemoteAdmin(AdminAPI):
    """The daemon's :class:`~mirrorbits.admin.interface.AdminAPI` seen through the channel: same
    methods, same results, with each operation's declared deadline (the Go client's: 10 s by default,
    60 s for remove, none for refresh and scan unless asked)."""

    def __init__(self, proto: amp.AMP, password: str, reactor: IReactorTime) -> None:
        self.proto = proto
        self.password = password
        self.reactor = reactor
        self.where = "daemon"

    async def _call(self, method: str, *, deadline: float | None = None, **kwargs: object) -> object:
        deadline = deadline or OPERATIONS[method].deadline
        d = self.proto.callRemote(AdminCall, method=method, password=self.password,
                                  args=json.dumps(encode_value(kwargs)))
        if deadline:
            d.addTimeout(deadline, self.reactor)
        try:
            reply = await d
        except defer.TimeoutError:
            raise AdminError(f"the daemon did not answer within {deadline:g} s", "DeadlineExceeded") from None
        except amp.UnknownRemoteError as e:
            raise AdminError(f"the daemon failed to answer: {e}", "Unknown") from None
        except Exception as e:  # connection lost...
            raise AdminError("the connection to the daemon was lost" if "onnection" in str(e)
                             else f"the daemon could not be asked: {e}", "Unavailable") from None
        payload = json.loads(reply["result"])
        if "error" in payload:
            raise AdminError(payload["error"]["message"], payload["error"]["code"])
        return decode_value(payload["ok"])

    async def ping(self) -> None:
        await self._call("ping")

    async def version(self) -> VersionInfo:
        return cast(VersionInfo, await self._call("version"))

    async def match_mirror(self, pattern: str) -> list[api.MirrorRef]:
        return cast("list[api.MirrorRef]", await self._call("match_mirror", pattern=pattern))

    async def resolve(self, pattern: str) -> list[api.MirrorRef]:
        return cast("list[api.MirrorRef]", await self._call("resolve", pattern=pattern))

    async def list_mirrors(self) -> list[Mirror]:
        return cast("list[Mirror]", await self._call("list_mirrors"))

    async def mirror_info(self, mirror_id: int) -> Mirror:
        return cast(Mirror, await self._call("mirror_info", mirror_id=mirror_id))

    async def family_states(self, mirror_ids: list[int]) -> list[api.FamilyState]:
        return cast("list[api.FamilyState]", await self._call("family_states", mirror_ids=mirror_ids))

    async def mirror_logs(self, mirror_id: int, max_results: int = 500) -> list[str]:
        return cast("list[str]", await self._call("mirror_logs", mirror_id=mirror_id, max_results=max_results))

    async def stats_file(self, pattern: str, start: datetime, end: datetime) -> dict[str, int]:
        return cast("dict[str, int]", await self._call("stats_file", pattern=pattern, start=start, end=end))

    async def stats_mirror(self, mirror_id: int, start: datetime, end: datetime) -> api.StatsMirrorReply:
        return cast(api.StatsMirrorReply, await self._call("stats_mirror", mirror_id=mirror_id, start=start,
                                                       end=end))

    async def stats_prune(self, dry_run: bool = False) -> api.PruneReport:
        return cast(api.PruneReport, await self._call("stats_prune", dry_run=dry_run))

    async def stats_usage(self) -> list[api.FamilyUsage]:
        return cast("list[api.FamilyUsage]", await self._call("stats_usage"))

    async def stats_export(self, start: datetime | None = None, end: datetime | None = None) -> api.StatsExport:
        return cast(api.StatsExport, await self._call("stats_export", start=start, end=end))

    async def add_mirror(self, mirror: Mirror) -> api.AddResult:
        return cast(api.AddResult, await self._call("add_mirror", mirror=mirror))

    async def update_mirror(self, mirror: Mirror) -> str:
        return cast(str, await self._call("update_mirror", mirror=mirror))

    async def geo_update_mirror(self, mirror_id: int) -> api.GeoUpdateResult:
        return cast(api.GeoUpdateResult, await self._call("geo_update_mirror", mirror_id=mirror_id))

    async def change_status(self, mirror_id: int, enabled: bool) -> None:
        await self._call("change_status", mirror_id=mirror_id, enabled=enabled)

    async def remove_mirror(self, mirror_id: int) -> None:
        await self._call("remove_mirror", mirror_id=mirror_id)

    async def refresh(self, rehash: bool = False) -> None:
        await self._call("refresh", rehash=rehash)

    async def scan_mirror(self, mirror_id: int, auto_enable: bool = False, protocol: int = api.PROTOCOL_ALL,
                          timeout: float | None = None) -> api.ScanReply:
        # The daemon enforces the deadline (and aborts the scan); ours is a safety net behind it.
        return cast(api.ScanReply, await self._call("scan_mirror", deadline=timeout + 5 if timeout else None,
                                                mirror_id=mirror_id, auto_enable=auto_enable,
                                                protocol=protocol, timeout=timeout))

    async def reload(self) -> None:
        await self._call("reload")

    async def upgrade(self) -> None:
        await self._call("upgrade")

    def close(self) -> None:
        if self.proto.transport is not None:
            self.proto.transport.loseConnection()


async def connect(host: str, port: int, password: str, reactor: IDaemonReactor | None = None,
                  timeout: float = 10.0) -> RemoteAdmin:
    """Dial the daemon (plain TCP).  Raises ConnectError subclasses."""
    if reactor is None:
        reactor = default_reactor()
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    proto = await endpoint.connect(protocol.Factory.forProtocol(amp.AMP))
    return RemoteAdmin(cast(amp.AMP, proto), password, reactor)
