"""HTTP(S) health checks of the mirrors (spec §7.4), and the HTTP client they share with the trace
file fetch (§8.5).

One check is a ``HEAD`` of a random file the mirror should carry, with Go's User-Agent, HTTP/1.1
and ``Connection: close`` (a non-persistent :class:`twisted.web.client.HTTPConnectionPool`), TLS
verified by service-identity against the system roots or a CA file of our own
(``CheckTLSCAFile``), a 20 s connect timeout and a 40 s deadline for the whole exchange.
Redirects are followed by hand so that the mirror's ``allowredirects`` policy and a hop limit
apply (Go follows any number of them until the deadline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from twisted.internet import defer, protocol, ssl, threads
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from mirrorbits import VERSION
from mirrorbits.model import PROTO_HTTP, PROTO_HTTPS, Mirror

log = Logger(namespace="mirrorbits.monitor")

CONNECT_TIMEOUT = 20.0
#: Deadline of one whole check or trace fetch, redirects included.
REQUEST_TIMEOUT = 40.0
#: Go follows redirects without limit until the deadline; we stop after this many hops.
MAX_REDIRECTS = 10
REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))

REASON_UNREACHABLE = "Unreachable"
REASON_UNAUTHORIZED_REDIRECT = "Unauthorized redirect"

# Go's url.Parse keeps these unescaped in a path (shouldEscape(c, encodePath) is false, or
# validEncoded accepts them); everything else goes out percent-encoded.
_PATH_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                     "-_.~$&+,/:;=@!'()*[]")
_HEX = frozenset("0123456789abcdefABCDEF")


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


def check_urls(mirror: Mirror, path: str) -> list[tuple[int, str]]:
    """The (protocol, URL) pairs a check requests: the URL's own scheme, or both for a scheme-less
    base (HTTP first).  The base loses its trailing slashes and gets ``path`` appended."""
    base = mirror.http_url.rstrip("/")
    if mirror.http_url.startswith("https://"):
        return [(PROTO_HTTPS, base + path)]
    if mirror.http_url.startswith("http://"):
        return [(PROTO_HTTP, base + path)]
    return [(PROTO_HTTP, "http://" + base + path), (PROTO_HTTPS, "https://" + base + path)]


def load_trust_root(ca_file: str) -> Any:
    """A trust root from a PEM file holding one or more CA certificates."""
    with open(ca_file, "rb") as f:
        data = f.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    certs = [ssl.Certificate.loadPEM(marker + chunk) for chunk in data.split(marker)[1:]]
    if not certs:
        raise ValueError(f"{ca_file}: no PEM certificate found")
    return ssl.trustRootFromCertificates(certs)


class RedirectRefused(Exception):
    """A redirect the mirror's policy forbids."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__(f"{source} => {target}")
        self.source = source
        self.target = target


class TooManyRedirects(Exception):
    pass


class HttpClient:
    """The monitor's HTTP client: Agent on a non-persistent pool, TLS policy, timeouts."""

    def __init__(self, reactor: Any, *, ca_file: str = "", connect_timeout: float = CONNECT_TIMEOUT,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        self.reactor = reactor
        self.ca_file = ca_file
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._agent: Agent | None = None
        self._agent_ca: str | None = None
        self._inflight: set[defer.Deferred[Any]] = set()

    async def agent(self) -> Agent:
        """The Agent, rebuilt when the CA file setting changed (the file is read in a thread)."""
        if self._agent is None or self._agent_ca != self.ca_file:
            ca_file = self.ca_file
            trust = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), load_trust_root, ca_file) if ca_file else None
            pool = HTTPConnectionPool(self.reactor, persistent=False)
            self._agent = Agent(self.reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust),
                                connectTimeout=self.connect_timeout, pool=pool)
            self._agent_ca = ca_file
        return self._agent

    async def request(self, method: str, url: str, ua: str, *,
                      allow_redirect: Callable[[str, str], bool],
                      max_redirects: int = MAX_REDIRECTS,
                      on_response: Callable[[IResponse], Any] | None = None) -> tuple[IResponse, Any]:
        """Send ``method`` to ``url``, following redirects while ``allow_redirect(origin, target)``
        says so, within the overall deadline.  ``on_response`` reads the final response's body
        (default: drain it) and its result is returned with the response."""
        d = defer.Deferred.fromCoroutine(
            self._request(method, url, ua, allow_redirect, max_redirects, on_response))
        d.addTimeout(self.timeout, self.reactor)
        self._inflight.add(d)
        try:
            result: tuple[IResponse, Any] = await d
        finally:
            self._inflight.discard(d)
        return result

    def cancel_all(self) -> None:
        """Cancel every request in flight (the daemon is stopping); they raise CancelledError."""
        for d in list(self._inflight):
            d.cancel()

    async def _request(self, method: str, url: str, ua: str,
                       allow_redirect: Callable[[str, str], bool], max_redirects: int,
                       on_response: Callable[[IResponse], Any] | None) -> tuple[IResponse, Any]:
        agent = await self.agent()
        headers = Headers({b"User-Agent": [ua.encode("utf-8")]})
        current = url
        hops = 0
        while True:
            target = escape_url(current).encode("ascii")
            response = await agent.request(method.encode("ascii"), target, headers)
            location = response.headers.getRawHeaders(b"location")
            if response.code in REDIRECT_CODES and location:
                await _discard(response)
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
            if on_response is not None:
                return response, await on_response(response)
            await _discard(response)
            return response, None


class _Drain(protocol.Protocol):
    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:  # noqa: N802
        self.done.callback(None)


async def _discard(response: IResponse) -> None:
    """Read and drop the body (none for HEAD); its errors do not matter."""
    drain = _Drain()
    response.deliverBody(drain)
    await drain.done


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """The verdict on one protocol of a mirror."""

    proto: int
    url: str
    up: bool
    reason: str
    #: 404 while ``DisableOnMissingFile`` is on: the mirror must be disabled.
    disable: bool = False
    #: ``Content-Length`` of a 200 that differs from the local size (logged only).
    size_mismatch: bool = False


def redirects_allowed(mirror: Mirror, disallow_redirects: bool) -> bool:
    """``allowredirects``: 1 allowed, 2 forbidden, 0 (or anything else) the global setting."""
    if mirror.allow_redirects == 1:
        return True
    if mirror.allow_redirects == 2:
        return False
    return not disallow_redirects


class HealthChecker:
    """Runs the HEAD requests of one mirror and turns each into a :class:`CheckOutcome`."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client

    async def check(self, mirror: Mirror, path: str, size: int, *, disallow_redirects: bool = False,
                    disable_on_missing: bool = False) -> list[CheckOutcome]:
        """Check ``path`` (expected ``size`` bytes) over the mirror's protocol(s), in sequence."""
        allowed = redirects_allowed(mirror, disallow_redirects)
        outcomes = []
        for proto, url in check_urls(mirror, path):
            outcomes.append(await self._check_one(mirror, proto, url, path, size, allowed,
                                                  disable_on_missing))
        return outcomes

    async def _check_one(self, mirror: Mirror, proto: int, url: str, path: str, size: int,
                         allowed: bool, disable_on_missing: bool) -> CheckOutcome:
        def policy(origin: str, target: str) -> bool:
            if not allowed:
                log.warn("Unauthorized redirection for {name}: {src} => {dst}", name=mirror.name,
                         src=origin, dst=target)
            return allowed

        try:
            response, _ = await self.client.request("HEAD", url, user_agent("PING CHECK"),
                                                    allow_redirect=policy)
        except RedirectRefused:
            return CheckOutcome(proto, url, False, REASON_UNAUTHORIZED_REDIRECT)
        except defer.CancelledError:
            raise
        except Exception as e:
            # Transport errors, timeouts, TLS failures, a URL Go cannot parse (Go crashes on
            # the latter, spec §7.4 quirk): all mean the mirror cannot serve us.
            log.debug("{name}: {url}: {err}", name=mirror.name, url=url, err=_describe(e))
            return CheckOutcome(proto, url, False, REASON_UNREACHABLE)
        code = response.code
        if code == 200:
            mismatch = False
            lengths = response.headers.getRawHeaders(b"content-length") or []
            if lengths:
                try:
                    length = int(lengths[0].strip())
                except ValueError:
                    length = -1
                if length >= 0 and length != size:
                    mismatch = True
                    log.warn("File size mismatch! [{path}]", path=path)
            return CheckOutcome(proto, url, True, "", size_mismatch=mismatch)
        if code == 404:
            return CheckOutcome(proto, url, False, f"File not found {path} (error 404)",
                                disable=disable_on_missing)
        return CheckOutcome(proto, url, False, f"Got status code {code}")


def _describe(e: BaseException) -> str:
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) for r in reasons)
    return str(e) or e.__class__.__name__
