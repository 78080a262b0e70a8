"""The view's compact per-path representation (mirrorbits.cache.Pairs, PathEntry's parallel tuples)
and the collector settings of a process serving from a warm view: the same selection input as the
tuple of 2-tuples it replaces, read from a real redis-server."""

from __future__ import annotations

import gc
import random

from twisted.internet import defer
from twisted.trial import unittest

from mirrorbits.cache import GC_THRESHOLDS, Pairs, freeze_long_lived
from mirrorbits.model import Mirror
from mirrorbits.redis import schema
from mirrorbits.selection import Candidate, ClientLocation, MirrorFile, Secure, select_mirrors
from mirrorbits.selection.fastpath import plan_file
from tests.test_cache import MODTIME, PATH, ViewTestCase, d


def _candidate(i: int, lat: float, lon: float) -> Candidate:
    return Candidate(Mirror(id=i, name=f"m{i}", http_url=f"http://m{i}.example/", enabled=True, http_up=True,
                            https_up=True, latitude=lat, longitude=lon, country_codes="FR"))


class PairsTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.cands = tuple(_candidate(i, 40.0 + i, 2.0 + i) for i in range(1, 6))
        self.files = (MirrorFile(100, 5), None, MirrorFile(100, 5), MirrorFile(99, 5), MirrorFile(100, 5))
        self.pairs = Pairs(self.cands, self.files)
        self.tuples = tuple(zip(self.cands, self.files, strict=True))

    def test_reads_like_the_tuple_of_pairs(self) -> None:
        self.assertEqual(list(self.pairs), list(self.tuples))
        self.assertEqual(len(self.pairs), 5)
        self.assertEqual(self.pairs[1], self.tuples[1])
        self.assertEqual(self.pairs[-1], self.tuples[-1])
        self.assertEqual(self.pairs[1:3], self.tuples[1:3])
        self.assertEqual(self.pairs, self.tuples)
        self.assertEqual(self.pairs, Pairs(self.cands, self.files))
        self.assertNotEqual(self.pairs, Pairs(self.cands[:4], self.files[:4]))
        self.assertEqual([c.id for c, _ in self.pairs], [1, 2, 3, 4, 5])
        with self.assertRaises(IndexError):
            self.pairs[5]
        with self.assertRaises(TypeError):
            hash(self.pairs)

    def test_same_selection_and_plan_as_the_tuple(self) -> None:
        client = ClientLocation("FR", "EU", 7, 44.0, 5.0)
        for secure in tuple(Secure):
            for seed in range(5):
                got = select_mirrors("/f", 100, 5, self.pairs, client, secure=secure, rng=random.Random(seed))
                want = select_mirrors("/f", 100, 5, self.tuples, client, secure=secure, rng=random.Random(seed))
                self.assertEqual([(c.candidate.id, c.absolute_url, c.weight) for c in got.selected],
                                 [(c.candidate.id, c.absolute_url, c.weight) for c in want.selected])
                self.assertEqual(got.excluded, want.excluded)
            self.assertEqual(plan_file("/f", 100, 5, self.pairs, secure=secure).eligible,
                             plan_file("/f", 100, 5, self.tuples, secure=secure).eligible)

    def test_file_plans_share_their_values(self) -> None:
        a = plan_file("/f", 100, 5, self.pairs)
        b = plan_file("/g", 100, 5, self.pairs)
        self.assertTrue(a.eligible)
        for cand, value in a.eligible.items():
            self.assertIs(b.eligible[cand], value)


class CollectorTests(unittest.SynchronousTestCase):
    def test_freeze_sets_the_thresholds(self) -> None:
        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)
        freeze_long_lived()
        self.assertEqual(gc.get_threshold(), GC_THRESHOLDS)
        self.assertGreater(gc.get_freeze_count(), 0)


class CompactViewCases(ViewTestCase):
    def put_members(self, members: dict[str, tuple[str, str] | None]) -> None:
        self.r.hset(schema.file_key(PATH), mapping={"size": "43000", "modTime": MODTIME})
        for text, fileinfo in members.items():
            self.r.sadd(schema.file_mirrors_key(PATH), text)
            if fileinfo is not None:
                self.r.hset(schema.file_info_key(text, PATH), mapping={"size": fileinfo[0], "modTime": fileinfo[1]})
        for mid in {int(t) for t in members}:
            self.r.hset(schema.mirror_key(mid), mapping={
                "ID": str(mid), "name": f"m{mid}", "http": f"http://m{mid}.mirror/", "enabled": "true",
                "httpUp": "true", "latitude": "48.8", "longitude": "2.3"})

    def test_files_aligned_with_ids_and_shared_by_the_pairs(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_members({"1": ("43000", MODTIME), "2": None, "3": ("43000", MODTIME), "4": ("1", MODTIME)})
            e = await self.view.load(PATH)
            assert e is not None and e.ids is not None and e.pairs is not None
            self.assertEqual(len(e.ids), 4)
            self.assertEqual(len(e.files), 4)
            by_id = dict(zip(e.ids, e.files, strict=True))
            self.assertIsNone(by_id[2])
            self.assertIs(by_id[1], by_id[3])  # same text, one parsed record
            self.assertEqual(by_id[4].size, 1)
            self.assertEqual(e.mfiles, by_id)
            self.assertIsInstance(e.pairs, Pairs)
            self.assertIs(e.pairs.files, e.files)  # every member known: nothing copied
            self.assertEqual([(c.id, mf) for c, mf in e.pairs], list(by_id.items()))
        return d(run())

    def test_a_broken_mirror_is_left_out_of_the_pairs(self) -> defer.Deferred[None]:
        async def run() -> None:
            self.put_members({"1": ("43000", MODTIME), "2": ("43000", MODTIME), "3": ("7", MODTIME)})
            self.r.delete(schema.mirror_key(2))
            e = await self.view.load(PATH)
            assert e is not None and e.pairs is not None
            self.assertEqual(e.ids is not None and len(e.ids), 3)
            self.assertEqual(sorted((c.id, mf.size if mf else None) for c, mf in e.pairs), [(1, 43000), (3, 7)])
            self.assertEqual(len(e.pairs.candidates), len(e.pairs.files))
        return d(run())

    def test_a_member_twice_keeps_one_record_for_both(self) -> defer.Deferred[None]:
        async def run() -> None:
            # " 1" and "1" are one mirror id: both occurrences read the last FILEINFO, as before.
            self.put_members({"1": ("43000", MODTIME), " 1": ("5", MODTIME)})
            e = await self.view.load(PATH)
            assert e is not None and e.ids is not None
            self.assertEqual(e.ids, (1, 1))
            self.assertIs(e.files[0], e.files[1])
        return d(run())
