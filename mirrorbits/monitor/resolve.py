"""Name resolution of the per-family health checks (``SelectByIPFamily``): a mirror host's IPv4 and
IPv6 addresses.

Why an interface of our own: the checks must know *which* families a host has (a host without AAAA
is "no IPv6", not down) and connect to each one explicitly, and tests must be able to give a test
name both records, a dead AAAA or only an A without a DNS server.  The daemon's resolver is the
reactor's (``IReactorPluggableNameResolver``: ``getaddrinfo`` in the reactor's thread pool, never on
the reactor thread); tests pass a :class:`StaticResolver` through the hub.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostResolution, IReactorPluggableNameResolver, IResolutionReceiver
from twisted.logger import Logger
from zope.interface import implementer

log = Logger(namespace="mirrorbits.monitor")


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """A host's addresses by family, in the resolver's order (empty: no address of that family)."""

    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()


def literal_addresses(host: str) -> HostAddresses | None:
    """An IP-literal host is its own answer (``[::1]`` or ``::1``, ``127.0.0.1``); None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        return HostAddresses(ipv4=(str(mapped),)) if mapped is not None else HostAddresses(ipv6=(str(addr),))
    return HostAddresses(ipv4=(str(addr),))


class HostResolver(Protocol):
    """Resolves a mirror's host name to its IPv4 and IPv6 addresses; never raises for a name that
    does not resolve (the answer is then empty)."""

    def resolve(self, host: str) -> defer.Deferred[HostAddresses]: ...


@implementer(IResolutionReceiver)
class _Collect:
    def __init__(self) -> None:
        self.done: defer.Deferred[HostAddresses] = defer.Deferred()
        self.v4: list[str] = []
        self.v6: list[str] = []

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:  # noqa: N802, N803
        pass

    def addressResolved(self, address: object) -> None:  # noqa: N802
        if isinstance(address, IPv6Address):
            if address.host not in self.v6:
                self.v6.append(address.host)
        elif isinstance(address, IPv4Address) and address.host not in self.v4:
            self.v4.append(address.host)

    def resolutionComplete(self) -> None:  # noqa: N802
        self.done.callback(HostAddresses(tuple(self.v4), tuple(self.v6)))


class ReactorResolver:
    """The reactor's name resolver, asked for both families at once."""

    def __init__(self, reactor: IReactorPluggableNameResolver) -> None:
        self.reactor = reactor

    def resolve(self, host: str) -> defer.Deferred[HostAddresses]:
        literal = literal_addresses(host)
        if literal is not None:
            return defer.succeed(literal)
        receiver = _Collect()
        try:
            self.reactor.nameResolver.resolveHostName(receiver, host, 0, [IPv4Address, IPv6Address])
        except Exception as e:
            log.debug("Cannot resolve {host}: {err}", host=host, err=e)
            return defer.succeed(HostAddresses())
        return receiver.done


class StaticResolver:
    """Fixed answers by host name (tests, and hosts pinned by hand); IP literals answer themselves
    and any other name has no address."""

    def __init__(self, hosts: Mapping[str, Sequence[str]]) -> None:
        self.hosts: dict[str, HostAddresses] = {}
        for name, addresses in hosts.items():
            v4: list[str] = []
            v6: list[str] = []
            for a in addresses:
                (v6 if ipaddress.ip_address(a).version == 6 else v4).append(a)
            self.hosts[name.lower()] = HostAddresses(tuple(v4), tuple(v6))

    def resolve(self, host: str) -> defer.Deferred[HostAddresses]:
        literal = literal_addresses(host)
        if literal is not None:
            return defer.succeed(literal)
        return defer.succeed(self.hosts.get(host.lower(), HostAddresses()))
