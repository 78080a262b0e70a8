"""Real HTTP and HTTPS test servers on loopback (twisted.web), with a test CA made on the spot.

``Behaviour`` maps a request path to what the server does: a status with headers, a redirect,
a wrong Content-Length, a slow answer, or a dropped connection.  Every request is recorded.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import protocol, reactor, ssl
from twisted.internet.error import CannotListenError
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource, server


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: "slow": never answer; "drop": close the connection without answering.
    mode: str = ""


class Recorder(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Answer] = {}
        self.default = Answer(404)
        self.requests: list[dict[str, Any]] = []

    def render(self, request: Any) -> Any:
        path = request.uri.decode("latin-1")
        self.requests.append({
            "method": request.method.decode(),
            "path": path,
            "headers": {k.decode().lower(): [v.decode() for v in vs]
                        for k, vs in request.requestHeaders.getAllRawHeaders()},
            "https": request.isSecure(),
        })
        answer = self.answers.get(path, self.default)
        if answer.mode == "slow":
            return server.NOT_DONE_YET
        if answer.mode == "drop":
            request.channel.transport.abortConnection()
            return server.NOT_DONE_YET
        request.setResponseCode(answer.status)
        for k, v in answer.headers.items():
            request.setHeader(k, v)
        return answer.body


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class CertAuthority:
    """A CA and leaf certificates signed by it, written as PEM files under ``directory``."""

    directory: Path

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(_name("mirrorbits test CA"))
                     .issuer_name(_name("mirrorbits test CA")).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def leaf(self, names: list[str], *, expired: bool = False) -> ssl.PrivateCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired \
            else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=10))
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(self.key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return ssl.PrivateCertificate.loadPEM(pem)


class _Sniffer(protocol.Protocol):
    """Serves TLS when the first byte is a TLS handshake record (0x16), plain HTTP otherwise, so
    one port answers both ``http://`` and ``https://`` (scheme-less mirrors use one host:port)."""

    def __init__(self, owner: WebServer, addr: Any) -> None:
        self.owner = owner
        self.addr = addr
        self.inner: Any = None

    def connectionMade(self) -> None:  # noqa: N802
        self.owner.connections.append(self.transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.inner is None:
            tls = data[:1] == b"\x16" and self.owner.tls is not None
            factory = self.owner.tls if tls else self.owner.site
            self.inner = factory.buildProtocol(self.addr)
            self.inner.makeConnection(self.transport)
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:  # noqa: N802
        if self.transport in self.owner.connections:
            self.owner.connections.remove(self.transport)
        if self.inner is not None:
            self.inner.connectionLost(reason)


class _SnifferFactory(protocol.Factory):
    noisy = False

    def __init__(self, owner: WebServer) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> protocol.Protocol:  # noqa: N802
        return _Sniffer(self.owner, addr)


class WebServer:
    """HTTP (and, given a certificate, HTTPS on the same port) on 127.0.0.1 (or ``interface``, on
    ``port``, a free one by default) serving a :class:`Recorder`."""

    def __init__(self, cert: ssl.PrivateCertificate | None = None, *, interface: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.recorder = Recorder()
        self.site = server.Site(self.recorder)
        self.site.noisy = False
        self.site.timeOut = None
        self.tls = TLSMemoryBIOFactory(cert.options(), False, self.site) if cert is not None else None
        self.connections: list[Any] = []
        self.port = reactor.listenTCP(port, _SnifferFactory(self), interface=interface)  # type: ignore[attr-defined]

    @property
    def number(self) -> int:
        return int(self.port.getHost().port)

    def base(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.number}"

    def answer(self, path: str, answer: Answer) -> None:
        self.recorder.answers[path] = answer

    def stop(self) -> Any:
        for transport in list(self.connections):
            transport.abortConnection()
        return self.port.stopListening()


def ipv4_only_server(cert: ssl.PrivateCertificate | None = None) -> WebServer:
    """A server on 127.0.0.1 whose port number is free on ::1 (a connection there is refused): the
    "dead AAAA" of a name that resolves to both."""
    for _ in range(20):
        web = WebServer(cert)
        probe = socket.socket(socket.AF_INET6)
        try:
            probe.bind(("::1", web.number))
            return web
        except OSError:
            web.stop()
        finally:
            probe.close()
    raise AssertionError("no port free on ::1")


def dual_stack_servers() -> tuple[WebServer, WebServer]:
    """A server on 127.0.0.1 and one on ::1 with the same port number (one URL, both families)."""
    for _ in range(20):
        v4 = WebServer()
        try:
            return v4, WebServer(interface="::1", port=v4.number)
        except CannotListenError:
            v4.stop()
    raise AssertionError("no port free on both 127.0.0.1 and ::1")
