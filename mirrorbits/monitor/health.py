"""HTTP(S) health checks of the mirrors.

One check is a ``HEAD`` of a random file the mirror should carry, sent by the shared
:class:`mirrorbits.httpclient.HttpClient` (Go's User-Agent, timeouts, TLS policy).  Redirects follow
the mirror's ``allowredirects`` policy.

With ``SelectByIPFamily`` the host's IPv4 and IPv6 addresses are resolved (through an injectable
:class:`~mirrorbits.monitor.resolve.HostResolver`) and the same check runs once per family that has
an address, both at once, each connected to its family's first address.  The protocol's verdict
stays Go's: up when any family answers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from time import perf_counter
from urllib.parse import urlsplit

from prometheus_client import Counter, Histogram
from twisted.internet import defer
from twisted.logger import Logger

from mirrorbits.httpclient import HttpClient, RedirectRefused, describe_error, discard_body, user_agent
from mirrorbits.ipfamily import FAMILIES, Family
from mirrorbits.model import PROTO_HTTP, PROTO_HTTPS, Mirror
from mirrorbits.monitor.resolve import HostAddresses, HostResolver
from mirrorbits.redis import schema

log = Logger(namespace="mirrorbits.monitor")

CHECK_DURATION = Histogram("mirrorbits_health_check_duration_seconds",
                           "Duration of one health check (HEAD of a file), by protocol", ["protocol"],
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
CHECK_FAILURES = Counter("mirrorbits_health_check_failures", "Health checks that found the mirror "
                         "down, by reason (unreachable, unauthorized_redirect, not_found, status)",
                         ["mirror", "protocol", "reason"])

REASON_UNREACHABLE = "Unreachable"
REASON_UNAUTHORIZED_REDIRECT = "Unauthorized redirect"


def check_urls(mirror: Mirror, path: str) -> list[tuple[int, str]]:
    """The (protocol, URL) pairs a check requests: the URL's own scheme, or both for a scheme-less
    base (HTTP first).  The base loses its trailing slashes and gets ``path`` appended."""
    base = mirror.http_url.rstrip("/")
    if mirror.http_url.startswith("https://"):
        return [(PROTO_HTTPS, base + path)]
    if mirror.http_url.startswith("http://"):
        return [(PROTO_HTTP, base + path)]
    return [(PROTO_HTTP, "http://" + base + path), (PROTO_HTTPS, "https://" + base + path)]


@dataclass(frozen=True, slots=True)
class FamilyOutcome:
    """The verdict on one protocol of a mirror over one address family; ``state`` is one of the
    :func:`mirrorbits.redis.schema.family_fields` values (up, down, no address)."""

    family: Family
    state: str
    reason: str = ""


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
    #: The verdict per address family (only when checked per family).
    families: tuple[FamilyOutcome, ...] = ()


def redirects_allowed(mirror: Mirror, disallow_redirects: bool) -> bool:
    """``allowredirects``: 1 allowed, 2 forbidden, 0 (or anything else) the global setting."""
    if mirror.allow_redirects == 1:
        return True
    if mirror.allow_redirects == 2:
        return False
    return not disallow_redirects


def failure_reason(reason: str) -> str:
    """The bounded ``reason`` label of a failed check (its text names paths and codes)."""
    if reason == REASON_UNREACHABLE:
        return "unreachable"
    if reason == REASON_UNAUTHORIZED_REDIRECT:
        return "unauthorized_redirect"
    if reason.startswith("File not found"):
        return "not_found"
    return "status"


class HealthChecker:
    """Runs the HEAD requests of one mirror and turns each into a :class:`CheckOutcome`."""

    def __init__(self, client: HttpClient, resolver: HostResolver | None = None) -> None:
        self.client = client
        self.resolver = resolver

    async def check(self, mirror: Mirror, path: str, size: int, *, disallow_redirects: bool = False,
                    disable_on_missing: bool = False, by_family: bool = False) -> list[CheckOutcome]:
        """Check ``path`` (expected ``size`` bytes) over the mirror's protocol(s), in sequence;
        ``by_family``: over each address family of the host too."""
        allowed = redirects_allowed(mirror, disallow_redirects)
        outcomes = []
        resolved: dict[str, HostAddresses] = {}
        for proto, url in check_urls(mirror, path):
            started = perf_counter()
            if by_family and self.resolver is not None:
                outcome = await self._check_families(mirror, proto, url, path, size, allowed,
                                                     disable_on_missing, resolved)
            else:
                outcome = await self._check_one(mirror, proto, url, path, size, allowed,
                                                disable_on_missing)
            protocol = "https" if proto == PROTO_HTTPS else "http"
            CHECK_DURATION.labels(protocol).observe(perf_counter() - started)
            if not outcome.up:
                CHECK_FAILURES.labels(mirror.name, protocol, failure_reason(outcome.reason)).inc()
            outcomes.append(outcome)
        return outcomes

    async def _addresses(self, host: str, resolved: dict[str, HostAddresses]) -> HostAddresses:
        """The host's addresses, resolved once per check (both protocols share a scheme-less URL's
        host); a resolver failure reads as no address."""
        found = resolved.get(host)
        if found is None:
            assert self.resolver is not None
            try:
                found = await self.resolver.resolve(host)
            except defer.CancelledError:
                raise
            except Exception as e:
                log.debug("Cannot resolve {host}: {err}", host=host, err=describe_error(e))
                found = HostAddresses()
            resolved[host] = found
        return found

    async def _check_families(self, mirror: Mirror, proto: int, url: str, path: str, size: int,
                              allowed: bool, disable_on_missing: bool,
                              resolved: dict[str, HostAddresses]) -> CheckOutcome:
        """One check per address family, at once; the protocol is up when any family answers."""
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            host = ""
        addresses = await self._addresses(host, resolved) if host else HostAddresses()
        probes: list[tuple[Family, str]] = []
        for family, found in ((Family.IPV4, addresses.ipv4), (Family.IPV6, addresses.ipv6)):
            if found:
                probes.append((family, found[0]))
        try:
            results: list[CheckOutcome] = await defer.gatherResults(
                [defer.Deferred.fromCoroutine(self._check_one(mirror, proto, url, path, size, allowed,
                                                              disable_on_missing, address))
                 for _, address in probes], consumeErrors=True)
        except defer.FirstError as e:
            e.subFailure.raiseException()  # a cancellation: the daemon is stopping
        by_family = dict(zip([f for f, _ in probes], results, strict=True))
        families = []
        for family in FAMILIES:
            one = by_family.get(family)
            if one is None:
                families.append(FamilyOutcome(family, schema.FAMILY_NO_ADDRESS,
                                              f"No {family.label} address"))
            else:
                families.append(FamilyOutcome(family, schema.FAMILY_UP if one.up else schema.FAMILY_DOWN,
                                              one.reason))
        verdict = next((o for o in results if o.up), results[0] if results else None)
        if verdict is None:
            log.debug("{name}: {host} has no address", name=mirror.name, host=host)
            return CheckOutcome(proto, url, False, REASON_UNREACHABLE, families=tuple(families))
        disable = not verdict.up and any(o.disable for o in results)
        return replace(verdict, disable=disable, families=tuple(families))

    async def _check_one(self, mirror: Mirror, proto: int, url: str, path: str, size: int,
                         allowed: bool, disable_on_missing: bool,
                         address: str | None = None) -> CheckOutcome:
        def policy(origin: str, target: str) -> bool:
            if not allowed:
                log.warn("Unauthorized redirection for {name}: {src} => {dst}", name=mirror.name,
                         src=origin, dst=target)
            return allowed

        try:
            response, _ = await self.client.request("HEAD", url, user_agent("PING CHECK"),
                                                    allow_redirect=policy, read_body=discard_body,
                                                    address=address)
        except RedirectRefused:
            return CheckOutcome(proto, url, False, REASON_UNAUTHORIZED_REDIRECT)
        except defer.CancelledError:
            raise
        except Exception as e:
            # Transport errors, timeouts, TLS failures, a URL Go cannot parse (Go crashes on
            # the latter): all mean the mirror cannot serve us.
            log.debug("{name}: {url}: {err}", name=mirror.name, url=url, err=describe_error(e))
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

