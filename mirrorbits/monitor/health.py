"""HTTP(S) health checks of the mirrors.

One check is a ``HEAD`` of a random file the mirror should carry, sent by the shared
:class:`mirrorbits.httpclient.HttpClient` (Go's User-Agent, timeouts, TLS policy).  Redirects follow
the mirror's ``allowredirects`` policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

from prometheus_client import Counter, Histogram
from twisted.internet import defer
from twisted.logger import Logger

from mirrorbits.httpclient import HttpClient, RedirectRefused, describe_error, discard_body, user_agent
from mirrorbits.model import PROTO_HTTP, PROTO_HTTPS, Mirror

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

    def __init__(self, client: HttpClient) -> None:
        self.client = client

    async def check(self, mirror: Mirror, path: str, size: int, *, disallow_redirects: bool = False,
                    disable_on_missing: bool = False) -> list[CheckOutcome]:
        """Check ``path`` (expected ``size`` bytes) over the mirror's protocol(s), in sequence."""
        allowed = redirects_allowed(mirror, disallow_redirects)
        outcomes = []
        for proto, url in check_urls(mirror, path):
            started = perf_counter()
            outcome = await self._check_one(mirror, proto, url, path, size, allowed, disable_on_missing)
            protocol = "https" if proto == PROTO_HTTPS else "http"
            CHECK_DURATION.labels(protocol).observe(perf_counter() - started)
            if not outcome.up:
                CHECK_FAILURES.labels(mirror.name, protocol, failure_reason(outcome.reason)).inc()
            outcomes.append(outcome)
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
                                                    allow_redirect=policy, read_body=discard_body)
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

