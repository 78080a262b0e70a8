"""Go-style listen addresses (``:8080``, ``host:port``, ``[v6]:port``, ``unix:/path``) as Twisted
endpoint descriptions, so the config keeps the Go syntax and the code uses ``serverFromString``."""

from __future__ import annotations

import socket


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::", 0))
        return True
    except OSError:
        return False


def listen_description(address: str) -> str:
    """A Twisted server endpoint description for a Go listen address.

    ``:8080`` listens on every address like Go does (IPv6 socket accepting IPv4 too, where the host
    has IPv6).  A value that already is an endpoint description (``tcp:``, ``tcp6:``, ``unix:``,
    ``systemd:``, ``ssl:``) is passed through, which is how a systemd socket or TLS is configured.
    """
    if not address:
        raise ValueError("empty listen address")
    for prefix in ("tcp:", "tcp6:", "ssl:", "systemd:", "unix:"):
        if address.startswith(prefix):
            if prefix == "unix:":
                return "unix:" + _escape(address[5:])
            return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {address!r} (expected host:port, :port or unix:/path)")
    if host.startswith("[") and host.endswith("]"):
        return f"tcp6:{port}:interface={_escape(host[1:-1])}"
    if not host:
        return f"tcp6:{port}:interface=\\:\\:" if ipv6_available() else f"tcp:{port}"
    if ":" in host:
        return f"tcp6:{port}:interface={_escape(host)}"
    return f"tcp:{port}:interface={host}"
