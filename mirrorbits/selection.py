"""Mirror selection engine: filter, score, weight and order the mirrors of one file.

A pure module (no Twisted, no Redis, no I/O) so that it can be tested without a reactor and
called on the hot path of every download request.  It reproduces the Go original's decisions
(spec http.md §8) bit for bit, including its float32 arithmetic (§0.1) and its exclusion texts.

Speed matters (thousands of requests per second in CPython), so everything that depends only on
a mirror is computed once, when a :class:`Candidate` is built from the mirror record, and the
per-request work is limited to what depends on the client and the file.

Randomness always comes from an injected :class:`random.Random`, so tests are deterministic.
"""

from __future__ import annotations

import math
import random
import re
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from mirrorbits.gocompat import f32, format_duration

__all__ = [
    "Candidate",
    "Chosen",
    "ClientLocation",
    "Excluded",
    "FallbackSpec",
    "MirrorFile",
    "Secure",
    "Selection",
    "ERR_MODTIME_ZERO",
    "FilePlan",
    "LocationPlan",
    "RedirectPool",
    "distance",
    "draw_redirect",
    "f32",
    "fallback_choices",
    "go_duration",
    "is_additional_country",
    "is_primary_country",
    "plan_file",
    "rank_sort",
    "redirect_pool",
    "select_mirrors",
    "sort_by_exclude_reason",
]

# ---------------------------------------------------------------------------------------------
# float32 helpers (spec §0.1)



def _f32_many(values: list[float]) -> list[float]:
    """Round a whole list to binary32 in one C call; much cheaper than one struct call each."""
    return array("f", values).tolist()


def _coordinate(x: float) -> float:
    """A coordinate as float32.  NaN or infinite (only from corrupt data) becomes 0: Go would carry
    a NaN into the scores and convert it to an arbitrary integer; we keep the request sane."""
    v = f32(float(x))
    return v if math.isfinite(v) else 0.0


#: Go's ``float32(DegToRad)``: the constant is converted to float32 where it meets a float32.
_DEG2RAD_F32 = f32(0.017453292519943295769236907684886127134428718885417)
#: ``math.SmallestNonzeroFloat32``, used by Go to avoid dividing by a zero closest distance.
_SMALLEST_F32 = 1.401298464324817e-45
_EARTH_RADIUS_KM = 6371.0

# Go's time.Truncate rounds relative to the zero time (0001-01-01 UTC), not the Unix epoch.
_ZERO_TIME_TO_UNIX_NS = 62135596800 * 1_000_000_000

ERR_MODTIME_ZERO = "Invalid file info (modtime is zero)"


#: Go's ``time.Duration.String()``, shared with the rest of the project (spec §0.2).
go_duration = format_duration


# ---------------------------------------------------------------------------------------------
# Values


class Secure(IntEnum):
    """Which scheme the client must get (spec §5.2)."""

    UNDEFINED = 0  # any; prefer HTTPS
    WITH_TLS = 1
    WITHOUT_TLS = 2


def _ensure_absolute(url: str, scheme: str) -> str:
    if url.startswith(("http://", "https://")):
        return url
    return scheme + "://" + url


def _protocol_verdicts(
    http_url: str, http_up: bool, https_up: bool, http_down: str, https_down: str
) -> tuple[tuple[str, str | None], tuple[str, str | None], tuple[str, str | None]]:
    """(AbsoluteURL, exclusion reason or None) for UNDEFINED, WITH_TLS and WITHOUT_TLS (§8.3 step 2).

    These depend only on the mirror record, so they are computed once per mirror load.
    """
    https_abs = _ensure_absolute(http_url, "https")
    http_abs = _ensure_absolute(http_url, "http")
    if http_url.startswith("http://"):
        https_reason: str | None = "Not HTTPS"
    elif not https_up:
        https_reason = https_down or "Down"
    else:
        https_reason = None
    if http_url.startswith("https://"):
        http_reason: str | None = "Not HTTP"
    elif not http_up:
        http_reason = http_down or "Down"
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


@dataclass(slots=True)
class MirrorFile:
    """A mirror's copy of the file (``FILEINFO_<id>_<path>``); ``mod_time_ns`` None = Go zero time."""

    size: int
    mod_time_ns: int | None = None


#: Distances memoised per candidate (one entry per distinct client location) before a reset.
_DIST_MEMO_MAX = 2048


@dataclass(slots=True, frozen=True, eq=False)
class Candidate:
    """What selection needs of one mirror, with every per-mirror derivation precomputed.

    Build one when a mirror record is loaded (not per request) and treat it as immutable: the
    protocol verdicts and coordinates are derived at construction.  ``source`` carries the
    caller's full mirror record (for the JSON renderer); selection never looks at it.
    """

    id: int
    name: str = ""
    http_url: str = ""
    enabled: bool = False
    http_up: bool = False
    https_up: bool = False
    http_down_reason: str = ""
    https_down_reason: str = ""
    continent_only: bool = False
    country_only: bool = False
    as_only: bool = False
    score: int = 0
    latitude: float = 0.0
    longitude: float = 0.0
    continent_code: str = ""
    country_codes: str = ""
    excluded_country_codes: str = ""
    asnum: int = 0
    tz_offset_ms: int = 0
    last_successful_sync_precision_ns: int = 0
    source: Any = field(default=None, compare=False, repr=False)
    # Derived at construction:
    country_list: tuple[str, ...] = field(init=False)
    country_set: frozenset[str] = field(init=False, repr=False)
    excluded_country_set: frozenset[str] = field(init=False, repr=False)
    primary_country: str | None = field(init=False, repr=False)
    lat_rad: float = field(init=False, repr=False)
    cos_lat: float = field(init=False, repr=False)
    https_absolute_url: str = field(init=False, repr=False)
    http_absolute_url: str = field(init=False, repr=False)
    #: (AbsoluteURL, reason or None) per :class:`Secure` value, "Disabled" included.
    verdicts: tuple[tuple[str, str | None], ...] = field(init=False, repr=False)
    #: Any of the geography checks (§8.3 steps 4-7) can apply.
    restricted: bool = field(init=False, repr=False)
    tz_offset_ns: int = field(init=False, repr=False)
    #: Go's ``float64(m.Score) / 100``.
    score_factor: float = field(init=False, repr=False)
    #: client ``geo_key`` -> distance: a cache of a pure function, bounded by _DIST_MEMO_MAX.
    dist_memo: dict[int, float] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        s = object.__setattr__
        lat = _coordinate(self.latitude)
        s(self, "latitude", lat)
        s(self, "longitude", _coordinate(self.longitude))
        countries = tuple(self.country_codes.split())
        s(self, "country_list", countries)
        s(self, "country_set", frozenset(countries))
        s(self, "excluded_country_set", frozenset(self.excluded_country_codes.split()))
        s(self, "primary_country", countries[0] if countries else None)
        lat_rad = f32(lat * _DEG2RAD_F32)
        s(self, "lat_rad", lat_rad)
        s(self, "cos_lat", math.cos(lat_rad))
        s(self, "https_absolute_url", _ensure_absolute(self.http_url, "https"))
        s(self, "http_absolute_url", _ensure_absolute(self.http_url, "http"))
        if self.enabled:
            verdicts = _protocol_verdicts(
                self.http_url, self.http_up, self.https_up, self.http_down_reason, self.https_down_reason
            )
        else:
            verdicts = (("", "Disabled"),) * 3  # checked first; AbsoluteURL stays empty
        s(self, "verdicts", verdicts)
        s(
            self,
            "restricted",
            bool(self.continent_only or self.country_only or self.as_only or self.excluded_country_set),
        )
        s(self, "tz_offset_ns", self.tz_offset_ms * 1_000_000)
        s(self, "score_factor", self.score / 100)

    @classmethod
    def from_redis_hash(cls, fields: Mapping[Any, Any], source: Any = None) -> Candidate:
        """Build from the raw ``HGETALL MIRROR_<id>`` reply (str or bytes keys and values).

        Parses like Go's struct mapping (spec http §11): a field that does not parse raises
        ValueError, as does an empty hash; unknown fields are ignored.
        """
        if not fields:
            raise ValueError("redigo: nil returned")
        f: dict[str, str] = {}
        for k, v in fields.items():
            key = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
            f[key] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

        def text(name: str) -> str:
            return f.get(name, "")

        return cls(
            id=_parse_int(f, "ID"),
            name=text("name"),
            http_url=text("http"),
            enabled=_parse_bool(f, "enabled"),
            http_up=_parse_bool(f, "httpUp"),
            https_up=_parse_bool(f, "httpsUp"),
            http_down_reason=text("httpDownReason"),
            https_down_reason=text("httpsDownReason"),
            continent_only=_parse_bool(f, "continentOnly"),
            country_only=_parse_bool(f, "countryOnly"),
            as_only=_parse_bool(f, "asOnly"),
            score=_parse_int(f, "score"),
            latitude=_parse_f32(f, "latitude"),
            longitude=_parse_f32(f, "longitude"),
            continent_code=text("continentCode"),
            country_codes=text("countryCodes"),
            excluded_country_codes=text("excludedCountryCodes"),
            asnum=_parse_int(f, "asnum", unsigned=True),
            tz_offset_ms=_parse_int(f, "tzoffset"),
            last_successful_sync_precision_ns=_parse_int(f, "lastSuccessfulSyncPrecision"),
            source=source,
        )


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_UINT_RE = re.compile(r"\+?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


def _parse_bool(f: Mapping[str, str], name: str) -> bool:
    if name not in f:
        return False
    v = f[name]
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{v}": invalid syntax')


def _parse_int(f: Mapping[str, str], name: str, unsigned: bool = False) -> int:
    if name not in f:
        return 0
    v = f[name]
    if not (_UINT_RE if unsigned else _INT_RE).match(v):
        kind = "ParseUint" if unsigned else "ParseInt"
        raise ValueError(f'strconv.{kind}: parsing "{v}": invalid syntax')
    n = int(v)
    lo, hi = (0, 2**64 - 1) if unsigned else (-(2**63), 2**63 - 1)
    if not lo <= n <= hi:
        raise ValueError(f'strconv.ParseInt: parsing "{v}": value out of range')
    return n


def _parse_f32(f: Mapping[str, str], name: str) -> float:
    if name not in f:
        return 0.0
    v = f[name]
    if not _FLOAT_RE.match(v):
        raise ValueError(f'strconv.ParseFloat: parsing "{v}": invalid syntax')
    x = f32(float(v)) if abs(float(v)) < 3.5e38 else math.inf
    if math.isinf(x):
        raise ValueError(f'strconv.ParseFloat: parsing "{v}": value out of range')
    return x


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
        lat = _coordinate(self.latitude)
        s(self, "latitude", lat)
        s(self, "longitude", _coordinate(self.longitude))
        s(self, "valid", self.country != "")
        s(self, "cos_lat", math.cos(f32(lat * _DEG2RAD_F32)))
        s(self, "geo_key", int.from_bytes(struct.pack("<ff", lat, self.longitude), "little"))


@dataclass(slots=True)
class Chosen:
    """A selected mirror, with the per-request values the renderers serialise (spec §7)."""

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


# ---------------------------------------------------------------------------------------------
# Geography


def distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km with Go's mixed float32/float64 precision (spec §8.9)."""
    lat1, lon1, lat2, lon2 = f32(lat1), f32(lon1), f32(lat2), f32(lon2)
    d_lat = f32(f32(lat2 - lat1) * _DEG2RAD_F32) * 0.5
    d_lon = f32(f32(lon2 - lon1) * _DEG2RAD_F32) * 0.5
    s_lat = math.sin(d_lat)
    s_lon = math.sin(d_lon)
    a = s_lat * s_lat + math.cos(f32(lat1 * _DEG2RAD_F32)) * math.cos(f32(lat2 * _DEG2RAD_F32)) * s_lon * s_lon
    c = 2 * math.atan2(math.sqrt(a), math.sqrt(1 - a))
    return f32(_EARTH_RADIUS_KM * f32(c))


def _distances(client: ClientLocation, cands: Sequence[Candidate]) -> list[float]:
    """:func:`distance` from the client to every candidate, rounding whole columns at once."""
    n = len(cands)
    if n == 0:
        return []
    la1 = client.latitude
    lo1 = client.longitude
    diffs = _f32_many([c.latitude - la1 for c in cands] + [c.longitude - lo1 for c in cands])
    k = _DEG2RAD_F32
    halves = _f32_many([d * k for d in diffs])  # dLat then dLon, float32
    sin = math.sin
    sqrt = math.sqrt
    atan2 = math.atan2
    ccos = client.cos_lat
    cs = []
    for i in range(n):
        s1 = sin(halves[i] * 0.5)
        s2 = sin(halves[n + i] * 0.5)
        a = s1 * s1 + ccos * cands[i].cos_lat * s2 * s2
        cs.append(2 * atan2(sqrt(a), sqrt(1 - a)))
    r = _EARTH_RADIUS_KM
    return _f32_many([r * c for c in _f32_many(cs)])


def _client_distances(client: ClientLocation, candidates: Sequence[tuple[Candidate, Any]]) -> list[float]:
    """Distances from the client to every candidate, from each candidate's memo when possible."""
    key = client.geo_key
    dists: list[Any] = [c.dist_memo.get(key) for c, _ in candidates]
    if None in dists:
        missing = [i for i, d in enumerate(dists) if d is None]
        todo = [candidates[i][0] for i in missing]
        for i, cand, d in zip(missing, todo, _distances(client, todo), strict=True):
            dists[i] = d
            memo = cand.dist_memo
            if len(memo) >= _DIST_MEMO_MAX:
                memo.clear()
            memo[key] = d
    return dists


def is_primary_country(client: ClientLocation, countries: Sequence[str]) -> bool:
    """The client's country is the first entry of the mirror's list (false for invalid clients)."""
    return client.valid and len(countries) > 0 and countries[0] == client.country


def is_additional_country(client: ClientLocation, countries: Sequence[str]) -> bool:
    """The client's country is a non-first entry of the mirror's list."""
    return client.valid and client.country in countries[1:]


# ---------------------------------------------------------------------------------------------
# Selection


def _outdated_rule(file_path: str, allow_outdated: Iterable[Any]) -> int | None:
    """Maximum outdatedness in ns from the first matching AllowOutdatedFiles rule, or None.

    Rules are ``(prefix, minutes)`` pairs or config objects with ``Prefix`` and ``Minutes``.
    """
    for rule in allow_outdated:
        if isinstance(rule, tuple | list):
            prefix, minutes = rule
        else:
            prefix, minutes = rule.Prefix, rule.Minutes
        if file_path.startswith(prefix):
            return int(minutes) * 60_000_000_000
    return None


def select_mirrors(
    file_path: str,
    local_size: int,
    local_mod_time_ns: int | None,
    candidates: Sequence[tuple[Candidate, MirrorFile | None]],
    client: ClientLocation,
    *,
    secure: Secure = Secure.UNDEFINED,
    for_mirrorlist: bool = False,
    weight_distribution_range: float = 1.5,
    allow_outdated: Sequence[Any] = (),
    fix_timezone_offsets: bool = False,
    rng: random.Random,
) -> Selection:
    """Filter, score, weight and order the candidate mirrors of one file (spec §8.1, §8.3–§8.6).

    ``candidates`` are the members of ``FILEMIRRORS_<path>`` in Redis order, each with the
    mirror's ``FILEINFO`` (None when that hash does not exist).  ``local_mod_time_ns`` is the
    file's modification instant in Unix nanoseconds, None for Go's zero time (file unknown).
    """
    if local_mod_time_ns is None:
        return Selection([], [], ERR_MODTIME_ZERO)

    valid = client.valid
    dists = _client_distances(client, candidates) if valid else [0.0] * len(candidates)

    max_outdated = _outdated_rule(file_path, allow_outdated) if allow_outdated else None
    compare_size = max_outdated is None
    if max_outdated is None:
        max_outdated = 0
    local_ns = local_mod_time_ns
    c_country = client.country
    c_continent = client.continent
    c_asn = client.asnum
    proto_index = int(secure)

    excluded: list[Excluded] = []
    accepted: list[tuple[Candidate, str, float]] = []
    add = accepted.append

    for (cand, mfile), dist in zip(candidates, dists, strict=True):
        url, reason = cand.verdicts[proto_index]
        if reason is None:
            if mfile is None:
                # No FILEINFO hash although the mirror is listed in FILEMIRRORS: Go reads it as
                # size 0 / zero time, and would redirect to it whenever the size check is skipped
                # (AllowOutdatedFiles) or the local file is empty.  It is a race with a scan that
                # just removed the file, so we never choose such a mirror.
                reason = "File size mismatch"
            elif compare_size and mfile.size != local_size:
                reason = "File size mismatch"
            else:
                m = mfile.mod_time_ns
                if m is not None:  # Go's zero time: not compared
                    if fix_timezone_offsets:
                        m += cand.tz_offset_ns
                    if m != local_ns:
                        p = cand.last_successful_sync_precision_ns
                        if p > 0:  # Go's Time.Truncate counts from year 1, not from 1970
                            delta = (local_ns - (local_ns + _ZERO_TIME_TO_UNIX_NS) % p) - (
                                m - (m + _ZERO_TIME_TO_UNIX_NS) % p
                            )
                        else:
                            delta = local_ns - m
                        if delta < 0 or delta > max_outdated:
                            reason = f"Mod time mismatch (diff: {go_duration(delta)})"
            if reason is None:
                if not cand.restricted:
                    add((cand, url, dist))
                    continue
                if cand.continent_only and (not valid or c_continent != cand.continent_code):
                    reason = "Continent only"
                elif cand.country_only and (not valid or c_country not in cand.country_set):
                    reason = "Country only"
                elif cand.as_only and (not valid or c_asn != cand.asnum):
                    reason = "AS only"
                elif valid and c_country in cand.excluded_country_set:
                    reason = "User's country restriction"
                else:
                    add((cand, url, dist))
                    continue
        excluded.append(Excluded(cand, url, reason, dist))

    n = len(accepted)
    if not valid:
        # §8.4: uniform random order; sample() of the first 5 is a partial Fisher-Yates shuffle,
        # identical in distribution to shuffling everything and truncating.  Distances are 0.
        if for_mirrorlist:
            idx = list(range(n))
            rng.shuffle(idx)
        else:
            idx = rng.sample(range(n), 5) if n > 5 else rng.sample(range(n), n)
        return Selection([Chosen(accepted[j][0], accepted[j][1]) for j in idx], excluded)

    acc_dist = [a[2] for a in accepted]
    closest = min(acc_dist) if n else 0.0
    farthest = max(acc_dist) if n else 0.0  # Go starts it at 0; distances are never negative

    # §8.5 scoring, float32 where Go uses float32.
    closest_out = closest
    if closest == 0:
        closest = _SMALLEST_F32
    base = int(farthest)
    base_f = float(base)  # float32(baseScore): exact for any realistic distance
    half_base = base // 2
    limit = f32(closest * f32(weight_distribution_range))
    additional_bonus = int(f32(base_f - closest))
    scores: list[int] = []
    weights: dict[int, int] = {}  # index -> weight, for the weighted mirrors only
    pool: list[int] = []  # indexes of the weighted mirrors
    total = 0
    j = -1
    for cand, _, d in accepted:
        j += 1
        cs = base - int(d) + 1
        if d <= limit:
            s = f32(base_f - d)
            if cand.primary_country != c_country:
                s = f32(s / 2)
            cs += int(s)
        elif cand.primary_country == c_country:
            cs += int(f32(base_f - f32(d * 5)))
        elif c_country in cand.country_set:  # additional: listed, but not first
            cs += additional_bonus
        if cand.asnum == c_asn:
            cs += half_base
        if cand.score:
            x = cs + cs * cand.score_factor + 0.5
            cs = int(x) if x > 1 else 1
        elif cs < 1:  # x = cs + 0.5, so int(max(x, 1)) is cs, or 1
            cs = 1
        scores.append(cs)
        if cs > base:
            w = cs - base
            weights[j] = w
            total += w
            pool.append(j)
    selected = len(pool)

    if selected > 1 and not for_mirrorlist:
        # Draw without replacement, proportionally to weight.  Only the first min(5, selected)
        # draws survive the truncation, so stop there (same distribution as drawing them all),
        # and the rest of the list is never returned, so it need not be sorted.
        pool.sort(key=scores.__getitem__, reverse=True)
        rest = total
        out: list[Chosen] = []
        for _ in range(5 if selected > 5 else selected):
            rv = rng.randrange(rest)
            acc = 0
            k = 0
            j = pool[0]
            for k in range(len(pool)):  # noqa: B007 - k is the pick, used below
                j = pool[k]
                acc += weights[j]
                if acc > rv:
                    break
            del pool[k]
            w = weights[j]
            rest -= w
            cand, url, d = accepted[j]
            out.append(Chosen(cand, url, d, scores[j], f32(w * 100 / total)))
        return Selection(out, excluded, None, closest_out, farthest)

    order = sorted(range(n), key=scores.__getitem__, reverse=True)  # stable, descending
    result = [Chosen(*accepted[j], scores[j]) for j in order]
    if selected > 1:  # mirrorlist: order unchanged, weights as percentages, no truncation
        for k in range(selected):  # the weighted mirrors are exactly the first `selected`
            result[k].weight = f32(weights[order[k]] * 100 / total)
    elif selected == 1:
        result[0].weight = 100.0
    return Selection(result, excluded, None, closest_out, farthest)


# ---------------------------------------------------------------------------------------------
# The redirect fast path: the same decisions as select_mirrors, split into what depends only on the
# file, what depends only on the client, and the small part that depends on both.
#
# Why: a realistic request mix (thousands of files, Zipf popularity, clients from many places)
# gives too many distinct (file, client location) pairs for a memo of whole selections, and a full
# select_mirrors costs ~60 us for 50 mirrors.  But §8.3 splits cleanly: steps 1-3 (enabled, scheme,
# file copy) depend only on the file and the secure option; steps 4-7 (restrictions) and the
# distance only on the client.  And in §8.5 a mirror's ComputedScore depends on the accepted set
# only through `closest` and `farthest`; so, for one client location, the weighted mirrors for a
# given (closest, farthest) can be listed once and each request only intersects that short list
# with the file's eligible mirrors.  Everything is exact: same pool, same order, same rng calls.


@dataclass(slots=True, eq=False)
class FilePlan:
    """§8.3 steps 1–3 for one file and secure option: the mirrors whose scheme, state and copy
    of the file are good, as ``candidate -> (position in the file's list, AbsoluteURL)``.

    ``error`` is :data:`ERR_MODTIME_ZERO` for an unknown file (nothing is eligible then).
    ``extra`` is free for the caller (e.g. pre-rendered header bytes per candidate).
    """

    eligible: dict[Candidate, tuple[int, str]]
    error: str | None = None
    extra: dict[Any, Any] = field(default_factory=dict)


def plan_file(
    file_path: str,
    local_size: int,
    local_mod_time_ns: int | None,
    candidates: Sequence[tuple[Candidate, MirrorFile | None]],
    *,
    secure: Secure = Secure.UNDEFINED,
    allow_outdated: Sequence[Any] = (),
    fix_timezone_offsets: bool = False,
) -> FilePlan:
    """The file half of the filter (same checks and order as :func:`select_mirrors`)."""
    if local_mod_time_ns is None:
        return FilePlan({}, ERR_MODTIME_ZERO)
    max_outdated = _outdated_rule(file_path, allow_outdated) if allow_outdated else None
    compare_size = max_outdated is None
    if max_outdated is None:
        max_outdated = 0
    local_ns = local_mod_time_ns
    proto_index = int(secure)
    eligible: dict[Candidate, tuple[int, str]] = {}
    for pos, (cand, mfile) in enumerate(candidates):
        url, reason = cand.verdicts[proto_index]
        if reason is not None or mfile is None:
            continue
        if compare_size and mfile.size != local_size:
            continue
        m = mfile.mod_time_ns
        if m is not None:
            if fix_timezone_offsets:
                m += cand.tz_offset_ns
            if m != local_ns:
                p = cand.last_successful_sync_precision_ns
                if p > 0:
                    delta = (local_ns - (local_ns + _ZERO_TIME_TO_UNIX_NS) % p) - (
                        m - (m + _ZERO_TIME_TO_UNIX_NS) % p
                    )
                else:
                    delta = local_ns - m
                if delta < 0 or delta > max_outdated:
                    continue
        eligible[cand] = (pos, url)
    return FilePlan(eligible)


def _location_ok(cand: Candidate, client: ClientLocation) -> bool:
    """§8.3 steps 4–7 for a valid client."""
    if not cand.restricted:
        return True
    if cand.continent_only and client.continent != cand.continent_code:
        return False
    if cand.country_only and client.country not in cand.country_set:
        return False
    if cand.as_only and client.asnum != cand.asnum:
        return False
    return client.country not in cand.excluded_country_set


#: Weighted-mirror tables kept per location plan (one per distinct (closest, farthest, range)).
_TABLES_MAX = 256


class LocationPlan:
    """The client half for one *valid* client location and one set of mirror records: the mirrors
    that pass §8.3 steps 4–7, sorted by distance, and the weighted-mirror tables derived from them.

    Build it from *all* current candidates (the same objects the file plans hold); it is only
    valid while those records are.
    """

    __slots__ = ("client", "by_distance", "_tables")

    def __init__(self, client: ClientLocation, candidates: Iterable[Candidate]) -> None:
        if not client.valid:
            raise ValueError("a location plan needs a valid client location")
        self.client = client
        ok = [c for c in candidates if _location_ok(c, client)]
        dists = _client_distances(client, [(c, None) for c in ok])
        order = sorted(range(len(ok)), key=dists.__getitem__)
        #: (distance, candidate), nearest first.
        self.by_distance: list[tuple[float, Candidate]] = [(dists[i], ok[i]) for i in order]
        self._tables: dict[tuple[float, float, float], list[tuple[Candidate, float, int]]] = {}

    def weighted(self, closest: float, farthest: float, weight_distribution_range: float
                 ) -> list[tuple[Candidate, float, int]]:
        """(candidate, distance, ComputedScore) of every mirror of this plan whose score exceeds
        ``int(farthest)`` when the accepted set has these extremes (§8.5, Go's arithmetic)."""
        key = (closest, farthest, weight_distribution_range)
        table = self._tables.get(key)
        if table is not None:
            return table
        c_country = self.client.country
        c_asn = self.client.asnum
        if closest == 0:
            closest = _SMALLEST_F32
        base = int(farthest)
        base_f = float(base)
        half_base = base // 2
        limit = f32(closest * f32(weight_distribution_range))
        additional_bonus = int(f32(base_f - closest))
        table = []
        for d, cand in self.by_distance:
            cs = base - int(d) + 1
            if d <= limit:
                s = f32(base_f - d)
                if cand.primary_country != c_country:
                    s = f32(s / 2)
                cs += int(s)
            elif cand.primary_country == c_country:
                cs += int(f32(base_f - f32(d * 5)))
            elif c_country in cand.country_set:
                cs += additional_bonus
            if cand.asnum == c_asn:
                cs += half_base
            if cand.score:
                x = cs + cs * cand.score_factor + 0.5
                cs = int(x) if x > 1 else 1
            elif cs < 1:
                cs = 1
            if cs > base:
                table.append((cand, d, cs))
        if len(self._tables) >= _TABLES_MAX:
            self._tables.clear()
        self._tables[key] = table
        return table


@dataclass(slots=True)
class RedirectPool:
    """The weighted mirrors of one (file, client) in :func:`select_mirrors`' draw order (score
    descending, then file order): ``items`` are (chosen, weight), each :class:`Chosen` already
    carrying its AbsoluteURL, distance, score and percentage weight.  The Chosen objects are
    shared by every draw from this pool: treat them as read-only."""

    items: list[tuple[Chosen, int]]
    total: int


def redirect_pool(plan: FilePlan, loc: LocationPlan, weight_distribution_range: float = 1.5
                  ) -> RedirectPool | None:
    """The weighted pool a redirect draws from, or None when fewer than two mirrors get a weight
    (or none is accepted): :func:`select_mirrors` must then give the (unweighted) sorted list."""
    eligible = plan.eligible
    if not eligible:
        return None
    by_distance = loc.by_distance
    for d, cand in by_distance:
        if cand in eligible:
            closest = d
            break
    else:
        return None
    for k in range(len(by_distance) - 1, -1, -1):
        d, cand = by_distance[k]
        if cand in eligible:
            farthest = d
            break
    base = int(farthest)
    items = []
    for cand, d, cs in loc.weighted(closest, farthest, weight_distribution_range):
        e = eligible.get(cand)
        if e is not None:
            items.append((-cs, e[0], cand, e[1], d))
    if len(items) < 2:
        return None
    items.sort()  # (-score, position) are unique: the candidate is never compared
    total = -sum(it[0] for it in items) - base * len(items)
    return RedirectPool([(Chosen(cand, url, d, -ncs, f32((-ncs - base) * 100 / total)), -ncs - base)
                         for ncs, _, cand, url, d in items], total)


def _below(rng: random.Random) -> Any:
    """``rng.randrange(n)`` for n > 0 without its argument checks: CPython's randrange(n) is
    ``_randbelow(n)``, so the same numbers come out (falls back to randrange elsewhere)."""
    below = getattr(rng, "_randbelow", None)
    return below if below is not None else rng.randrange


def draw_redirect(pool: RedirectPool, rng: random.Random) -> list[Chosen]:
    """§8.6 for a redirect: up to 5 draws without replacement, proportional to weight — the same
    rng calls as :func:`select_mirrors`, so a seeded rng gives the same list."""
    items = list(pool.items)
    rest = pool.total
    below = _below(rng)
    out = []
    for _ in range(5 if len(items) > 5 else len(items)):
        rv = below(rest)
        acc = 0
        k = 0
        for k in range(len(items)):  # noqa: B007 - k is the pick
            acc += items[k][1]
            if acc > rv:
                break
        ch, w = items.pop(k)
        rest -= w
        out.append(ch)
    return out


# ---------------------------------------------------------------------------------------------
# Fallbacks and rank order (spec §8.7, §8.8)


@dataclass(slots=True, frozen=True)
class FallbackSpec:
    """One ``Fallbacks`` config entry (URL already normalised with a trailing ``/``)."""

    url: str
    country_code: str = ""
    continent_code: str = ""


def _fallback_fields(fb: Any) -> tuple[str, str, str]:
    if isinstance(fb, tuple | list):
        url, cc, cont = (list(fb) + ["", ""])[:3]
        return str(url), str(cc), str(cont)
    url = getattr(fb, "url", None)
    if url is None:
        url = getattr(fb, "URL")  # noqa: B009 - Go-style config objects
    cc = getattr(fb, "country_code", None)
    if cc is None:
        cc = getattr(fb, "CountryCode", "")
    cont = getattr(fb, "continent_code", None)
    if cont is None:
        cont = getattr(fb, "ContinentCode", "")
    return str(url), str(cc or ""), str(cont or "")


def _rank_key(client: ClientLocation, cand: Candidate, dist: float) -> tuple[int, int, int, float]:
    asn = 0 if cand.asnum == client.asnum else 1
    country = 0 if (not client.country or client.country in cand.country_set) else 1
    continent = 0 if (not client.continent or cand.continent_code == client.continent) else 1
    return (asn, country, continent, dist)


def rank_sort(items: list[Chosen], client: ClientLocation, rng: random.Random) -> list[Chosen]:
    """Go's ``ByRank`` order: ASN, country, continent, distance for a valid client; else random.

    Sorts ``items`` in place (stable) and returns it.
    """
    if client.valid:
        items.sort(key=lambda ch: _rank_key(client, ch.candidate, ch.distance))
    else:
        rng.shuffle(items)
    return items


def fallback_choices(
    fallbacks: Sequence[Any], client: ClientLocation, secure: Secure, rng: random.Random
) -> list[Chosen]:
    """The ``Fallbacks`` pseudo-mirrors, rank-sorted, for when no real mirror can be used.

    Each entry is a :class:`FallbackSpec`, a ``(url, country, continent)`` tuple, or any object
    with ``url``/``URL``, ``country_code``/``CountryCode``, ``continent_code``/``ContinentCode``.
    Go appends these to a partial, unfiltered mirror list after a network error (http §17.1);
    following the spec's recommendation we return the fallbacks alone, and the caller should
    discard any partial list.
    """
    out: list[Chosen] = []
    for i, fb in enumerate(fallbacks):
        url, cc, cont = _fallback_fields(fb)
        cc = cc.upper()
        cand = Candidate(
            id=-i, name=f"fallback{i}", http_url=url, country_codes=cc, continent_code=cont.upper()
        )
        # The single-entry country list may be empty (Go: []string{""}).
        object.__setattr__(cand, "country_list", (cc,))
        object.__setattr__(cand, "country_set", frozenset((cc,)))
        object.__setattr__(cand, "primary_country", cc)
        if url.startswith(("http://", "https://")):
            absolute = url
        elif secure == Secure.WITHOUT_TLS:
            absolute = "http://" + url
        else:
            absolute = "https://" + url
        out.append(Chosen(cand, absolute))
    return rank_sort(out, client, rng)


def sort_by_exclude_reason(excluded: list[Excluded]) -> list[Excluded]:
    """Go's ``ByExcludeReason`` (byte order, used by the mirror-list page); sorts in place."""
    excluded.sort(key=lambda e: e.reason.encode("utf-8"))
    return excluded
