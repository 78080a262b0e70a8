"""Property tests of mirrorbits.selection over random worlds (hypothesis).

Two kinds of checks:
* the invariants of the Go selection (a chosen mirror is never excluded, weights sum to 100, a mirror
  whose copy is missing, of another size or outdated is never chosen, at most 5 in redirects...);
* a differential check against `GoReference`, a deliberately naive, line-by-line port of the Go
  engine (mirrors.GetMirrors + http.Filter + DefaultEngine.Selection) that does its float32
  arithmetic with numpy.float32 scalars, so the optimised module is compared with an independent
  rendering of the same algorithm.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mirrorbits.gocompat import format_duration
from mirrorbits.model import Mirror
from mirrorbits.selection import (
    Candidate,
    ClientLocation,
    MirrorFile,
    Secure,
    select_mirrors,
)
from mirrorbits.selection.distance import client_distances

np = pytest.importorskip("numpy", reason="numpy provides the independent float32 arithmetic of the reference")
F = np.float32

SEC = 1_000_000_000
LOCAL_MTIME = 1_748_757_600 * SEC + 123_456_789
LOCAL_SIZE = 43000
PATH = "/test/file.tgz"
ZERO_TO_UNIX = 62135596800 * SEC


def distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The daemon's distance (the vectorised, memoised path) from (lat1, lon1) to a mirror at (lat2, lon2)."""
    client = ClientLocation(country="--", latitude=lat1, longitude=lon1)
    return client_distances(client, [(Candidate(Mirror(latitude=lat2, longitude=lon2)), None)])[0]


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# The naive Go port.

DEG_TO_RAD = 0.017453292519943295769236907684886127134428718885417


def go_distance(lat1, lon1, lat2, lon2):
    r = F(6371)
    dlat = (lat2 - lat1) * F(DEG_TO_RAD)
    dlon = (lon2 - lon1) * F(DEG_TO_RAD)
    a = math.sin(float(dlat / F(2))) * math.sin(float(dlat / F(2))) + math.cos(
        float(lat1 * F(DEG_TO_RAD))
    ) * math.cos(float(lat2 * F(DEG_TO_RAD))) * math.sin(float(dlon / F(2))) * math.sin(float(dlon / F(2)))
    c = 2 * math.atan2(math.sqrt(a), math.sqrt(1 - a))
    return r * F(c)


def go_truncate(t, p):
    if p <= 0:
        return t
    return t - (t + ZERO_TO_UNIX) % p


class GoReference:
    """Returns (accepted [(id, url, dist, score, weight)], excluded [(id, url, reason, dist)], n weighted)."""

    def __init__(self, world, client, secure, allow_outdated, fix_tz, wdr):
        self.world, self.client, self.secure = world, client, secure
        self.allow_outdated, self.fix_tz, self.wdr = allow_outdated, fix_tz, F(wdr)

    def run(self):
        cl = self.client
        valid = cl.country != ""
        mirrors = []
        for cand, f in self.world:
            d = go_distance(F(cl.latitude), F(cl.longitude), F(cand.latitude), F(cand.longitude)) if valid else F(0)
            mirrors.append(dict(c=cand, f=f, dist=d, url="", reason="", score=0, weight=F(0)))

        compare_size, max_out = True, 0
        for prefix, minutes in self.allow_outdated:
            if PATH.startswith(prefix):
                compare_size, max_out = False, minutes * 60 * SEC
                break

        accepted: list[dict] = []
        excluded: list[dict] = []
        closest, farthest = F(0), F(0)
        for m in mirrors:
            c, f = m["c"], m["f"]
            reason = self.filter_one(m, c, f, compare_size, max_out, valid)
            if reason:
                m["reason"] = reason
                excluded.append(m)
                continue
            if not accepted or m["dist"] < closest:
                closest = m["dist"]
            if m["dist"] > farthest:
                farthest = m["dist"]
            accepted.append(m)

        if not valid:
            return accepted, excluded, 0

        if closest == 0:
            closest = F(1.401298464324817e-45)
        base = int(farthest)
        weights = {}
        countries = lambda m: m["c"].country_codes.split()  # noqa: E731
        for m in accepted:
            cs = base - int(m["dist"]) + 1
            fields = countries(m)
            primary = len(fields) > 0 and fields[0] == cl.country
            additional = cl.country in fields[1:]
            if m["dist"] <= closest * self.wdr:
                s = F(base) - m["dist"]
                if not primary:
                    s = s / F(2)
                cs += int(s)
            elif primary:
                cs += int(F(base) - (m["dist"] * F(5)))
            elif additional:
                cs += int(F(base) - closest)
            if m["c"].asnum == cl.asnum:
                cs += base // 2
            x = float(cs) + (float(cs) * (float(m["c"].score) / 100)) + 0.5
            m["score"] = int(max(x, 1))
            if m["score"] > base:
                weights[id(m)] = m["score"] - base
        total = sum(weights.values())
        accepted.sort(key=lambda m: m["score"], reverse=True)
        for m in accepted:
            if id(m) in weights and len(weights) > 1:
                m["weight"] = F(float(weights[id(m)]) * 100 / float(total))
        if len(weights) == 1:
            accepted[0]["weight"] = F(100)
        return accepted, excluded, len(weights)

    def filter_one(self, m, c, f, compare_size, max_out, valid):
        cl = self.client
        if not c.mirror.enabled:
            return "Disabled"

        def ensure(url, scheme):
            return url if url.startswith(("http://", "https://")) else scheme + "://" + url

        def tls():
            m["url"] = ensure(c.http_url, "https")
            if c.http_url.startswith("http://"):
                return "Not HTTPS"
            if not c.mirror.https_up:
                return c.mirror.https_down_reason or "Down"
            return ""

        def plain():
            m["url"] = ensure(c.http_url, "http")
            if c.http_url.startswith("https://"):
                return "Not HTTP"
            if not c.mirror.http_up:
                return c.mirror.http_down_reason or "Down"
            return ""

        if self.secure == Secure.WITH_TLS:
            r = tls()
        elif self.secure == Secure.WITHOUT_TLS:
            r = plain()
        else:
            rs = tls()
            r = ""
            if rs:
                rh = plain()
                if rh:
                    r = rh if rh == rs else rh + " / " + rs
        if r:
            return r
        # A missing FILEINFO is size 0 / zero time in Go; ours never chooses it (documented fix).
        if f is None:
            return "File size mismatch"
        if compare_size and f.size != LOCAL_SIZE:
            return "File size mismatch"
        if f.mod_time_ns is not None:
            mt = f.mod_time_ns
            if self.fix_tz:
                mt += c.tz_offset_ns
            p = c.last_successful_sync_precision_ns
            delta = go_truncate(LOCAL_MTIME, p) - go_truncate(mt, p)
            if delta < 0 or delta > max_out:
                return f"Mod time mismatch (diff: {format_duration(delta)})"
        if c.continent_only and (not valid or cl.continent != c.continent_code):
            return "Continent only"
        if c.country_only and (not valid or cl.country not in c.country_codes.split()):
            return "Country only"
        if c.as_only and (not valid or cl.asnum != c.asnum):
            return "AS only"
        if valid and cl.country in c.mirror.excluded_country_codes.split():
            return "User's country restriction"
        return ""


# ---------------------------------------------------------------------------------------------
# Random worlds.

CITIES = [(48.8567, 2.3508), (52.5167, 13.3833), (40.7127, -74.0059), (-33.86, 151.2), (35.68, 139.69)]
COUNTRIES = ["FR", "DE", "US", "JP", "AU", "GB"]
CONTINENTS = ["EU", "NA", "AS", "OC"]

coords = st.one_of(
    st.sampled_from(CITIES),
    st.tuples(st.floats(-90, 90, width=32), st.floats(-180, 180, width=32)),
    st.sampled_from(CITIES).flatmap(
        lambda c: st.tuples(st.floats(c[0] - 2, c[0] + 2), st.floats(c[1] - 2, c[1] + 2))
    ),
)

mirror_file = st.one_of(
    st.builds(
        MirrorFile,
        st.sampled_from([LOCAL_SIZE, LOCAL_SIZE, LOCAL_SIZE, 0, 12345]),
        st.one_of(
            st.just(LOCAL_MTIME),
            st.none(),
            st.integers(-7200, 7200).map(lambda s: LOCAL_MTIME + s * SEC),
            st.integers(-2 * SEC, 2 * SEC).map(lambda ns: LOCAL_MTIME + ns),
        ),
    ),
    st.just(MirrorFile(LOCAL_SIZE, LOCAL_MTIME)),
    st.none(),
)


@st.composite
def candidates(draw, ident, healthy=False, center=None):
    if center is not None:
        lat, lon = draw(
            st.one_of(st.tuples(st.floats(center[0] - 3, center[0] + 3), st.floats(center[1] - 3, center[1] + 3)), coords)
        )
    else:
        lat, lon = draw(coords)
    # One draw for all the flags keeps generation cheap; each flag is in its usual state ~3/4 of
    # the time, and all-zero bits (hypothesis' favourite) mean a healthy, unrestricted mirror.
    flags = 0 if healthy else draw(st.integers(0, 2**16 - 1))

    def bit(i: int, likely: bool) -> bool:
        unusual = (flags >> (2 * i)) & 3 == 3
        return not unusual if likely else unusual

    pick = draw(st.tuples(*(st.integers(0, 7) for _ in range(8))))
    ccs = ["FR", "DE", "US", "JP", "AU", "GB", "FR DE", "GB FR US"][pick[0]]
    return Candidate(Mirror(
        id=ident,
        name=f"m{ident}",
        http_url=["http://a/", "https://b/", "c/"][pick[1] % 3] + f"{ident}/",
        enabled=bit(0, True),
        http_up=bit(1, True),
        https_up=bit(2, True),
        http_down_reason="" if bit(3, True) else "Timeout",
        https_down_reason="" if bit(4, True) else "TLS error",
        continent_only=bit(5, False),
        country_only=bit(6, False),
        as_only=bit(7, False),
        score=[0, 0, 0, 10, -20, 50, -100, 300][pick[2]],
        latitude=lat,
        longitude=lon,
        continent_code=CONTINENTS[pick[3] % 4],
        country_codes="" if pick[4] == 7 else ccs,
        excluded_country_codes=["", "", "", "", "FR", "DE US", "JP", ""][pick[5]],
        asnum=[0, 1, 4444, 0, 1, 4444, 0, 1][pick[6]],
        tz_offset=[0, 0, 3_600_000, -3_600_000][pick[7] % 4],
        last_successful_sync_precision=[0, 0, SEC, 1_000_000, 7 * SEC, 0, SEC, 0][pick[7]],
    ))


@st.composite
def worlds(draw, healthy=False):
    """Anything goes; or, when `healthy`, enabled, up, unrestricted mirrors with good copies and a
    located client, so that scoring and the weighted draw get exercised a lot."""
    n = draw(st.integers(2, 14) if healthy else st.integers(0, 14))
    center = draw(st.sampled_from(CITIES)) if healthy else None
    cands = [draw(candidates(i + 1, healthy, center)) for i in range(n)]
    files = [MirrorFile(LOCAL_SIZE, LOCAL_MTIME) if healthy else draw(mirror_file) for _ in range(n)]
    if healthy or draw(st.booleans()):
        lat, lon = center or draw(coords)
        client = ClientLocation(
            country=draw(st.sampled_from(COUNTRIES)),
            continent=draw(st.sampled_from(CONTINENTS)),
            asnum=draw(st.sampled_from([0, 1, 4444])),
            latitude=lat,
            longitude=lon,
        )
    else:
        client = ClientLocation(asnum=draw(st.sampled_from([0, 4444])))
    opts = dict(
        secure=draw(st.sampled_from(list(Secure))),
        allow_outdated=draw(st.sampled_from([(), (("/test/", 30),), (("/wrong/", 5), ("", 1))])),
        fix_timezone_offsets=draw(st.booleans()),
        weight_distribution_range=draw(st.sampled_from([1.5, 1.5, 1.0, 3.0, 0.1])),
    )
    return list(zip(cands, files, strict=True)), client, opts


any_world = st.one_of(worlds(), worlds(healthy=True))


def select(world, client, opts, *, mirrorlist, seed=0):
    return select_mirrors(
        PATH, LOCAL_SIZE, LOCAL_MTIME, world, client, for_mirrorlist=mirrorlist, rng=random.Random(seed), **opts
    )


def reference(world, client, opts):
    return GoReference(
        world,
        client,
        opts["secure"],
        opts["allow_outdated"],
        opts["fix_timezone_offsets"],
        opts["weight_distribution_range"],
    ).run()


def file_ok(f, c, opts) -> bool:
    """Independent statement of 'the mirror's copy is present, the right size and not outdated'."""
    if f is None:
        return False
    rule = next((mins for p, mins in opts["allow_outdated"] if PATH.startswith(p)), None)
    if rule is None and f.size != LOCAL_SIZE:
        return False
    if f.mod_time_ns is None:
        return True
    mt = f.mod_time_ns + (c.tz_offset_ns if opts["fix_timezone_offsets"] else 0)
    p = c.last_successful_sync_precision_ns
    delta = go_truncate(LOCAL_MTIME, p) - go_truncate(mt, p)
    return 0 <= delta <= (rule or 0) * 60 * SEC


# ---------------------------------------------------------------------------------------------
# Properties.


@SETTINGS
@given(any_world, st.booleans(), st.integers(0, 2**32))
def test_invariants(w, mirrorlist, seed):
    world, client, opts = w
    sel = select(world, client, opts, mirrorlist=mirrorlist, seed=seed)
    again = select(world, client, opts, mirrorlist=mirrorlist, seed=seed)
    assert [(c.candidate.id, c.weight) for c in sel.selected] == [(c.candidate.id, c.weight) for c in again.selected]
    chosen = [ch.candidate.id for ch in sel.selected]
    excl = [e.candidate.id for e in sel.excluded]
    assert len(set(chosen)) == len(chosen), "a mirror chosen twice"
    assert not set(chosen) & set(excl), "a chosen mirror is also excluded"
    assert [c.id for c, _ in world if c.id in set(excl)] == excl, "excluded list not in candidate order"
    files = {c.id: (c, f) for c, f in world}
    for cid in chosen:
        c, f = files[cid]
        assert file_ok(f, c, opts), "a mirror with a missing, resized or outdated copy was chosen"
        assert c.mirror.enabled
    for ch in sel.selected:
        if opts["secure"] == Secure.WITH_TLS:
            assert ch.absolute_url.startswith("https://")
        elif opts["secure"] == Secure.WITHOUT_TLS:
            assert ch.absolute_url.startswith("http://")
    weighted = [ch for ch in sel.selected if ch.weight > 0]
    if mirrorlist:
        assert len(chosen) + len(excl) == len(world), "mirrorlist must account for every candidate"
    if not client.valid:
        assert all(ch.weight == 0 and ch.computed_score == 0 and ch.distance == 0 for ch in sel.selected)
        if not mirrorlist:
            assert len(chosen) <= 5
    else:
        assert all(ch.computed_score >= 1 for ch in sel.selected)
        if len(weighted) > 1:
            if mirrorlist or len(weighted) < 5:
                assert abs(sum(ch.weight for ch in weighted) - 100) < 1e-3
            if not mirrorlist:
                assert len(sel.selected) <= 5 and len(weighted) == len(sel.selected)
        if len(weighted) == 1:
            assert sel.selected[0].weight == 100


@SETTINGS
@given(any_world)
def test_matches_the_naive_go_port(w):
    world, client, opts = w
    acc, exc, n_weighted = reference(world, client, opts)
    exp_excluded = [(m["c"].id, m["url"], m["reason"], float(m["dist"])) for m in exc]

    ml = select(world, client, opts, mirrorlist=True)
    got_excluded = [(e.candidate.id, e.absolute_url, e.reason, e.distance) for e in ml.excluded]
    assert got_excluded == exp_excluded
    if client.valid:
        exp = [(m["c"].id, m["url"], float(m["dist"]), m["score"], float(m["weight"])) for m in acc]
        got = [(ch.candidate.id, ch.absolute_url, ch.distance, ch.computed_score, ch.weight) for ch in ml.selected]
        assert got == exp
    else:
        assert sorted(ch.candidate.id for ch in ml.selected) == sorted(m["c"].id for m in acc)

    rd = select(world, client, opts, mirrorlist=False)
    assert [(e.candidate.id, e.reason) for e in rd.excluded] == [(i, r) for i, _, r, _ in exp_excluded]
    if client.valid and n_weighted > 1:
        by_id = {m["c"].id: m for m in acc}
        assert len(rd.selected) == min(5, n_weighted)
        for ch in rd.selected:
            m = by_id[ch.candidate.id]
            assert m["weight"] > 0 and ch.weight == float(m["weight"]) and ch.computed_score == m["score"]
    elif client.valid:
        assert [ch.candidate.id for ch in rd.selected] == [m["c"].id for m in acc]
    else:
        assert len(rd.selected) == min(5, len(acc))


@SETTINGS
@given(coords, coords)
@example((0.0, 0.0), (0.0, 1.1754943508222875e-38))  # Go halves in float32: a subnormal rounds
def test_distance_matches_the_go_port_and_is_symmetric(p, q):
    d = distance(p[0], p[1], q[0], q[1])
    assert d == float(go_distance(F(p[0]), F(p[1]), F(q[0]), F(q[1])))
    assert d == distance(q[0], q[1], p[0], p[1])
    assert 0 <= d <= 20016  # half the circumference, plus float32 slack


def test_memoised_distances_equal_fresh_ones():
    """The per-candidate memo must never serve a distance computed for another client location."""
    rng = random.Random(3)
    cands = [Candidate(Mirror(id=i, http_url="https://x/", enabled=True, https_up=True,
                       latitude=rng.uniform(-80, 80), longitude=rng.uniform(-179, 179))) for i in range(20)]
    world = [(c, MirrorFile(LOCAL_SIZE, LOCAL_MTIME)) for c in cands]
    for _ in range(200):
        client = ClientLocation(country="FR", latitude=rng.uniform(-80, 80), longitude=rng.uniform(-179, 179))
        sel = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world, client, for_mirrorlist=True, rng=rng)
        for ch in sel.selected:
            c = ch.candidate
            assert ch.distance == distance(client.latitude, client.longitude, c.latitude, c.longitude)


def test_weighted_draw_frequencies_follow_the_weights():
    """Without replacement, proportional to weight: the first pick's frequency is weight/total."""
    here = ClientLocation(country="FR", continent="EU", asnum=9, latitude=48.8567, longitude=2.3508)
    near = [Candidate(Mirror(id=i, http_url="https://x/", enabled=True, https_up=True, country_codes="FR",
                      latitude=57.9 + 0.3 * i, longitude=2.3508)) for i in range(1, 4)]
    far = Candidate(Mirror(id=9, http_url="https://x/", enabled=True, https_up=True, latitude=-33.86, longitude=151.2))
    world = [(c, MirrorFile(LOCAL_SIZE, LOCAL_MTIME)) for c in [*near, far]]
    ml = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world, here, for_mirrorlist=True, rng=random.Random(0))
    expected = {ch.candidate.id: ch.weight / 100 for ch in ml.selected if ch.weight > 0}
    assert len(expected) == 3
    rng = random.Random(5)
    counts = dict.fromkeys(expected, 0)
    n = 3000
    for _ in range(n):
        sel = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world, here, rng=rng)
        assert sorted(ch.candidate.id for ch in sel.selected) == sorted(expected)
        counts[sel.selected[0].candidate.id] += 1
    for cid, p in expected.items():
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(counts[cid] / n - p) < 5 * sigma, (cid, counts, expected)
