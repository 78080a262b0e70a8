"""The redirect fast path: the same decisions as :func:`~mirrorbits.selection.algorithm.select_mirrors`,
split into what depends only on the file, what depends only on the client, and the small part that
depends on both.

Why: a realistic request mix (thousands of files, Zipf popularity, clients from many places) gives
too many distinct (file, client location) pairs for a memo of whole selections, and a full
``select_mirrors`` costs ~60 us for 50 mirrors.  But the filter splits cleanly: enabled, scheme and
copy of the file depend only on the file and the secure option (:class:`FilePlan`); the
restrictions and the distance only on the client (:class:`LocationPlan`).  And a mirror's
ComputedScore depends on the accepted set only through ``closest`` and ``farthest``; so, for one
client location, the weighted mirrors for a given (closest, farthest) can be listed once and each
request only intersects that short list with the file's eligible mirrors.  Everything is exact:
same pool, same order, same rng calls.
"""

from __future__ import annotations

import random
import struct
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from mirrorbits.ipfamily import Family
from mirrorbits.selection.algorithm import OutdatedRule, computed_scores, mtime_delta, outdated_rule
from mirrorbits.selection.distance import client_distances
from mirrorbits.selection.records import (
    ERR_MODTIME_ZERO,
    Candidate,
    Chosen,
    ClientLocation,
    MirrorFile,
    Secure,
    verdict_index,
)

__all__ = ["FilePlan", "LocationPlan", "RedirectPool", "document_order", "draw_redirect", "plan_file",
           "redirect_order", "redirect_pool"]


@dataclass(slots=True, eq=False)
class FilePlan:
    """The file half of the filter for one file and secure option (enabled, scheme, copy of the file): the mirrors whose scheme, state and copy
    of the file are good, as ``candidate -> (position in the file's list, AbsoluteURL)``.

    ``error`` is :data:`ERR_MODTIME_ZERO` for an unknown file (nothing is eligible then).
    ``extra`` is free for the caller (e.g. pre-rendered header bytes per candidate).
    """

    eligible: dict[Candidate, tuple[int, str]]
    error: str | None = None
    extra: dict[Candidate, tuple[bytes, bytes, bytes, bytes, bytes]] = field(default_factory=dict)
    #: The client's family when no mirror carrying the file answers over it: the eligible mirrors
    #: are then ANY's (ANY, false, otherwise).
    family_fallback: Family = Family.ANY


#: The (position, mirror URL) values of the file plans, shared: a view of ~100,000 planned paths
#: with ~35 mirrors each would otherwise hold millions of equal 2-tuples (~200 MB).  The URL is
#: the mirror's (the same object for every file), so there are at most a few per mirror and
#: position.
_ELIGIBLE_VALUES: dict[tuple[int, str], tuple[int, str]] = {}
_ELIGIBLE_VALUES_MAX = 65536


def plan_file(
    file_path: str,
    local_size: int,
    local_mod_time_ns: int | None,
    candidates: Sequence[tuple[Candidate, MirrorFile | None]],
    *,
    secure: Secure = Secure.UNDEFINED,
    allow_outdated: Sequence[OutdatedRule] = (),
    fix_timezone_offsets: bool = False,
    family: Family = Family.ANY,
) -> FilePlan:
    """The file half of the filter (same checks and order as :func:`select_mirrors`).

    For a client ``family`` whose mirrors do not carry the file, the plan is the one for ANY and
    says so (``family_fallback``), as :func:`select_mirrors` falls back."""
    if local_mod_time_ns is None:
        return FilePlan({}, ERR_MODTIME_ZERO)
    options = (file_path, local_size, local_mod_time_ns, candidates, allow_outdated, fix_timezone_offsets)
    eligible = _eligible(*options, verdict_index(secure, family))
    if eligible or family == Family.ANY:
        return FilePlan(eligible)
    eligible = _eligible(*options, verdict_index(secure, Family.ANY))
    return FilePlan(eligible, family_fallback=family if eligible else Family.ANY)


def _eligible(
    file_path: str,
    local_size: int,
    local_mod_time_ns: int,
    candidates: Sequence[tuple[Candidate, MirrorFile | None]],
    allow_outdated: Sequence[OutdatedRule],
    fix_timezone_offsets: bool,
    proto_index: int,
) -> dict[Candidate, tuple[int, str]]:
    """:func:`plan_file`'s eligible mirrors for one column of the candidates' verdicts."""
    max_outdated = outdated_rule(file_path, allow_outdated) if allow_outdated else None
    compare_size = max_outdated is None
    if max_outdated is None:
        max_outdated = 0
    local_ns = local_mod_time_ns
    eligible: dict[Candidate, tuple[int, str]] = {}
    for pos, (cand, mfile) in enumerate(candidates):
        url, reason = cand.verdicts[proto_index]
        if reason is not None or mfile is None:
            continue
        if compare_size and mfile.size != local_size:
            continue
        m = mfile.mod_time_ns
        if m is not None and (m != local_ns or fix_timezone_offsets):
            delta = mtime_delta(local_ns, m, cand, fix_timezone_offsets)
            if delta < 0 or delta > max_outdated:
                continue
        value = (pos, url)
        eligible[cand] = _ELIGIBLE_VALUES.setdefault(value, value)
    if len(_ELIGIBLE_VALUES) > _ELIGIBLE_VALUES_MAX:
        _ELIGIBLE_VALUES.clear()
    return eligible


def _location_ok(cand: Candidate, client: ClientLocation) -> bool:
    """The client half of the filter (continent, country, AS, excluded countries) for a valid client."""
    if not cand.restricted:
        return True
    if cand.continent_only and client.continent != cand.continent_code:
        return False
    if cand.country_only and client.country not in cand.country_set:
        return False
    if cand.as_only and client.asnum != cand.asnum:
        return False
    return client.country not in cand.excluded_country_set


#: (candidate, distance, ComputedScore) rows of a location plan's score tables.
_Scored = list[tuple[Candidate, float, int]]

#: Score tables kept per location plan (one per distinct (closest, farthest, range)).
_TABLES_MAX = 256


class LocationPlan:
    """The client half for one *valid* client location and one set of mirror records: the mirrors
    that pass the client half of the filter, sorted by distance, and the score tables derived from them.

    Build it from *all* current candidates (the same objects the file plans hold); it is only
    valid while those records are.
    """

    __slots__ = ("client", "by_distance", "_tables")

    def __init__(self, client: ClientLocation, candidates: Iterable[Candidate]) -> None:
        if not client.valid:
            raise ValueError("a location plan needs a valid client location")
        self.client = client
        ok = [c for c in candidates if _location_ok(c, client)]
        dists = client_distances(client, [(c, None) for c in ok])
        order = sorted(range(len(ok)), key=dists.__getitem__)
        #: (distance, candidate), nearest first.
        self.by_distance: list[tuple[float, Candidate]] = [(dists[i], ok[i]) for i in order]
        self._tables: dict[tuple[float, float, float], tuple[_Scored, _Scored]] = {}

    def _scored(self, closest: float, farthest: float, weight_distribution_range: float
                ) -> tuple[_Scored, _Scored]:
        """(every mirror of this plan, the weighted ones) as (candidate, distance, ComputedScore)
        when the accepted set has these extremes (Go's arithmetic)."""
        key = (closest, farthest, weight_distribution_range)
        tables = self._tables.get(key)
        if tables is not None:
            return tables
        by_distance = self.by_distance
        dists = [d for d, _ in by_distance]
        scores = computed_scores(self.client, [c for _, c in by_distance], dists, closest, farthest,
                                 weight_distribution_range)
        base = int(farthest)
        every = [(cand, d, cs) for (d, cand), cs in zip(by_distance, scores, strict=True)]
        tables = (every, [t for t in every if t[2] > base])
        if len(self._tables) >= _TABLES_MAX:
            self._tables.clear()
        self._tables[key] = tables
        return tables


def _accepted_tables(plan: FilePlan, loc: LocationPlan, weight_distribution_range: float
                     ) -> tuple[float, _Scored, _Scored] | None:
    """(farthest distance, every mirror, the weighted ones) of the location plan's score tables
    for the extremes of the mirrors accepted for this (file, client) (see
    :meth:`LocationPlan._scored`), or None when none is accepted.

    Why one function for the extremes and the look-up: it runs for every redirect."""
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
        farthest, cand = by_distance[k]
        if cand in eligible:
            break
    tables = loc._tables.get((closest, farthest, weight_distribution_range))
    if tables is None:
        tables = loc._scored(closest, farthest, weight_distribution_range)
    return farthest, tables[0], tables[1]


@dataclass(slots=True)
class RedirectPool:
    """The weighted mirrors of one (file, client) in :func:`select_mirrors`' draw order (score
    descending, then file order): ``items`` are (-ComputedScore, position in the file's list,
    candidate, AbsoluteURL, distance), ``weights`` their draw weights (score minus ``base``),
    ``total`` the sum of the weights, ``ends`` the running sums of the weights.

    Why plain tuples: a pool holds every weighted mirror (tens) but a redirect draws at most
    five, so the :class:`Chosen` records are made for the drawn ones only.  :func:`draw_redirect`
    only reads a pool.
    """

    items: list[tuple[int, int, Candidate, str, float]]
    weights: list[int]
    total: int
    ends: list[int] = field(default_factory=list)


def redirect_pool(plan: FilePlan, loc: LocationPlan, weight_distribution_range: float = 1.5
                  ) -> RedirectPool | None:
    """The weighted pool a redirect draws from, or None when fewer than two mirrors get a weight
    (or none is accepted): :func:`select_mirrors` must then give the (unweighted) sorted list."""
    accepted = _accepted_tables(plan, loc, weight_distribution_range)
    if accepted is None:
        return None
    farthest, _, weighted = accepted
    eligible = plan.eligible
    base = int(farthest)
    items = []
    get = eligible.get
    for cand, d, cs in weighted:
        e = get(cand)
        if e is not None:
            items.append((-cs, e[0], cand, e[1], d))
    if len(items) < 2:
        return None
    items.sort()  # (-score, position) are unique: the candidate is never compared
    weights = [-it[0] - base for it in items]
    ends = list(accumulate(weights))
    return RedirectPool(items, weights, ends[-1], ends)


def _below(rng: random.Random) -> Callable[[int], int]:
    """``rng.randrange(n)`` for n > 0 without its argument checks: CPython's randrange(n) is
    ``_randbelow(n)``, so the same numbers come out (falls back to randrange elsewhere)."""
    below = getattr(rng, "_randbelow", None)
    return below if below is not None else rng.randrange


#: Go's ``float32(x)`` for the draw's weights (always finite there), without a call of
#: :func:`~mirrorbits.gocompat.f32`.
_F32 = struct.Struct("<f")


def draw_redirect(pool: RedirectPool, rng: random.Random) -> list[Chosen]:
    """The redirect draw: up to 5 draws without replacement, proportional to weight — the same
    rng calls as :func:`select_mirrors`, so a seeded rng gives the same list.

    select_mirrors walks the running weights of the mirrors not drawn yet; here the pool's own
    running sums (``ends``) serve every draw: a number drawn below the remaining weight is
    moved past the spans of the mirrors already drawn (in pool order), which gives the same
    mirror, and the pool is left as it was."""
    items = pool.items
    weights = pool.weights
    ends = pool.ends
    total = pool.total
    rest = total
    below = _below(rng)
    pack = _F32.pack
    unpack = _F32.unpack
    taken: list[int] = []  # positions drawn so far, ascending
    out = []
    for _ in range(5 if len(items) > 5 else len(items)):
        x = below(rest)
        for t in taken:
            if x >= ends[t] - weights[t]:  # at or past the drawn mirror's span: skip it
                x += weights[t]
            else:
                break
        k = bisect_right(ends, x)
        insort(taken, k)
        w = weights[k]
        rest -= w
        ncs, _, cand, url, d = items[k]
        out.append(Chosen(cand, url, d, -ncs, unpack(pack(w * 100 / total))[0]))
    return out


def document_order(plan: FilePlan, loc: LocationPlan, drawn: Sequence[Chosen], limit: int,
                   weight_distribution_range: float = 1.5) -> list[Chosen]:
    """The mirrors a download document (Metalink, torrent web seeds) lists for this (file,
    client), up to ``limit``: the redirect's own list first (``drawn``: a :func:`draw_redirect`
    or, without a weighted pool, nothing), then every other accepted mirror in the mirror list's
    order (score descending, then the file's order), as :func:`select_mirrors` with
    ``for_mirrorlist`` ranks them.

    Why: the document must start with exactly what a redirect of this client would have chosen
    (priority 1 = the redirect's mirror), yet may list more mirrors than the redirect's five
    draws; the rest is ranked without a draw, from the same cached score tables."""
    out = list(drawn[:limit])
    if len(out) >= limit:
        return out
    accepted = _accepted_tables(plan, loc, weight_distribution_range)
    if accepted is None:
        return out
    eligible = plan.eligible
    taken = {ch.candidate for ch in out}
    items = []
    for cand, d, cs in accepted[1]:
        e = eligible.get(cand)
        if e is not None and cand not in taken:
            items.append((-cs, e[0], cand, e[1], d))
    items.sort()  # (-score, position) are unique: the candidate is never compared
    out.extend(Chosen(cand, url, d, -ncs) for ncs, _, cand, url, d in items[:limit - len(out)])
    return out


def redirect_order(plan: FilePlan, loc: LocationPlan, limit: int,
                   weight_distribution_range: float = 1.5) -> list[Chosen]:
    """:func:`select_mirrors`' redirect list for this (file, client) when :func:`redirect_pool`
    gives no pool (fewer than two mirrors get a weight, so there is no draw): the accepted mirrors
    by score descending, then the file's order, the one weighted mirror (when there is one, the
    first) at weight 100; up to ``limit``.  Empty when no mirror is accepted.

    Why: it is the same ranking as the mirror list's (:func:`document_order` without a draw),
    from the same cached score tables, instead of a whole :func:`select_mirrors`."""
    out = document_order(plan, loc, [], limit, weight_distribution_range)
    if out:
        accepted = _accepted_tables(plan, loc, weight_distribution_range)
        if accepted is not None and out[0].computed_score > int(accepted[0]):
            out[0].weight = 100.0
    return out
