"""Who is asking and over which scheme they must be answered (http.md §5, §2 ``fromip``).

Pure functions take header values, peer hosts and query values; the ``request_*`` wrappers take a
twisted.web request (``twisted.web.http.Request``, what ``Site`` hands to resources) and only pick
those values out of it.

Deliberate deviation from Go for the peer address (spec §5.1 / §17.7). Go strips everything from the
last ``:`` of ``RemoteAddr``, so a direct IPv6 client ``[2001:db8::1]:443`` becomes ``[2001:db8::1]``
*with* its brackets, which fails IP parsing: such clients are never geolocated and get random mirrors,
and a Unix-socket peer (no ``:``) makes Go panic. Twisted hands us the peer host without brackets or
port, so we use it as is: IPv6 peers are geolocated like any other client. An IPv4-mapped peer
(``::ffff:192.0.2.1``, what a dual-stack ``::`` listener reports for IPv4 clients) is written in its
IPv4 form, as Go's listener reports it; an IPv6 zone (``%eth0``) is dropped; a Unix-socket peer gives
``""`` (no location, random selection) instead of a crash. ``X-Forwarded-For`` is kept exactly as Go
reads it (first header line, left-most element, trimmed, trusted blindly — spec §17.8).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from urllib.parse import parse_qs

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.http import Request

__all__ = [
    "SecureOption",
    "client_ip",
    "fromip_override",
    "ip_from_forwarded_for",
    "ip_from_peer",
    "ip_from_remote_addr",
    "is_ip",
    "is_ipv6",
    "query_values",
    "request_fromip",
    "request_peer_host",
    "request_client_ip",
    "request_secure_option",
    "secure_option",
]


class SecureOption(enum.IntEnum):
    """Which scheme the client must be sent to (Go ``SecureOption``)."""

    UNDEFINED = 0  # any; HTTPS preferred
    WITH_TLS = 1
    WITHOUT_TLS = 2


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


def ip_from_remote_addr(remote_addr: str) -> str:
    """Go ``RemoteIPFromAddr``: drop everything from the last ``:`` (``[::1]:8080`` → ``[::1]``).

    Kept for reference and for callers that really hold a Go-style ``host:port`` string; the
    redirector uses :func:`ip_from_peer`. Without any ``:`` Go would panic; we return ``""``.
    """
    idx = remote_addr.rfind(":")
    return remote_addr[:idx] if idx >= 0 else ""


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
    """Client IP per §5.1: the ``X-Forwarded-For`` element if non-empty, else the peer's IP."""
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


def is_ipv6(value: str) -> bool:
    """Go ``IsIPv6``: the mere presence of a ``:`` (``::1`` yes, ``192.168.0.1`` no)."""
    return ":" in value


def fromip_override(ip: str, fromip: str | None) -> str:
    """``?fromip=`` (MIRRORLIST only): use it, verbatim, when it is a valid IP literal; else ``ip``."""
    if fromip and is_ip(fromip):
        return fromip
    return ip


def secure_option(
    forwarded_proto: bytes | str | None,
    https_values: Sequence[bytes | str] | None,
    allow_http_to_https_redirects: bool,
) -> SecureOption:
    """§5.2: ``X-Forwarded-Proto`` (first line, case-insensitive), overridden by ``?https=1|0``.

    ``https_values`` are all the values of the ``https`` query parameter (``None`` when absent); only
    the first one counts and only ``1`` / ``0`` mean something.
    """
    option = SecureOption.UNDEFINED
    if forwarded_proto:
        proto = _text(forwarded_proto).lower()
        if proto == "https":
            option = SecureOption.WITH_TLS
        elif proto == "http" and not allow_http_to_https_redirects:
            option = SecureOption.WITHOUT_TLS
    if https_values:
        first = _text(https_values[0])
        if first == "1":
            option = SecureOption.WITH_TLS
        elif first == "0":
            option = SecureOption.WITHOUT_TLS
    return option


def _first_header(request: Request, name: bytes) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[0] if values else None


def request_peer_host(request: Request) -> str:
    """Peer host of a request; ``""`` for a non-IP transport (Unix socket)."""
    addr = request.getClientAddress()
    if isinstance(addr, (IPv4Address, IPv6Address)):
        return addr.host
    return ""


def request_client_ip(request: Request) -> str:
    """§5.1 for a twisted.web request: first ``X-Forwarded-For`` line (Twisted's ``getHeader``
    would give the last one), else the peer address."""
    return client_ip(_first_header(request, b"x-forwarded-for"), request_peer_host(request))


def query_values(request: Request, key: str) -> list[str] | None:
    """All values of one query parameter, from the URL only (``request.args`` also merges a POST
    form body, Go's ``URL.Query()`` does not); ``None`` when the key is absent."""
    uri: bytes = request.uri
    _, sep, query = uri.partition(b"?")
    if not sep:
        return None
    parsed = parse_qs(query.decode("utf-8", "surrogateescape"), keep_blank_values=True)
    return parsed.get(key)


def request_secure_option(request: Request, allow_http_to_https_redirects: bool) -> SecureOption:
    """§5.2 for a twisted.web request."""
    return secure_option(
        _first_header(request, b"x-forwarded-proto"),
        query_values(request, "https"),
        allow_http_to_https_redirects,
    )


def request_fromip(request: Request, ip: str) -> str:
    """:func:`fromip_override` with the first ``fromip`` query value of a request."""
    values = query_values(request, "fromip")
    return fromip_override(ip, values[0] if values else None)
