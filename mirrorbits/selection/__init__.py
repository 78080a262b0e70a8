"""Mirror selection engine: filter, score, weight and order the mirrors of one file.

A pure package (no Twisted, no Redis, no I/O) so that it can be tested without a reactor and
called on the hot path of every download request.  It reproduces the Go original's decisions bit
for bit, including its float32 arithmetic and its exclusion texts.

* :mod:`~mirrorbits.selection.records`: the client location, the mirror :class:`Candidate` (every
  per-mirror derivation done once, when the record is loaded) and the results;
* :mod:`~mirrorbits.selection.distance`: great-circle distances, vectorised and memoised;
* :mod:`~mirrorbits.selection.algorithm`: the algorithm (:func:`select_mirrors`, fallbacks);
* :mod:`~mirrorbits.selection.fastpath`: the same decisions for redirects, split into a file half
  and a client half that are computed once and intersected per request.

Randomness always comes from an injected :class:`random.Random`, so tests are deterministic.
"""

from __future__ import annotations

from mirrorbits.selection.algorithm import FallbackEntry, fallback_choices, rank_sort, select_mirrors
from mirrorbits.selection.fastpath import (
    FilePlan,
    LocationPlan,
    RedirectPool,
    document_order,
    draw_redirect,
    plan_file,
    redirect_order,
    redirect_pool,
)
from mirrorbits.selection.records import (
    ERR_MODTIME_ZERO,
    Candidate,
    Chosen,
    ClientLocation,
    Excluded,
    MirrorFile,
    MirrorSource,
    Secure,
    Selection,
    verdict_index,
)

__all__ = [
    "ERR_MODTIME_ZERO",
    "Candidate",
    "Chosen",
    "ClientLocation",
    "Excluded",
    "FallbackEntry",
    "FilePlan",
    "LocationPlan",
    "MirrorFile",
    "MirrorSource",
    "RedirectPool",
    "Secure",
    "Selection",
    "document_order",
    "draw_redirect",
    "fallback_choices",
    "plan_file",
    "rank_sort",
    "redirect_order",
    "redirect_pool",
    "select_mirrors",
    "verdict_index",
]
