"""The selection algorithm of the Go original: filter the mirrors of one file, score, weight and
order them; rank the ``Fallbacks`` when no mirror can be used.

Every decision is Go's, bit for bit, including its float32 arithmetic and its exclusion texts;
the redirect fast path (:mod:`~mirrorbits.selection.fastpath`) takes the same decisions through
:func:`computed_scores` and :func:`mtime_delta`, so the two cannot drift apart.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Protocol

from mirrorbits.gocompat import f32, format_duration
from mirrorbits.ipfamily import Family
from mirrorbits.model import Mirror
from mirrorbits.selection.distance import client_distances
from mirrorbits.selection.records import (
    ERR_MODTIME_ZERO,
    SMALLEST_F32,
    ZERO_TIME_TO_UNIX_NS,
    Candidate,
    Chosen,
    ClientLocation,
    Excluded,
    MirrorFile,
    Secure,
    Selection,
    verdict_index,
)

__all__ = ["FallbackEntry", "computed_scores", "fallback_choices", "mtime_delta", "rank_sort", "select_mirrors"]

#: ``AllowOutdatedFiles`` as the selection takes it: (path prefix, minutes).
OutdatedRule = tuple[str, int]


def outdated_rule(file_path: str, allow_outdated: Iterable[OutdatedRule]) -> int | None:
    """Maximum outdatedness in ns from the first matching AllowOutdatedFiles rule, or None."""
    for prefix, minutes in allow_outdated:
        if file_path.startswith(prefix):
            return int(minutes) * 60_000_000_000
    return None


def mtime_delta(local_ns: int, mirror_ns: int, cand: Candidate, fix_timezone_offsets: bool) -> int:
    """How much older the mirror's copy is than ours (ns), at the precision of the mirror's last
    scan: 0 means "same time".  Go's ``Time.Truncate`` counts from year 1, not from 1970."""
    if fix_timezone_offsets:
        mirror_ns += cand.tz_offset_ns
    if mirror_ns == local_ns:
        return 0
    p = cand.last_successful_sync_precision_ns
    if p > 0:
        return (local_ns - (local_ns + ZERO_TIME_TO_UNIX_NS) % p) - (mirror_ns - (mirror_ns + ZERO_TIME_TO_UNIX_NS) % p)
    return local_ns - mirror_ns


def computed_scores(client: ClientLocation, cands: Sequence[Candidate], dists: Sequence[float],
                    closest: float, farthest: float, weight_distribution_range: float) -> list[int]:
    """Go's ``ComputedScore`` of each candidate at its distance, once the accepted set's closest
    and farthest distances are known (float32 where Go uses float32).  A mirror gets a weight
    when its score exceeds ``int(farthest)``.

    One loop over the whole list with everything in locals: it runs per request on the
    ``?mirrorlist``/JSON path, where a call per mirror would double its cost."""
    if closest == 0:
        closest = SMALLEST_F32
    c_country = client.country
    c_asn = client.asnum
    base = int(farthest)
    base_f = float(base)  # float32(baseScore): exact for any realistic distance
    half_base = base // 2
    limit = f32(closest * f32(weight_distribution_range))
    additional_bonus = int(f32(base_f - closest))
    scores = []
    for cand, d in zip(cands, dists, strict=True):
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
    return scores


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
    allow_outdated: Sequence[OutdatedRule] = (),
    fix_timezone_offsets: bool = False,
    family: Family = Family.ANY,
    rng: random.Random,
) -> Selection:
    """Filter, score, weight and order the candidate mirrors of one file.

    ``candidates`` are the members of ``FILEMIRRORS_<path>`` in Redis order, each with the
    mirror's ``FILEINFO`` (None when that hash does not exist).  ``local_mod_time_ns`` is the
    file's modification instant in Unix nanoseconds, None for Go's zero time (file unknown).

    ``family`` (``SelectByIPFamily``) also excludes the mirrors that do not answer over the
    client's address family; when that leaves none, the choice is made as for ANY (a working
    redirect beats none) and the result says so (``family_fallback``).
    """
    if local_mod_time_ns is None:
        return Selection([], [], ERR_MODTIME_ZERO)
    options = (file_path, local_size, local_mod_time_ns, candidates, client, for_mirrorlist,
               weight_distribution_range, allow_outdated, fix_timezone_offsets, rng)
    if family == Family.ANY:
        return _select(*options, verdict_index(secure, family))
    sel = _select(*options, verdict_index(secure, family))
    if sel.selected:
        return sel
    fallback = _select(*options, verdict_index(secure, Family.ANY))
    if not fallback.selected:
        return sel  # no mirror either way: the reasons of the client's family
    fallback.family_fallback = family
    return fallback


def _select(
    file_path: str,
    local_size: int,
    local_mod_time_ns: int,
    candidates: Sequence[tuple[Candidate, MirrorFile | None]],
    client: ClientLocation,
    for_mirrorlist: bool,
    weight_distribution_range: float,
    allow_outdated: Sequence[OutdatedRule],
    fix_timezone_offsets: bool,
    rng: random.Random,
    proto_index: int,
) -> Selection:
    """:func:`select_mirrors` for one column of the candidates' verdicts."""

    valid = client.valid
    dists = client_distances(client, candidates) if valid else [0.0] * len(candidates)

    max_outdated = outdated_rule(file_path, allow_outdated) if allow_outdated else None
    compare_size = max_outdated is None
    if max_outdated is None:
        max_outdated = 0
    local_ns = local_mod_time_ns
    c_country = client.country
    c_continent = client.continent
    c_asn = client.asnum

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
            # Go's zero time is not compared; an identical time needs no arithmetic.
            elif mfile.mod_time_ns is not None and (mfile.mod_time_ns != local_ns or fix_timezone_offsets):
                delta = mtime_delta(local_ns, mfile.mod_time_ns, cand, fix_timezone_offsets)
                if delta < 0 or delta > max_outdated:
                    reason = f"Mod time mismatch (diff: {format_duration(delta)})"
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
        # Uniform random order; sample() of the first 5 is a partial Fisher-Yates shuffle,
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

    scores = computed_scores(client, [a[0] for a in accepted], acc_dist, closest, farthest,
                             weight_distribution_range)
    base = int(farthest)
    weights: dict[int, int] = {}  # index -> weight, for the weighted mirrors only
    pool: list[int] = []  # indexes of the weighted mirrors
    total = 0
    for j, cs in enumerate(scores):
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
        return Selection(out, excluded, None, closest, farthest)

    order = sorted(range(n), key=scores.__getitem__, reverse=True)  # stable, descending
    result = [Chosen(*accepted[j], scores[j]) for j in order]
    if selected > 1:  # mirrorlist: order unchanged, weights as percentages, no truncation
        for k in range(selected):  # the weighted mirrors are exactly the first `selected`
            result[k].weight = f32(weights[order[k]] * 100 / total)
    elif selected == 1:
        result[0].weight = 100.0
    return Selection(result, excluded, None, closest, farthest)


# ---------------------------------------------------------------------------------------------
# Fallbacks and rank order


class FallbackEntry(Protocol):
    """One ``Fallbacks`` entry of the configuration (:class:`mirrorbits.config.Fallback`)."""

    @property
    def URL(self) -> str: ...  # noqa: N802 - the configuration key

    @property
    def CountryCode(self) -> str: ...  # noqa: N802

    @property
    def ContinentCode(self) -> str: ...  # noqa: N802


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
    fallbacks: Sequence[FallbackEntry], client: ClientLocation, secure: Secure, rng: random.Random
) -> list[Chosen]:
    """The ``Fallbacks`` pseudo-mirrors, rank-sorted, for when no real mirror can be used.

    Go appends these to a partial, unfiltered mirror list after a network error; we return the
    fallbacks alone, and the caller discards any partial list.
    """
    out: list[Chosen] = []
    for i, fb in enumerate(fallbacks):
        url = fb.URL
        cc = (fb.CountryCode or "").upper()
        record = Mirror(id=-i, name=f"fallback{i}", http_url=url, country_codes=cc,
                        continent_code=(fb.ContinentCode or "").upper())
        cand = Candidate(record)
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
