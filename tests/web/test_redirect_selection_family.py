"""The redirector's selection per client address family, request after request (the draw, the
memoised list without a draw, the fall back to any family), against select_mirrors with the
same rng: same mirrors, order, scores, weights and family fallback."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorbits.cache import PathEntry
from mirrorbits.config import Config
from mirrorbits.ipfamily import Family, FamilyHealth
from mirrorbits.model import PROTO_HTTP, PROTO_HTTPS, FileInfo, Mirror
from mirrorbits.selection import Candidate, ClientLocation, MirrorFile, Secure, select_mirrors
from mirrorbits.web.resource import RedirectorResource, _ConfigState
from tests.test_selection_plans import family_worlds, summary
from tests.test_selection_properties import LOCAL_MTIME, LOCAL_SIZE, PATH
from tests.web.test_redirector import _app_with_view, _fake_view


@settings(max_examples=200, deadline=None)
@given(family_worlds(), st.integers(0, 2**32))
def test_redirect_selection_per_family_equals_select_mirrors(w, seed):  # type: ignore[no-untyped-def]
    world, client, opts, family = w
    if not client.valid:
        return  # the fast path is for located clients only
    config = Config(Repository="/")
    res = RedirectorResource(_app_with_view(config, _fake_view([c for c, _ in world])), rng=random.Random(seed))
    state = _ConfigState(config)
    entry = PathEntry(PATH, FileInfo(PATH, LOCAL_SIZE, LOCAL_MTIME))
    entry.pairs = tuple(world)
    ref_rng = random.Random(seed)
    for _ in range(3):
        out = res._redirect_selection(PATH, entry.info, entry, client, opts["secure"], config, state, family)
        ref = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, entry.pairs, client, secure=opts["secure"],
                             family=family, rng=ref_rng)
        assert out is not None
        got, want = summary(out[0].selected), summary(ref.selected)
        assert got == want[:len(got)]
        weighted = sum(1 for c in ref.selected if c.weight > 0)
        assert len(got) == min(len(want), 5 if weighted > 1 else config.MaxLinkHeaders + 1)
        assert out[0].family_fallback == ref.family_fallback


def test_fall_back_to_any_family_draws_on_every_request() -> None:
    """The client's family reaches only a mirror its location rules out; over any family the two
    near mirrors share the weight: every request draws between them (same rng calls as
    select_mirrors), none is answered with the draw of an earlier one."""
    def mirror(mid: int, country: str, lat: float, lon: float, v6: str, **kw: object) -> Candidate:
        states = {(proto, fam): FamilyHealth(v6 if fam == Family.IPV6 else "1")
                  for proto in (PROTO_HTTP, PROTO_HTTPS) for fam in (Family.IPV4, Family.IPV6)}
        return Candidate(Mirror(id=mid, name=f"m{mid}", http_url=f"https://m{mid}.example/", enabled=True,
                                http_up=True, https_up=True, latitude=lat, longitude=lon,
                                country_codes=country, **kw), families=states)  # type: ignore[arg-type]

    only_us = mirror(1, "US", 40.7, -74.0, "1", country_only=True)
    near = [mirror(2, "FR", 48.8, 2.3, "none"), mirror(3, "FR", 48.9, 2.4, "none"),
            mirror(4, "JP", 35.7, 139.7, "none")]  # far: the near two share the weight
    client = ClientLocation("FR", "EU", 7, 48.85, 2.35)
    pairs = tuple((c, MirrorFile(LOCAL_SIZE, LOCAL_MTIME)) for c in [only_us, *near])
    config = Config(Repository="/")
    res = RedirectorResource(_app_with_view(config, _fake_view([only_us, *near])), rng=random.Random(5))
    state = _ConfigState(config)
    entry = PathEntry(PATH, FileInfo(PATH, LOCAL_SIZE, LOCAL_MTIME))
    entry.pairs = pairs
    ref_rng = random.Random(5)
    firsts = set()
    for _ in range(30):
        out = res._redirect_selection(PATH, entry.info, entry, client, Secure.UNDEFINED, config, state,
                                      Family.IPV6)
        ref = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, pairs, client, family=Family.IPV6, rng=ref_rng)
        assert out is not None
        assert summary(out[0].selected) == summary(ref.selected)
        assert out[0].family_fallback == ref.family_fallback == Family.IPV6
        firsts.add(out[0].selected[0].candidate.id)
    assert firsts == {2, 3}
