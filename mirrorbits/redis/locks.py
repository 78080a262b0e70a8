"""The two kinds of Redis locks of Mirrorbits, shared with Go nodes.

* :class:`GenericLock` (``LOCK_<name>``, only ``LOCK_upgrade`` is used): an owner token, a 5 s TTL
  kept alive every second, released only by its owner.  It works before the readiness gate opens,
  because the schema upgrade takes it.
* :class:`ClusterLock` (``SCANNING_<id>``, ``SOURCE_REPO_SYNC``): value ``1``, a 10 s TTL renewed
  every 5 s, released with a plain ``DEL``.  Go nodes take the same keys, so the key names, values
  and TTLs are fixed by the Go original.

Both renew with a :class:`twisted.internet.task.LoopingCall` on an injectable clock, so tests can
drive time with :class:`twisted.internet.task.Clock`.
"""

from __future__ import annotations

import secrets

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mirrorbits import faults
from mirrorbits.redis import schema
from mirrorbits.redis.connection import RedisClient, RedisUnavailable, ResponseError

log = Logger(namespace="mirrorbits.redis.locks")

#: Delete the key only while it still holds our token: the owner check and the delete are one
#: atomic step (the Go original does GET, then DEL, which can delete a lock taken in between).
COMPARE_AND_DELETE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def _new_token() -> str:
    """A random non-negative integer in decimal, like Go's ``strconv.Itoa(rand.Int())``."""
    return str(secrets.randbelow(1 << 63))


class GenericLock:
    """``LOCK_<name>``: ``SET NX PX 5000`` with an owner token, kept alive every second.

    ``lost`` becomes true when the keep-alive finds the key gone or owned by someone else; the
    holder should then stop the work it protects.
    """

    TTL_MS = 5000
    KEEPALIVE_INTERVAL = 1.0

    def __init__(self, client: RedisClient, name: str, *, clock: IReactorTime | None = None,
                 token: str | None = None) -> None:
        self.client = client
        self.key = schema.lock_key(name)  # ValueError on an empty name, as Go's ErrInvalidLockName
        self.token = token if token is not None else _new_token()
        self.clock: IReactorTime = clock if clock is not None else client.reactor
        self.acquired = False
        self.released = False
        self.lost = False
        self._loop: task.LoopingCall | None = None

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`, unless lost."""
        return self.acquired and not self.released and not self.lost

    async def acquire(self) -> bool:
        """Try once.  False when another owner holds the lock; Redis errors propagate.

        Uses the unblocked connection: the upgrade takes this lock before the gate opens.
        """
        if self.acquired:
            raise RuntimeError(f"{self.key} already acquired by this object")
        reply = await self.client.execute("SET", self.key, self.token, "NX", "PX", str(self.TTL_MS),
                                          unblocked=True)
        if reply is None:
            return False
        self.acquired = True
        self._loop = task.LoopingCall(self._keepalive)
        self._loop.clock = self.clock
        d = self._loop.start(self.KEEPALIVE_INTERVAL, now=False)
        d.addErrback(lambda f: log.failure("keep-alive of {key} died", f, key=self.key))
        return True

    def _stop_loop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _mark_lost(self, why: str) -> None:
        self.lost = True
        self._stop_loop()
        log.warn("Lock {key} lost: {why}", key=self.key, why=why)

    async def _keepalive(self) -> None:
        """One keep-alive round: check we still own the key, then push its expiry out again.

        On a Redis error the round simply ends and the next one runs a second later: the Go loop
        retries at once and spins while Redis is away (a busy loop), we do not.
        """
        if self.released or self.lost:
            self._stop_loop()
            return
        try:
            value = await self.client.execute("GET", self.key, unblocked=True)
            if self.released:
                return
            if value != self.token:
                self._mark_lost("owned by someone else" if value is not None else "key expired")
                return
            ok = await self.client.execute("PEXPIRE", self.key, str(self.TTL_MS), unblocked=True)
            if not ok and not self.released:
                self._mark_lost("key expired")
        except (RedisUnavailable, ResponseError) as e:
            log.debug("Keep-alive of {key} failed, retrying in 1s: {e}", key=self.key, e=e)

    async def release(self) -> None:
        """Stop the keep-alive and delete the key if it still holds our token.

        Never raises: if Redis is away the key simply expires within 5 s.
        """
        if not self.acquired or self.released:
            return
        self.released = True
        self._stop_loop()
        try:
            await self.client.execute("EVAL", COMPARE_AND_DELETE, "1", self.key, self.token,
                                      unblocked=True)
        except (RedisUnavailable, ResponseError) as e:
            log.warn("Could not release {key} (it expires by itself): {e}", key=self.key, e=e)


class ClusterLock:
    """``SCANNING_<id>`` / ``SOURCE_REPO_SYNC``: ``SET key 1 NX EX 10``, renewed every 5 s.

    When a renewal finds the key gone or fails, the renewals stop and ``lost`` becomes true (logged);
    as in the Go original the holder may carry on with its work.
    """

    TTL = 10
    RENEW_INTERVAL = 5.0

    def __init__(self, client: RedisClient, key: str, *, clock: IReactorTime | None = None) -> None:
        self.client = client
        self.key = key
        self.clock: IReactorTime = clock if clock is not None else client.reactor
        self.acquired = False
        self.released = False
        self.lost = False
        self._loop: task.LoopingCall | None = None

    @classmethod
    def for_mirror(cls, client: RedisClient, mirror_id: int | str, *,
                   clock: IReactorTime | None = None) -> ClusterLock:
        """The scan lock of one mirror (``SCANNING_<id>``)."""
        return cls(client, schema.scanning_key(mirror_id), clock=clock)

    @classmethod
    def source_repo(cls, client: RedisClient, *, clock: IReactorTime | None = None) -> ClusterLock:
        """The lock of the local repository scan's commit (``SOURCE_REPO_SYNC``)."""
        return cls(client, schema.SOURCE_REPO_SYNC, clock=clock)

    @property
    def held(self) -> bool:
        return self.acquired and not self.released

    async def acquire(self) -> bool:
        """Try once.  False when held elsewhere (not an error); :class:`NotReady` before the gate
        opens and other Redis errors propagate."""
        if self.acquired:
            raise RuntimeError(f"{self.key} already acquired by this object")
        reply = await self.client.execute("SET", self.key, "1", "NX", "EX", str(self.TTL))
        if reply is None:
            return False
        faults.point("cluster_lock.acquired")
        self.acquired = True
        self._loop = task.LoopingCall(self._renew)
        self._loop.clock = self.clock
        d = self._loop.start(self.RENEW_INTERVAL, now=False)
        d.addErrback(lambda f: log.failure("renewal of {key} died", f, key=self.key))
        return True

    def _stop_loop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def _renew(self) -> None:
        if self.released:
            self._stop_loop()
            return
        try:
            ok = await self.client.execute("EXPIRE", self.key, str(self.TTL))
        except (RedisUnavailable, ResponseError) as e:
            if not self.released:
                self.lost = True
                self._stop_loop()
                log.error("Lock {key}: renewal failed, no longer renewed: {e}", key=self.key, e=e)
            return
        if not ok and not self.released:
            self.lost = True
            self._stop_loop()
            log.error("Lock {key} disappeared, no longer renewed", key=self.key)

    async def release(self) -> None:
        """Stop renewing and ``DEL`` the key (no owner check: the value is just ``1``).

        Never raises: if Redis is away the key expires within 10 s.
        """
        if not self.acquired or self.released:
            return
        self.released = True
        self._stop_loop()
        if self.lost:
            # The key expired or vanished while we held it: it may be another node's lock by now.
            # (Go deletes it anyway; deleting someone else's lock would let a third node in.)
            return
        try:
            await self.client.execute("DEL", self.key, unblocked=True)
        except (RedisUnavailable, ResponseError) as e:
            log.warn("Could not release {key} (it expires by itself): {e}", key=self.key, e=e)
