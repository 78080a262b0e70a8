"""The redirect fast path (FilePlan / LocationPlan / redirect_pool / draw_redirect) must decide
exactly as select_mirrors: same pool, same order, same weights, same rng calls.

Differential tests over the random worlds of test_selection_properties (hypothesis), plus a
realistic world (the benchmark's 60 mirrors) with many client locations.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from mirrorbits.ipfamily import FAMILIES, Family, FamilyHealth
from mirrorbits.model import PROTO_HTTP, PROTO_HTTPS, Mirror
from mirrorbits.selection import (
    Candidate,
    ClientLocation,
    LocationPlan,
    MirrorFile,
    Secure,
    document_order,
    draw_redirect,
    plan_file,
    redirect_pool,
    select_mirrors,
    verdict_index,
)
from tests.test_selection_properties import (
    LOCAL_MTIME,
    LOCAL_SIZE,
    PATH,
    SETTINGS,
    any_world,
)


def fast(world, client, opts, seed, *, extra=()):
    """The fast path, or None where the caller must use select_mirrors."""
    plan = plan_file(PATH, LOCAL_SIZE, LOCAL_MTIME, world, secure=opts["secure"],
                     allow_outdated=opts["allow_outdated"],
                     fix_timezone_offsets=opts["fix_timezone_offsets"])
    # The location plan sees every mirror record, also those that do not carry the file.
    loc = LocationPlan(client, [c for c, _ in world] + list(extra))
    pool = redirect_pool(plan, loc, opts["weight_distribution_range"])
    if pool is None:
        return None
    before = (list(pool.items), list(pool.weights), list(pool.ends), pool.total)
    chosen = draw_redirect(pool, random.Random(seed))
    # A draw only reads its pool: a second draw from it with the same seed is the same.
    assert (pool.items, pool.weights, pool.ends, pool.total) == before
    assert summary(draw_redirect(pool, random.Random(seed))) == summary(chosen)
    return chosen


def slow(world, client, opts, seed):
    return select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world, client, rng=random.Random(seed),
                          **opts)


def summary(chosen):
    return [(c.candidate.id, c.absolute_url, c.distance, c.computed_score, c.weight) for c in chosen]


@SETTINGS
@given(any_world, st.integers(0, 2**32))
def test_fast_path_equals_select_mirrors(w, seed):
    world, client, opts = w
    if not client.valid:
        return  # the fast path is for located clients only
    ref = slow(world, client, opts, seed)
    got = fast(world, client, opts, seed)
    weighted = [c for c in ref.selected if c.weight > 0]
    if got is None:
        # Only when select_mirrors gives no weighted draw (0 or 1 weighted mirror).
        assert len(weighted) <= 1
        return
    assert len(weighted) == len(ref.selected) >= 2
    assert summary(got) == summary(ref.selected)


@SETTINGS
@given(any_world, st.integers(0, 2**32), st.integers(1, 12))
def test_document_order_is_the_redirect_then_the_mirror_list(w, seed, limit):
    """A download document lists the redirect's own draw (same seed, same mirrors, same order),
    then the other accepted mirrors in the mirror list's order, up to the limit."""
    world, client, opts = w
    if not client.valid:
        return
    plan = plan_file(PATH, LOCAL_SIZE, LOCAL_MTIME, world, secure=opts["secure"],
                     allow_outdated=opts["allow_outdated"],
                     fix_timezone_offsets=opts["fix_timezone_offsets"])
    loc = LocationPlan(client, [c for c, _ in world])
    wdr = opts["weight_distribution_range"]
    pool = redirect_pool(plan, loc, wdr)
    drawn = draw_redirect(pool, random.Random(seed)) if pool is not None else []
    got = document_order(plan, loc, drawn, limit, wdr)
    redirect = slow(world, client, opts, seed).selected
    listing = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world, client, rng=random.Random(seed),
                             for_mirrorlist=True, **opts).selected
    ids = [c.candidate.id for c in got]
    # The first mirrors are exactly the redirect's list (its draw, or its sorted list).
    head = [c.candidate.id for c in redirect][:limit]
    assert ids[:len(head)] == head
    # Then the mirror list's order for the others, and every accepted mirror up to the limit.
    rest = [c.candidate.id for c in listing if c.candidate.id not in head]
    assert ids == (head + rest)[:limit]
    assert [c.absolute_url for c in got] == [
        {c.candidate.id: c.absolute_url for c in listing}[i] for i in ids]


@SETTINGS
@given(any_world, st.integers(0, 2**32))
def test_mirrors_that_do_not_carry_the_file_change_nothing(w, seed):
    """The location plan holds every mirror; one the file lacks must never leak into the pool."""
    world, client, opts = w
    if not client.valid or len(world) < 2:
        return
    outsider = [c for c, _ in world[:1]]
    rest = world[1:]
    ref = slow(rest, client, opts, seed)
    got = fast(rest, client, opts, seed, extra=outsider)
    if got is not None:
        assert summary(got) == summary(ref.selected)
        assert outsider[0].id not in {c.candidate.id for c in got}


def test_realistic_world_many_locations():
    """60 mirrors over the globe, partial ones, 300 client locations, several files: identical."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import world as bench_world

    rng = random.Random(7)
    cands = []
    for m in bench_world.build_mirrors():
        cands.append(Candidate(Mirror(
            id=m.id, name=m.name, http_url=m.http_url, enabled=True, http_up=True, https_up=m.id % 7 != 0,
            score=m.score, latitude=m.latitude, longitude=m.longitude, continent_code=m.continent_code,
            country_codes=m.country_codes, asnum=m.asnum, country_only=m.id % 11 == 0,
            excluded_country_codes="FR" if m.id % 13 == 0 else "")))
    sites = bench_world.SITES
    checked = fast_paths = 0
    for f in range(20):
        carried = [c for c in cands if rng.random() < (1.0 if c.id % 2 else 0.6)]
        world = [(c, MirrorFile(LOCAL_SIZE, LOCAL_MTIME if rng.random() < 0.95 else LOCAL_MTIME - 10**9))
                 for c in carried]
        for _ in range(15):
            _, cc, cont, lat, lon = rng.choice(sites)
            client = ClientLocation(cc, cont, rng.choice([0, 15169, 1299]), lat + rng.uniform(-2, 2),
                                    lon + rng.uniform(-2, 2))
            opts = dict(secure=rng.choice(list(Secure)), allow_outdated=(), fix_timezone_offsets=False,
                        weight_distribution_range=1.5)
            seed = rng.randrange(2**32)
            ref = slow(world, client, opts, seed)
            plan = plan_file(PATH, LOCAL_SIZE, LOCAL_MTIME, world, secure=opts["secure"])
            pool = redirect_pool(plan, LocationPlan(client, cands), 1.5)
            checked += 1
            if pool is None:
                assert sum(1 for c in ref.selected if c.weight > 0) <= 1
                continue
            fast_paths += 1
            assert summary(draw_redirect(pool, random.Random(seed))) == summary(ref.selected), (f, client)
    assert checked == 300
    assert fast_paths > 150, fast_paths  # the fast path must be the common case here


@st.composite
def family_worlds(draw):
    """A random world whose mirrors carry random per-family states, and a client family."""
    world, client, opts = draw(any_world)
    out = []
    for cand, mfile in world:
        states = {}
        for proto in (PROTO_HTTP, PROTO_HTTPS):
            for family in FAMILIES:
                state = draw(st.sampled_from([None, "1", "1", "0", "none"]))
                if state is not None:
                    states[(proto, family)] = FamilyHealth(state, "Unreachable" if state == "0" else "")
        out.append((Candidate(cand.mirror, families=states), mfile))
    return out, client, opts, draw(st.sampled_from(list(Family)))


@SETTINGS
@given(family_worlds(), st.integers(0, 2**32))
def test_fast_path_equals_select_mirrors_per_family(w, seed):
    world, client, opts, family = w
    if not client.valid:
        return
    ref = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world, client, rng=random.Random(seed),
                         family=family, **opts)
    plan = plan_file(PATH, LOCAL_SIZE, LOCAL_MTIME, world, secure=opts["secure"],
                     allow_outdated=opts["allow_outdated"],
                     fix_timezone_offsets=opts["fix_timezone_offsets"], family=family)
    pool = redirect_pool(plan, LocationPlan(client, [c for c, _ in world]), opts["weight_distribution_range"])
    if pool is None:
        assert len([c for c in ref.selected if c.weight > 0]) <= 1
        return
    assert summary(draw_redirect(pool, random.Random(seed))) == summary(ref.selected)
    assert plan.family_fallback == ref.family_fallback


@SETTINGS
@given(family_worlds(), st.integers(0, 2**32))
def test_a_family_choice_is_the_choice_among_the_mirrors_reachable_over_it(w, seed):
    world, client, opts, family = w
    got = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world, client, rng=random.Random(seed),
                         family=family, for_mirrorlist=True, **opts)
    column = verdict_index(opts["secure"], family)
    reachable = [(c, f) for c, f in world
                 if c.verdicts[column][1] is None or c.verdicts[int(opts["secure"])][1] is not None]
    ref = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world if got.family_fallback else reachable, client,
                         rng=random.Random(seed), for_mirrorlist=True, **opts)
    assert summary(got.selected) == summary(ref.selected)
    if got.family_fallback:
        assert family != Family.ANY and got.selected
    reasons = {ex.candidate.id: ex.reason for ex in got.excluded}
    if not got.family_fallback:
        for c, _ in world:
            if (c, _) not in reachable:
                assert reasons[c.id] == f"Not reachable over {family.label}"
