"""Great-circle distances from the client to the mirrors, with Go's mixed float32/float64 precision.

Selection needs the distance to every candidate for every located request; the computation rounds
whole columns to float32 in one C call, and each candidate memoises its distance per client location
(bounded), so a popular location costs one dictionary read per mirror.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import cast

from mirrorbits.selection.records import DEG2RAD_F32, Candidate, ClientLocation, MirrorFile

__all__ = ["client_distances"]

_EARTH_RADIUS_KM = 6371.0
#: Distances memoised per candidate (one entry per distinct client location) before a reset.
_DIST_MEMO_MAX = 2048


def _f32_many(values: list[float]) -> list[float]:
    """Round a whole list to binary32 in one C call; much cheaper than one struct call each."""
    return array("f", values).tolist()


def _distances(client: ClientLocation, cands: Sequence[Candidate]) -> list[float]:
    """Go's great-circle distance (float32 where Go uses float32) from the client to every
    candidate, rounding whole columns at once."""
    n = len(cands)
    if n == 0:
        return []
    la1 = client.latitude
    lo1 = client.longitude
    diffs = _f32_many([c.latitude - la1 for c in cands] + [c.longitude - lo1 for c in cands])
    k = DEG2RAD_F32
    # dLat then dLon, float32, then halved in float32 as Go's ``dLat/2`` is (exact but for
    # subnormals, where halving a float32 rounds)
    halves = _f32_many([h * 0.5 for h in _f32_many([d * k for d in diffs])])
    sin = math.sin
    sqrt = math.sqrt
    atan2 = math.atan2
    ccos = client.cos_lat
    cs = []
    for i in range(n):
        s1 = sin(halves[i])
        s2 = sin(halves[n + i])
        a = s1 * s1 + ccos * cands[i].cos_lat * s2 * s2
        cs.append(2 * atan2(sqrt(a), sqrt(1 - a)))
    r = _EARTH_RADIUS_KM
    return _f32_many([r * c for c in _f32_many(cs)])


def client_distances(client: ClientLocation, candidates: Sequence[tuple[Candidate, MirrorFile | None]]
                     ) -> list[float]:
    """Distances from the client to every candidate, from each candidate's memo when possible."""
    key = client.geo_key
    known = [c.dist_memo.get(key) for c, _ in candidates]
    if None in known:
        missing = [i for i, d in enumerate(known) if d is None]
        todo = [candidates[i][0] for i in missing]
        for i, cand, d in zip(missing, todo, _distances(client, todo), strict=True):
            known[i] = d
            memo = cand.dist_memo
            if len(memo) >= _DIST_MEMO_MAX:
                memo.clear()
            memo[key] = d
    return cast("list[float]", known)  # every None was filled in above
