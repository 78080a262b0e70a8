"""The HTTP client of the mirror checks: the monitor's health checks and the scans' trace fetches.

Both talk to the mirrors as Go's ``http.Client`` does: Go's User-Agent, HTTP/1.1 and
``Connection: close`` (a non-persistent :class:`twisted.web.client.HTTPConnectionPool`), TLS verified
by service-identity against the system roots or a CA file of our own (``CheckTLSCAFile``), a 20 s
connect timeout and a 40 s deadline for the whole exchange.  Redirects are followed by hand so that
a caller's policy (the mirror's ``allowredirects``) and a hop limit apply (Go follows any number of
them until the deadline).

It lives apart from both users so that neither the monitor nor the scans import each other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer, protocol, ssl, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from mirrorbits import VERSION
from mirrorbits.reactor import IDaemonReactor

CONNECT_TIMEOUT = 20.0
#: Deadline of one whole check or trace fetch, redirects included.
REQUEST_TIMEOUT = 40.0
#: Go follows redirects without limit until the deadline; we stop after this many hops.
MAX_REDIRECTS = 10
REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))

# Go's url.Parse keeps these unescaped in a path (shouldEscape(c, encodePath) is false, or
# validEncoded accepts them); everything else goes out percent-encoded.
_PATH_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                     "-_.~$&+,/:;=@!'()*[]")
_HEX = frozenset("0123456789abcdefABCDEF")

R = TypeVar("R")


def user_agent(kind: str) -> str:
    """``Mirrorbits/<VERSION> PING CHECK`` (kind ``PING CHECK``) or ``… TRACE``."""
    return f"Mirrorbits/{VERSION} {kind}"


class BadURL(ValueError):
    """A URL Go's ``url.Parse`` would refuse (Go crashes on it in the health check)."""


def escape_url(url: str) -> str:
    """The request target as Go puts it on the wire: valid ``%XX`` escapes and path-safe characters
    kept, everything else (space, ``?``, ``#``, non-ASCII bytes) percent-encoded.

    ``?`` and ``#`` are part of a file *name* here, so unlike Go (which would cut the name at
    them and request another file) they are escaped.  An invalid escape (``%zz``) or a control
    character raises :class:`BadURL`, as ``url.Parse`` fails on them.
    """
    raw = url.encode("utf-8", "surrogateescape")
    out: list[str] = []
    i = 0
    while i < len(raw):
        b = raw[i]
        c = chr(b)
        if b < 0x20 or b == 0x7F:
            raise BadURL(f"net/url: invalid control character in URL {url!r}")
        if c == "%":
            chunk = raw[i + 1:i + 3].decode("latin-1")
            if len(chunk) != 2 or not set(chunk) <= _HEX:
                raise BadURL(f'invalid URL escape "%{chunk}"')
            out.append("%" + chunk)
            i += 3
            continue
        out.append(c if b < 0x80 and c in _PATH_OK else f"%{b:02X}")
        i += 1
    return "".join(out)


def load_trust_root(ca_file: str) -> object:
    """A trust root (an ``IOpenSSLTrustRoot``) from a PEM file holding one or more CA certificates."""
    with open(ca_file, "rb") as f:
        data = f.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    certs = [ssl.Certificate.loadPEM(marker + chunk) for chunk in data.split(marker)[1:]]
    if not certs:
        raise ValueError(f"{ca_file}: no PEM certificate found")
    trust: object = ssl.trustRootFromCertificates(certs)
    return trust


class RedirectRefused(Exception):
    """A redirect the caller's policy forbids."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__(f"{source} => {target}")
        self.source = source
        self.target = target


class TooManyRedirects(Exception):
    pass


def describe_error(e: BaseException) -> str:
    """A failed request's cause for the log: the reasons of a ``ResponseFailed`` (which has no text
    of its own), else the exception's text or class name."""
    reasons: list[Failure] | None = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) for r in reasons)
    return str(e) or e.__class__.__name__


class HttpClient:
    """Agent on a non-persistent pool, TLS policy, timeouts, redirects under a caller's policy."""

    def __init__(self, reactor: IDaemonReactor, *, ca_file: str = "",
                 connect_timeout: float = CONNECT_TIMEOUT, timeout: float = REQUEST_TIMEOUT) -> None:
        self.reactor = reactor
        self.ca_file = ca_file
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._agent: Agent | None = None
        self._agent_ca: str | None = None
        self._policy: BrowserLikePolicyForHTTPS | None = None
        #: How to cancel each request in flight.
        self._inflight: set[Callable[[], None]] = set()

    async def agent(self) -> Agent:
        """The Agent, rebuilt when the CA file setting changed (the file is read in a thread)."""
        if self._agent is None or self._policy is None or self._agent_ca != self.ca_file:
            ca_file = self.ca_file
            trust = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), load_trust_root, ca_file) if ca_file else None
            pool = HTTPConnectionPool(self.reactor, persistent=False)
            self._policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
            self._agent = Agent(self.reactor, contextFactory=self._policy,
                                connectTimeout=self.connect_timeout, pool=pool)
            self._agent_ca = ca_file
        return self._agent

    async def pinned_agent(self, host: str, address: str) -> Agent:
        """An Agent that connects to ``address`` for ``host`` and to any other host (a redirect's)
        over the same address family, with the same TLS policy (the certificate is still checked
        against the host name) and timeouts: one health check per address family."""
        await self.agent()
        assert self._policy is not None
        endpoints = _PinnedEndpoints(self.reactor, self._policy, host, address, self.connect_timeout)
        return Agent.usingEndpointFactory(self.reactor, endpoints,
                                          pool=HTTPConnectionPool(self.reactor, persistent=False))

    async def request(self, method: str, url: str, ua: str, *,
                      allow_redirect: Callable[[str, str], bool],
                      read_body: Callable[[IResponse], Awaitable[R]],
                      max_redirects: int = MAX_REDIRECTS, address: str | None = None
                      ) -> tuple[IResponse, R]:
        """Send ``method`` to ``url``, following redirects while ``allow_redirect(origin, target)``
        says so, within the overall deadline; ``read_body`` reads the final response's body
        (:func:`discard_body` drops it) and its result is returned with the response.
        ``address``: connect to this IP for the URL's host, and over its family for any other
        (see :meth:`pinned_agent`)."""
        d = defer.Deferred.fromCoroutine(
            self._request(method, url, ua, allow_redirect, max_redirects, read_body, address))
        # Here the timeout does cancel the request: nothing else waits for it.
        d.addTimeout(self.timeout, self.reactor)
        cancelled = False

        def cancel() -> None:
            nonlocal cancelled
            cancelled = True
            d.cancel()

        self._inflight.add(cancel)
        try:
            return await d
        except Exception:
            # The Agent reports a cancelled request as ResponseNeverReceived/ResponseFailed; the
            # caller must see a cancellation, not a mirror that failed to answer.
            if cancelled:
                raise defer.CancelledError() from None
            raise
        finally:
            self._inflight.discard(cancel)

    def cancel_all(self) -> None:
        """Cancel every request in flight (the daemon is stopping); they raise CancelledError, so
        no mirror is recorded as down because we stopped asking."""
        for cancel in list(self._inflight):
            cancel()

    async def _request(self, method: str, url: str, ua: str,
                       allow_redirect: Callable[[str, str], bool], max_redirects: int,
                       read_body: Callable[[IResponse], Awaitable[R]],
                       address: str | None = None) -> tuple[IResponse, R]:
        if address is None:
            agent = await self.agent()
        else:
            agent = await self.pinned_agent(urlsplit(url).hostname or "", address)
        headers = Headers({b"User-Agent": [ua.encode("utf-8")]})
        current = url
        hops = 0
        while True:
            target = escape_url(current).encode("ascii")
            response = await agent.request(method.encode("ascii"), target, headers)
            location = response.headers.getRawHeaders(b"location")
            if response.code in REDIRECT_CODES and location:
                await discard_body(response)
                nxt = urljoin(current, location[0].decode("utf-8", "surrogateescape"))
                if not nxt.startswith(("http://", "https://")):
                    raise ValueError(f"unsupported protocol scheme in redirect to {nxt!r}")
                if not allow_redirect(url, nxt):
                    raise RedirectRefused(url, nxt)
                hops += 1
                if hops > max_redirects:
                    raise TooManyRedirects(f"stopped after {max_redirects} redirects")
                current = nxt
                continue
            return response, await read_body(response)


@implementer(IAgentEndpointFactory)
class _PinnedEndpoints:
    """Endpoints of :meth:`HttpClient.pinned_agent`: ``host`` goes to ``address``, every other host
    is resolved and connected to over ``address``'s family only."""

    def __init__(self, reactor: IDaemonReactor, policy: BrowserLikePolicyForHTTPS, host: str,
                 address: str, timeout: float) -> None:
        self.reactor = reactor
        self.policy = policy
        self.host = host.lower()
        self.address = address
        self.ipv6 = ":" in address
        self.timeout = timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:  # noqa: N802 - the interface's name
        host = uri.host.decode("ascii", "replace")
        target = self.address if host.lower() == self.host else host
        try:
            literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(target)
        except ValueError:
            literal = None
        if literal is not None and (literal.version == 6) != self.ipv6:
            # A redirect to an address of the other family: not reachable over this one.
            raise ConnectError(string=f"{target} is not an {'IPv6' if self.ipv6 else 'IPv4'} address")
        endpoint: IStreamClientEndpoint
        if self.ipv6:
            endpoint = TCP6ClientEndpoint(self.reactor, target, uri.port, timeout=self.timeout)
        else:
            endpoint = TCP4ClientEndpoint(self.reactor, target, uri.port, timeout=self.timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self.policy.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


class _Drain(protocol.Protocol):
    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self.done.callback(None)


async def discard_body(response: IResponse) -> None:
    """Read and drop the body (none for HEAD); its errors do not matter."""
    drain = _Drain()
    response.deliverBody(drain)
    await drain.done
