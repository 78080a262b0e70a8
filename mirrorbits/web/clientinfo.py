"""Who is asking and over which scheme they must be answered: the client IP (``X-Forwarded-For``,
else the peer), the ``?fromip=`` override of the mirror list, and the secure option
(``X-Forwarded-Proto`` and ``?https=``).

Pure functions take header values, peer hosts and query values; the ``request_*`` functions take a
twisted.web request (``twisted.web.http.Request``, what ``Site`` hands to resources) and only pick
those values out of it.

Deliberate deviation from Go for the peer address. Go strips everything from the
last ``:`` of ``RemoteAddr``, so a direct IPv6 client ``[2001:db8::1]:443`` becomes ``[2001:db8::1]``
*with* its brackets, which fails IP parsing: such clients are never geolocated and get random mirrors,
and a Unix-socket peer (no ``:``) makes Go panic. Twisted hands us the peer host without brackets or
port, so we use it as is: IPv6 peers are geolocated like any other client. An IPv4-mapped peer
(``::ffff:192.0.2.1``, what a dual-stack ``::`` listener reports for IPv4 clients) is written in its
IPv4 form, as Go's listener reports it; an IPv6 zone (``%eth0``) is dropped; a Unix-socket peer gives
``""`` (no location, random selection) instead of a crash. ``X-Forwarded-For`` is kept exactly as Go
reads it (first header line, left-most element, trimmed, trusted blindly).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.web.http import Request

from mirrorbits.selection import Secure

__all__ = [
    "client_ip",
    "fromip_override",
    "ip_from_forwarded_for",
    "ip_from_peer",
    "is_ip",
    "peer_host",
    "request_client_ip",
    "request_peer_host",
    "secure_option",
]


def _text(value: bytes | str) -> str:
    # Header bytes that are not UTF-8 become U+FFFD, as Go's JSON encoder would show them anyway.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def ip_from_forwarded_for(header_line: bytes | str | None) -> str:
    """Left-most element of one ``X-Forwarded-For`` line, whitespace-trimmed (Go ``ExtractRemoteIP``).

    ``"192.168.0.1, 192.168.0.2"`` → ``"192.168.0.1"``. The value is not validated: ``unknown`` or
    ``1.2.3.4:80`` are returned as is (they simply do not geolocate, as in Go).
    """
    if not header_line:
        return ""
    return _text(header_line).split(",", 1)[0].strip()


def ip_from_peer(host: str | None) -> str:
    """IP text for a peer host as Twisted gives it (no brackets, no port); see the module note."""
    if not host:
        return ""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if "%" in host:
        host = host.split("%", 1)[0]
    if host.startswith("::ffff:") and "." in host:
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            mapped = None
        if mapped is not None:
            return str(mapped)
    return host


def client_ip(forwarded_for: bytes | str | None, peer_host: str | None) -> str:
    """The client IP: the ``X-Forwarded-For`` element if non-empty, else the peer's IP."""
    ip = ip_from_forwarded_for(forwarded_for)
    return ip if ip else ip_from_peer(peer_host)


def is_ip(value: str) -> bool:
    """True iff ``value`` is an IPv4 or IPv6 literal as Go's ``net.ParseIP`` accepts it.

    No brackets, no port, no zone, no leading zeros in IPv4 octets.
    """
    if not value or "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def fromip_override(ip: str, fromip: str | None) -> str:
    """``?fromip=`` (MIRRORLIST only): use it, verbatim, when it is a valid IP literal; else ``ip``."""
    if fromip and is_ip(fromip):
        return fromip
    return ip


def secure_option(
    forwarded_proto: bytes | str | None,
    https_values: Sequence[bytes | str] | None,
    allow_http_to_https_redirects: bool,
) -> Secure:
    """The secure option: ``X-Forwarded-Proto`` (first line, case-insensitive), overridden by
    ``?https=1|0``.

    ``https_values`` are all the values of the ``https`` query parameter (``None`` when absent); only
    the first one counts and only ``1`` / ``0`` mean something.
    """
    option = Secure.UNDEFINED
    if forwarded_proto:
        proto = _text(forwarded_proto).lower()
        if proto == "https":
            option = Secure.WITH_TLS
        elif proto == "http" and not allow_http_to_https_redirects:
            option = Secure.WITHOUT_TLS
    if https_values:
        first = _text(https_values[0])
        if first == "1":
            option = Secure.WITH_TLS
        elif first == "0":
            option = Secure.WITHOUT_TLS
    return option


def _first_header(request: Request, name: bytes) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[0] if values else None


def peer_host(addr: IAddress) -> str:
    """Host of a peer address; ``""`` for a non-IP transport (Unix socket)."""
    if isinstance(addr, (IPv4Address, IPv6Address)):
        return addr.host
    return ""


def request_peer_host(request: Request) -> str:
    """Peer host of a request; ``""`` for a non-IP transport (Unix socket)."""
    return peer_host(request.getClientAddress())


def request_client_ip(request: Request) -> str:
    """:func:`client_ip` of a twisted.web request: first ``X-Forwarded-For`` line (Twisted's ``getHeader``
    would give the last one), else the peer address."""
    return client_ip(_first_header(request, b"x-forwarded-for"), request_peer_host(request))
