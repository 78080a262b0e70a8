"""Generic and cluster locks against a real redis-server.

The renewal loops run on a :class:`twisted.internet.task.Clock` so a test can move time on at
will, while the Redis commands themselves go over real sockets on the real reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from mirrorbits.redis.connection import NotReady
from mirrorbits.redis.locks import ClusterLock, GenericLock
from tests.fixtures.trial import RedisClassTestCase, eventually, run, sleep


async def settle() -> None:
    """Let the client's background reconnect attempt after a lost connection run its course,
    so trial finds a clean reactor."""
    await sleep(0.15)


class LockTestBase(RedisClassTestCase):
    timeout = 30

    def setUp(self) -> None:
        super().setUp()
        self.redis = self.server.client()
        self.client = self.new_client()


class GenericLockTests(LockTestBase):
    def test_empty_name_is_an_error(self) -> None:
        self.assertRaises(ValueError, GenericLock, self.client, "")

    async def _contention(self) -> None:
        clock = task.Clock()
        a = GenericLock(self.client, "upgrade", clock=clock)
        b = GenericLock(self.new_client(ready=False), "upgrade", clock=clock)  # before the gate
        self.assertTrue(await a.acquire())
        self.assertTrue(a.held)
        self.assertFalse(await b.acquire())
        self.assertFalse(b.held)
        self.assertEqual(self.redis.get("LOCK_upgrade"), a.token)
        self.assertRegex(a.token, r"^[0-9]+$")
        self.assertNotEqual(a.token, b.token)
        self.assertTrue(0 < self.redis.pttl("LOCK_upgrade") <= 5000)
        await a.release()
        self.assertIsNone(self.redis.get("LOCK_upgrade"))
        self.assertFalse(a.held)
        # Once free, the other one gets it.
        self.assertTrue(await b.acquire())
        self.assertEqual(self.redis.get("LOCK_upgrade"), b.token)
        await b.release()

    def test_contention(self) -> defer.Deferred[Any]:
        return run(self._contention())

    async def _keepalive(self) -> None:
        clock = task.Clock()
        lock = GenericLock(self.client, "upgrade", clock=clock)
        self.assertTrue(await lock.acquire())
        self.redis.pexpire("LOCK_upgrade", 1500)
        clock.advance(0.9)  # not yet time
        await sleep(0.1)
        self.assertLessEqual(self.redis.pttl("LOCK_upgrade"), 1500)
        clock.advance(0.1)  # 1 s after acquire: GET + PEXPIRE 5000
        await eventually(lambda: self.redis.pttl("LOCK_upgrade") > 3000)
        self.assertTrue(lock.held)
        self.assertFalse(lock.lost)
        await lock.release()

    def test_keepalive_renews(self) -> defer.Deferred[Any]:
        return run(self._keepalive())

    async def _expiry(self) -> None:
        clock = task.Clock()
        a = GenericLock(self.client, "upgrade", clock=clock)
        self.assertTrue(await a.acquire())
        # a's process stalls: its key expires and b takes the lock.
        self.redis.pexpire("LOCK_upgrade", 1)
        await eventually(lambda: self.redis.get("LOCK_upgrade") is None)
        b = GenericLock(self.client, "upgrade", clock=task.Clock())
        self.assertTrue(await b.acquire())
        # a's keep-alive finds someone else's token: lost, and the loop stops.
        clock.advance(1.0)
        await eventually(lambda: a.lost)
        self.assertFalse(a.held)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(self.redis.get("LOCK_upgrade"), b.token)
        # a's release must not delete b's lock.
        await a.release()
        self.assertEqual(self.redis.get("LOCK_upgrade"), b.token)
        await b.release()
        self.assertIsNone(self.redis.get("LOCK_upgrade"))

    def test_expiry_and_release_of_a_lost_lock(self) -> defer.Deferred[Any]:
        return run(self._expiry())

    async def _release_after_takeover(self) -> None:
        # Same as above, but a never noticed (no keep-alive round ran): release still leaves the
        # new owner's lock alone (compare-and-delete).
        a = GenericLock(self.client, "upgrade", clock=task.Clock())
        self.assertTrue(await a.acquire())
        self.redis.set("LOCK_upgrade", "12345")
        await a.release()
        self.assertEqual(self.redis.get("LOCK_upgrade"), "12345")

    def test_release_leaves_other_owner_alone(self) -> defer.Deferred[Any]:
        return run(self._release_after_takeover())

    async def _sleeps_on_errors(self) -> None:
        clock = task.Clock()
        lock = GenericLock(self.client, "upgrade", clock=clock)
        self.assertTrue(await lock.acquire())
        self.server.kill()
        clock.advance(1.0)
        # The failed round ends and the next one is scheduled a full second later: no busy loop.
        await eventually(lambda: len(clock.getDelayedCalls()) == 1)
        (call,) = clock.getDelayedCalls()
        self.assertAlmostEqual(call.getTime(), clock.seconds() + 1.0)
        self.assertFalse(lock.lost)
        await lock.release()  # Redis is down: logged, not raised
        self.assertTrue(lock.released)
        self.assertEqual(clock.getDelayedCalls(), [])
        await settle()

    def test_keepalive_sleeps_on_errors(self) -> defer.Deferred[Any]:
        return run(self._sleeps_on_errors())


class ClusterLockTests(LockTestBase):
    async def _acquire_renew_release(self) -> None:
        clock = task.Clock()
        a = ClusterLock.for_mirror(self.client, 3, clock=clock)
        b = ClusterLock.for_mirror(self.new_client(), "3", clock=clock)
        self.assertEqual(a.key, "SCANNING_3")
        self.assertEqual(ClusterLock.source_repo(self.client).key, "SOURCE_REPO_SYNC")
        self.assertTrue(await a.acquire())
        self.assertFalse(await b.acquire())  # held elsewhere: False, not an error
        self.assertEqual(self.redis.get("SCANNING_3"), "1")
        self.assertTrue(0 < self.redis.ttl("SCANNING_3") <= 10)
        self.redis.expire("SCANNING_3", 3)
        clock.advance(4.9)
        await sleep(0.1)
        self.assertLessEqual(self.redis.ttl("SCANNING_3"), 3)
        clock.advance(0.1)  # 5 s: EXPIRE 10
        await eventually(lambda: self.redis.ttl("SCANNING_3") > 5)
        self.assertFalse(a.lost)
        await a.release()
        self.assertEqual(self.redis.exists("SCANNING_3"), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(await b.acquire())
        await b.release()

    def test_acquire_renew_release(self) -> defer.Deferred[Any]:
        return run(self._acquire_renew_release())

    async def _disappears(self) -> None:
        clock = task.Clock()
        lock = ClusterLock(self.client, "SOURCE_REPO_SYNC", clock=clock)
        self.assertTrue(await lock.acquire())
        self.redis.delete("SOURCE_REPO_SYNC")
        clock.advance(5.0)
        await eventually(lambda: lock.lost)
        self.assertEqual(clock.getDelayedCalls(), [])  # renewal stopped
        self.assertTrue(lock.held)  # the holder may carry on, as in the Go original
        # The renewal did not re-create the key.
        self.assertEqual(self.redis.exists("SOURCE_REPO_SYNC"), 0)
        # Another node takes the lock; releasing ours must not delete theirs.
        other = ClusterLock(self.new_client(), "SOURCE_REPO_SYNC", clock=task.Clock())
        self.assertTrue(await other.acquire())
        await lock.release()
        self.assertEqual(self.redis.get("SOURCE_REPO_SYNC"), "1")
        await other.release()
        self.assertEqual(self.redis.exists("SOURCE_REPO_SYNC"), 0)

    def test_disappeared_lock_stops_renewing(self) -> defer.Deferred[Any]:
        return run(self._disappears())

    async def _not_ready(self) -> None:
        lock = ClusterLock.for_mirror(self.new_client(ready=False), 7, clock=task.Clock())
        with self.assertRaises(NotReady):
            await lock.acquire()
        self.assertEqual(self.redis.exists("SCANNING_7"), 0)

    def test_waits_for_readiness(self) -> defer.Deferred[Any]:
        return run(self._not_ready())

    async def _error_stops(self) -> None:
        clock = task.Clock()
        lock = ClusterLock.for_mirror(self.client, 5, clock=clock)
        self.assertTrue(await lock.acquire())
        self.server.kill()
        clock.advance(5.0)
        await eventually(lambda: lock.lost)
        self.assertEqual(clock.getDelayedCalls(), [])
        await lock.release()  # does not raise while Redis is down
        await settle()

    def test_renewal_error_stops_renewing(self) -> defer.Deferred[Any]:
        return run(self._error_stops())
