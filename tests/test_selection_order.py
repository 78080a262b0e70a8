"""The redirect list without a draw (fewer than two weighted mirrors) from the plans must be
select_mirrors' own: same mirrors, order, distances, scores and weights, up to any limit."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorbits.selection import LocationPlan, plan_file, redirect_order, redirect_pool, select_mirrors
from tests.test_selection_plans import summary
from tests.test_selection_properties import LOCAL_MTIME, LOCAL_SIZE, PATH, SETTINGS, any_world


def test_redirect_order_is_select_mirrors_without_a_draw() -> None:
    seen = {"no pool": 0, "one weighted": 0}

    @settings(SETTINGS, max_examples=400)
    @given(any_world, st.integers(0, 2**32), st.integers(1, 12))
    def check(w, seed, limit):  # type: ignore[no-untyped-def]
        world, client, opts = w
        if not client.valid:
            return  # the plans are for located clients only
        plan = plan_file(PATH, LOCAL_SIZE, LOCAL_MTIME, world, secure=opts["secure"],
                         allow_outdated=opts["allow_outdated"],
                         fix_timezone_offsets=opts["fix_timezone_offsets"])
        loc = LocationPlan(client, [c for c, _ in world])
        wdr = opts["weight_distribution_range"]
        if redirect_pool(plan, loc, wdr) is not None:
            return  # a draw: tests/test_selection_plans.py
        ref = select_mirrors(PATH, LOCAL_SIZE, LOCAL_MTIME, world, client, rng=random.Random(seed), **opts)
        got = redirect_order(plan, loc, limit, wdr)
        assert summary(got) == summary(ref.selected[:limit])
        seen["no pool"] += 1
        seen["one weighted"] += bool(got) and got[0].weight == 100.0

    check()
    # Both shapes were met: lists with and without their one weighted mirror.
    assert seen["no pool"] >= 20 and seen["one weighted"] >= 5, seen
