"""What selection works on: the client's location, the mirrors as :class:`Candidate` values with
every per-mirror derivation done once, and the results (:class:`Chosen`, :class:`Excluded`,
:class:`Selection`).

A Candidate is built from a :class:`mirrorbits.model.Mirror` when the record is loaded, not per
request: the protocol verdicts, country sets and float32 coordinates are computed then, and the
values the per-request loops read are copied into slots of their own.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from mirrorbits.gocompat import ZERO_TIME_NS, f32
from mirrorbits.ipfamily import FAMILIES, Family, FamilyStates, unreachable_reason
from mirrorbits.model import PROTO_HTTP, PROTO_HTTPS, Mirror

__all__ = [
    "ERR_MODTIME_ZERO",
    "Candidate",
    "Chosen",
    "ClientLocation",
    "Excluded",
    "MirrorFile",
    "Secure",
    "Selection",
    "verdict_index",
]

#: Go's ``float32(DegToRad)``: the constant is converted to float32 where it meets a float32.
DEG2RAD_F32 = f32(0.017453292519943295769236907684886127134428718885417)
#: ``math.SmallestNonzeroFloat32``, used by Go to avoid dividing by a zero closest distance.
SMALLEST_F32 = 1.401298464324817e-45
#: Go's time.Truncate rounds relative to the zero time (0001-01-01 UTC), not the Unix epoch.
ZERO_TIME_TO_UNIX_NS = -ZERO_TIME_NS

ERR_MODTIME_ZERO = "Invalid file info (modtime is zero)"


def coordinate(x: float) -> float:
    """A coordinate as float32.  NaN or infinite (only from corrupt data) becomes 0: Go would carry
    a NaN into the scores and convert it to an arbitrary integer; we keep the request sane."""
    v = f32(float(x))
    return v if math.isfinite(v) else 0.0


class Secure(IntEnum):
    """Which scheme the client must get."""

    UNDEFINED = 0  # any; prefer HTTPS
    WITH_TLS = 1
    WITHOUT_TLS = 2


def _ensure_absolute(url: str, scheme: str) -> str:
    if url.startswith(("http://", "https://")):
        return url
    return scheme + "://" + url


def _protocol_verdicts(
    http_url: str, http_up: bool, https_up: bool, http_down: str, https_down: str,
    http_reachable: bool = True, https_reachable: bool = True, unreachable: str = "",
) -> tuple[tuple[str, str | None], tuple[str, str | None], tuple[str, str | None]]:
    """(AbsoluteURL, exclusion reason or None) for UNDEFINED, WITH_TLS and WITHOUT_TLS.

    These depend only on the mirror record, so they are computed once per mirror load.  For one
    client address family, ``http_reachable``/``https_reachable`` say whether the protocol answered
    over it, and ``unreachable`` is the reason of a protocol that is up but not over that family.
    """
    https_abs = _ensure_absolute(http_url, "https")
    http_abs = _ensure_absolute(http_url, "http")
    if http_url.startswith("http://"):
        https_reason: str | None = "Not HTTPS"
    elif not https_up:
        https_reason = https_down or "Down"
    elif not https_reachable:
        https_reason = unreachable
    else:
        https_reason = None
    if http_url.startswith("https://"):
        http_reason: str | None = "Not HTTP"
    elif not http_up:
        http_reason = http_down or "Down"
    elif not http_reachable:
        http_reason = unreachable
    else:
        http_reason = None
    if https_reason is None:
        undefined: tuple[str, str | None] = (https_abs, None)
    elif http_reason is None:
        undefined = (http_abs, None)
    elif http_reason == https_reason:
        undefined = (http_abs, http_reason)
    else:
        undefined = (http_abs, f"{http_reason} / {https_reason}")
    return undefined, (https_abs, https_reason), (http_abs, http_reason)


def verdict_index(secure: Secure, family: Family) -> int:
    """Where :attr:`Candidate.verdicts` holds the verdict for a scheme option and a client family."""
    return int(secure) + 3 * int(family)


@dataclass(slots=True)
class MirrorFile:
    """A mirror's copy of the file (``FILEINFO_<id>_<path>``); ``mod_time_ns`` None = Go zero time."""

    size: int
    mod_time_ns: int | None = None


@dataclass(slots=True, eq=False)
class MirrorSource:
    """What the view attaches to a :class:`Candidate` for the renderers: the full Go record, and
    the parts of its JSON document (the fields before and after the per-request ones) that the
    renderer builds on first use, once per loaded record rather than per request."""

    mirror: Mirror
    json_parts: tuple[list[tuple[str, object]], list[tuple[str, object]]] | None = None


@dataclass(slots=True, frozen=True, eq=False)
class Candidate:
    """What selection needs of one mirror record, with every per-mirror derivation precomputed.

    Build one when a mirror record is loaded (not per request) and treat it as immutable.  The
    record's fields that the per-request loops and the renderers read are copied into slots
    (an attribute read instead of two); everything else is read from ``mirror``.  ``source`` is
    the view's :class:`MirrorSource` for a loaded mirror and None for a ``Fallbacks`` pseudo-mirror;
    selection never looks at it.
    """

    mirror: Mirror
    source: MirrorSource | None = field(default=None, compare=False, repr=False)
    #: The per-family probes of the record (``SelectByIPFamily``); empty: never probed per family.
    families: FamilyStates = field(default_factory=dict, compare=False, repr=False)
    # Copied from the record:
    id: int = field(init=False)
    name: str = field(init=False)
    http_url: str = field(init=False)
    continent_only: bool = field(init=False, repr=False)
    country_only: bool = field(init=False, repr=False)
    as_only: bool = field(init=False, repr=False)
    score: int = field(init=False, repr=False)
    continent_code: str = field(init=False, repr=False)
    country_codes: str = field(init=False, repr=False)
    asnum: int = field(init=False, repr=False)
    # Derived:
    #: float32 coordinates, 0 for NaN/Inf.
    latitude: float = field(init=False, repr=False)
    longitude: float = field(init=False, repr=False)
    country_list: tuple[str, ...] = field(init=False)
    country_set: frozenset[str] = field(init=False, repr=False)
    excluded_country_set: frozenset[str] = field(init=False, repr=False)
    primary_country: str | None = field(init=False, repr=False)
    lat_rad: float = field(init=False, repr=False)
    cos_lat: float = field(init=False, repr=False)
    https_absolute_url: str = field(init=False, repr=False)
    http_absolute_url: str = field(init=False, repr=False)
    #: (AbsoluteURL, reason or None) per :class:`Secure` value, "Disabled" included, for a client
    #: of any family, then of IPv4, then of IPv6: index ``secure + 3 * family``
    #: (:func:`verdict_index`).
    verdicts: tuple[tuple[str, str | None], ...] = field(init=False, repr=False)
    #: Whether a geography check (continent, country, AS, excluded countries) can apply.
    restricted: bool = field(init=False, repr=False)
    tz_offset_ns: int = field(init=False, repr=False)
    last_successful_sync_precision_ns: int = field(init=False, repr=False)
    #: Go's ``float64(m.Score) / 100``.
    score_factor: float = field(init=False, repr=False)
    #: client ``geo_key`` -> distance: a cache of a pure function, bounded by the distance module.
    dist_memo: dict[int, float] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        s = object.__setattr__
        m = self.mirror
        for name in ("id", "name", "http_url", "continent_only", "country_only", "as_only", "score",
                     "continent_code", "country_codes", "asnum"):
            s(self, name, getattr(m, name))
        lat = coordinate(m.latitude)
        s(self, "latitude", lat)
        s(self, "longitude", coordinate(m.longitude))
        countries = tuple(m.country_codes.split())
        s(self, "country_list", countries)
        s(self, "country_set", frozenset(countries))
        s(self, "excluded_country_set", frozenset(m.excluded_country_codes.split()))
        s(self, "primary_country", countries[0] if countries else None)
        lat_rad = f32(lat * DEG2RAD_F32)
        s(self, "lat_rad", lat_rad)
        s(self, "cos_lat", math.cos(lat_rad))
        s(self, "https_absolute_url", _ensure_absolute(m.http_url, "https"))
        s(self, "http_absolute_url", _ensure_absolute(m.http_url, "http"))
        if m.enabled:
            args = (m.http_url, m.http_up, m.https_up, m.http_down_reason, m.https_down_reason)
            base = _protocol_verdicts(*args)
            verdicts: tuple[tuple[str, str | None], ...] = base
            fams = self.families
            for family in FAMILIES:
                if not fams:
                    verdicts += base
                    continue
                http = fams.get((PROTO_HTTP, family))
                https = fams.get((PROTO_HTTPS, family))
                reason = unreachable_reason(family)
                own = _protocol_verdicts(*args, http is None or http.reachable,
                                         https is None or https.reachable, reason)
                # A mirror excluded anyway keeps its reason; one excluded only by the family
                # says so alone ("Not reachable over IPv6", not "... / Not HTTPS").
                verdicts += tuple(b if b[1] is not None or f[1] is None else (f[0], reason)
                                  for b, f in zip(base, own, strict=True))
        else:
            verdicts = (("", "Disabled"),) * 9  # checked first; AbsoluteURL stays empty
        s(self, "verdicts", verdicts)
        s(self, "restricted", bool(m.continent_only or m.country_only or m.as_only or self.excluded_country_set))
        s(self, "tz_offset_ns", m.tz_offset * 1_000_000)
        s(self, "last_successful_sync_precision_ns", m.last_successful_sync_precision)
        s(self, "score_factor", m.score / 100)


@dataclass(slots=True, frozen=True)
class ClientLocation:
    """The client's GeoIP record as far as selection cares.  Valid iff ``country`` is non-empty."""

    country: str = ""
    continent: str = ""
    asnum: int = 0
    latitude: float = 0.0
    longitude: float = 0.0
    valid: bool = field(init=False)
    cos_lat: float = field(init=False, repr=False)
    #: The float32 bit patterns of latitude and longitude: the key of the distance memo.
    geo_key: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        s = object.__setattr__
        lat = coordinate(self.latitude)
        s(self, "latitude", lat)
        s(self, "longitude", coordinate(self.longitude))
        s(self, "valid", self.country != "")
        s(self, "cos_lat", math.cos(f32(lat * DEG2RAD_F32)))
        s(self, "geo_key", int.from_bytes(struct.pack("<ff", lat, self.longitude), "little"))


@dataclass(slots=True)
class Chosen:
    """A selected mirror, with the per-request values the renderers serialise."""

    candidate: Candidate
    absolute_url: str
    distance: float = 0.0
    computed_score: int = 0
    weight: float = 0.0


@dataclass(slots=True)
class Excluded:
    """A mirror that failed a filter check; ``reason`` is Go's ExcludeReason text."""

    candidate: Candidate
    absolute_url: str
    reason: str
    distance: float = 0.0


@dataclass(slots=True)
class Selection:
    """Result of :func:`select_mirrors`.

    ``selected`` is in redirect-priority order, ``excluded`` in filter order.  ``error`` is set
    only for the zero-modtime precondition; the caller then takes the fallback / 503 path.
    ``closest`` / ``farthest`` are the filter's extremes (0 when nothing is accepted).
    """

    selected: list[Chosen]
    excluded: list[Excluded]
    error: str | None = None
    closest: float = 0.0
    farthest: float = 0.0
    #: The client's address family when no mirror was usable over it and this is the choice for
    #: any family (ANY, false, otherwise).
    family_fallback: Family = Family.ANY
