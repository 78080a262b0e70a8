"""SIGKILL a real daemon in the middle of each multi-step write, restart it (and Redis from its
AOF, some of the time), and check what it left.

Each kill point is ``<fault point>:<n>`` (:mod:`mirrorbits.faults`): the daemon kills itself the
``n``-th time it passes that point.  A kill point counts as *tried* only when the daemon died there
(it may finish the operation with fewer passages).  After the kill, Redis is SIGKILLed and restarted
from its AOF half of the time (a seeded choice), the invariants that must hold at every instant are
checked, a clean daemon is started, and once it has recovered the full invariants are checked (see
``docs/reliability.md``):

* ``FILES`` and the ``FILE_*`` records agree (no record outside ``FILES`` even right after the kill);
* each mirror's index is exactly one of its listings, seen alike by ``MIRRORFILES_<id>``,
  ``FILEMIRRORS_*``, ``FILEINFO_<id>_*`` and ``HANDLEDFILES_<id>``: the old one when the kill came
  before the commit began, the new one after;
* every temporary key has a TTL (or is gone);
* the download counters hold at most what was answered, and lose at most the last flush interval;
* the daemon starts and answers a download with a redirect.

Bounded for CI (26 kill points, seed 18, Redis killed by a seeded coin); the long form tries every
passage of every point ``CRASH_SCALE`` times (Redis killed every other time) and waits for the dead
daemon's locks to expire instead of clearing them::

    CRASH_SCALE=1 python -m pytest -q -s tests/faults/test_crash_consistency.py
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirrorbits.redis import schema
from mirrorbits.scan.commit import commit_marker_key
from tests.faults.crashworld import (
    FTP_ID,
    PROBE,
    RSYNC_ID,
    V1,
    V2,
    Daemon,
    Outcome,
    World,
    wait_until,
)

SCALE = int(os.environ.get("CRASH_SCALE", "1"))
SEED = int(os.environ.get("CRASH_SEED", "18"))
#: The long form: set CRASH_SCALE (1 tries every passage of every point once).
LONG = "CRASH_SCALE" in os.environ
#: Where the figures go as JSON, when set.
REPORT = os.environ.get("CRASH_REPORT")

pytestmark = pytest.mark.timeout(900 * SCALE if LONG else 300)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("crash"))
    try:
        w.build_base()
        yield w
    finally:
        w.close()
        summary = summarize(w.outcomes)
        print("\ncrash consistency:", json.dumps(summary, indent=1))
        if REPORT:
            Path(REPORT).write_text(json.dumps(summary, indent=1) + "\n")


def summarize(outcomes: list[Outcome]) -> dict[str, object]:
    by_point: dict[str, dict[str, int]] = {}
    for o in outcomes:
        name = o.point.rsplit(":", 1)[0]
        row = by_point.setdefault(name, {"tried": 0, "not_reached": 0, "redis_killed": 0, "violations": 0})
        row["tried" if o.reached else "not_reached"] += 1
        row["redis_killed"] += o.redis_killed
        row["violations"] += len(o.violations)
    lost = [o.notes["lost"] for o in outcomes if "lost" in o.notes]
    return {
        "kill_points_tried": sum(o.reached for o in outcomes),
        "redis_killed": sum(o.redis_killed for o in outcomes),
        "not_reached": sum(not o.reached for o in outcomes),
        "counter_kills": [{"point": o.point, "answered": o.notes["answered"], "lost": o.notes["lost"],
                           "most_in_one_interval": o.notes["interval_max"]}
                          for o in outcomes if "lost" in o.notes],
        "violations": [f"{o.point}: {v}" for o in outcomes for v in o.violations],
        "by_point": by_point,
        "counter_loss": {"kills": len(lost), "max_lost": max(lost, default=0),
                         "max_per_interval": max((o.notes["interval_max"] for o in outcomes
                                                  if "interval_max" in o.notes), default=0),
                         "answered": sum(o.notes.get("answered", 0) for o in outcomes)},
        "handover_seconds": [o.notes["handover"] for o in outcomes if "handover" in o.notes],
        "lock_expired_seconds": [o.notes["lock_expired"] for o in outcomes if "lock_expired" in o.notes],
    }


def kill_points(base: list[tuple[str, list[int]]]) -> list[tuple[str, int]]:
    """CI: the listed passage counts of each point.  Long form: every passage count the operation
    makes (:data:`MOST`), each ``CRASH_SCALE`` times."""
    if not LONG:
        return [(p, n) for p, ns in base for n in ns]
    return [(p, n) for p, _ in base for n in range(1, MOST[p] + 1) for _ in range(SCALE)]


def kill_redis(rng: random.Random, run: int) -> bool:
    """Whether Redis is killed too: a seeded coin in CI, every other run in the long form (so each
    repeated kill point gets both)."""
    return run % 2 == 1 if LONG else rng.random() < 0.5


@dataclass
class Scenario:
    """One multi-step write: how to set it up, start it, and tell when a restart has recovered."""

    name: str
    repo_version: int
    monitor: bool
    #: Called after the base state is restored, before the faulty daemon starts.
    prepare: Callable[[World], None]
    #: Runs the operation against the faulty daemon (returns when it finished or the daemon died).
    trigger: Callable[[World, Daemon], dict[str, float]]
    #: Waits until the restarted daemon has recovered; returns violations found meanwhile.
    recovered: Callable[[World, Daemon, Outcome], None]
    #: The listings each mirror may hold after recovery.
    listings: Callable[[Outcome], dict[int, list[dict[str, int]]]]
    #: True once the faulty daemon has finished the operation (its kill point was not reached).
    finished: Callable[[World], bool]


def version(n: int) -> dict[str, int]:
    return V1 if n == 1 else V2


def clear_dead_locks(world: World) -> None:
    """The dead daemon's SCANNING_<id> / SOURCE_REPO_SYNC expire within 10 s (their TTL is checked);
    the CI form does not wait for that, the hand-over test and the long form do."""
    if not LONG:
        r = world.client()
        for k in world.keys("SCANNING_*") + world.keys("SOURCE_REPO_SYNC"):
            r.delete(k)


def brief(what: str, keys: list[str]) -> list[str]:
    """One violation line for a list of keys (the first few named)."""
    if not keys:
        return []
    return [f"{what}: {len(keys)} ({', '.join(sorted(keys)[:3])}{', ...' if len(keys) > 3 else ''})"]


def run_kill(world: World, s: Scenario, point: str, n: int, kill_redis: bool) -> Outcome:
    spec = f"{point}:{n}"
    world.restore_base()
    s.prepare(world)
    repo = world.repo_v1 if s.repo_version == 1 else world.repo_v2
    d = world.start(repo=repo, monitor=s.monitor, fault=spec)
    started = time.monotonic()
    notes = s.trigger(world, d)
    deadline = time.monotonic() + 30
    while d.alive() and time.monotonic() < deadline and not s.finished(world):
        time.sleep(0.05)
    reached = d.wait_dead(1.0) and d.killed_by_fault()
    outcome = Outcome(spec, reached, False, notes=notes)
    world.outcomes.append(outcome)
    print(f"  {spec}: {'killed' if reached else 'not reached'} after {time.monotonic() - started:.1f} s")
    if not reached:
        d.stop()
        return outcome
    v = outcome.violations
    if kill_redis:
        world.restart_redis()
        outcome.redis_killed = True
    # What must hold at every instant, the kill included.
    v += brief("after the kill: temporary keys without TTL", world.temporary_keys_without_ttl())
    v += brief("after the kill: FILE_ records outside FILES", world.orphan_records())
    outcome.notes["total_after_kill"] = world.stats_total()
    clear_dead_locks(world)
    again = world.start(repo=repo, monitor=s.monitor)
    try:
        again.wait_listening()
        if s.monitor:  # the start-up scan of the local repository
            wait_until(lambda: "[source] Indexed" in again.log(100_000), 40, "the start-up scan")
        s.recovered(world, again, outcome)
        files, records = world.local_index()
        expected = version(s.repo_version)
        if files != set(expected) or records != expected:
            v.append(f"after recovery: FILES ({len(files)}) / FILE_* ({len(records)}) are not the "
                     f"repository ({len(expected)})")
        v += brief("after recovery: temporary keys without TTL", world.temporary_keys_without_ttl())
        v += brief("after recovery: FILE_ records outside FILES", world.orphan_records())
        if world.client().exists(schema.FILES_TMP):
            v.append("after recovery: FILES_TMP left behind")
        v += [f"after recovery: {p}" for p in world.mirror_index_problems(s.listings(outcome))]
        status, location = again.get(PROBE)
        if status != 302:
            v.append(f"after recovery: GET {PROBE} answered {status}")
        outcome.notes["redirect_to_mirror"] = float(not location.startswith("http://127.0.0.1:9/"))
    finally:
        again.stop()
    assert again.proc.returncode == 0, again.log()
    return outcome


def run_scenario(world: World, s: Scenario, points: list[tuple[str, int]]) -> None:
    rng = random.Random(f"{SEED}-{s.name}")
    failures = []
    reached = 0
    for run, (point, n) in enumerate(points):
        o = run_kill(world, s, point, n, kill_redis(rng, run))
        reached += o.reached
        failures += [f"{o.point} (redis killed: {o.redis_killed}): {x}" for x in o.violations]
    assert not failures, "\n".join(failures)
    assert reached >= len(points) // 2, f"only {reached} of {len(points)} kill points were reached"


#: How many times each point is passed in its operation (the long form tries each of them): the
#: local commit writes 3 FILES_TMP batches and 1 record batch; a mirror commit stages 2 batches,
#: adds 2, removes in 2 to 3 SSCAN steps; the monitor's first checks pass the state point once per
#: mirror; the first flushes come every 0.5 s.
MOST = {"local_commit.batch": 4, "local_commit.removed": 1, "local_commit.swapped": 1,
        "cluster_lock.acquired": 2, "mirror_commit.staged": 2, "mirror_commit.decided": 1,
        "mirror_commit.added": 2, "mirror_commit.removed": 2, "mirror_commit.swapped": 1,
        "stats.flush.before": 4, "stats.flush.after": 4, "health.state_written": 2,
        "health.published": 1, "admin.save.id": 1, "admin.save.written": 1,
        "admin.save.published": 1, "admin.remove.disabled": 1, "admin.remove.written": 1}


# -- the local scan commit -------------------------------------------------------------------------


def wait_local_index(world: World, n: int, timeout: float = 40) -> None:
    want = set(version(n))
    wait_until(lambda: world.client().smembers(schema.FILES) == want
               and not world.client().exists(schema.FILES_TMP), timeout, "the local index")


def local_done(w: World) -> bool:
    r = w.client()
    return r.smembers(schema.FILES) == set(V2) and not r.exists(schema.FILES_TMP, schema.SOURCE_REPO_SYNC)


LOCAL = Scenario(
    "local", 2, True, prepare=lambda w: None, trigger=lambda w, d: {},
    recovered=lambda w, d, o: wait_local_index(w, 2),
    listings=lambda o: {RSYNC_ID: [V1], FTP_ID: [V1]}, finished=local_done)


def test_local_scan_commit(world: World) -> None:
    run_scenario(world, LOCAL, kill_points(
        [("local_commit.batch", [1, 4]), ("local_commit.removed", [1]),
         ("local_commit.swapped", [1]), ("cluster_lock.acquired", [1])]))


# -- mirror scan commits ---------------------------------------------------------------------------

#: The points from which a commit is rolled forward to the new listing.
DECIDED = ("mirror_commit.decided", "mirror_commit.added", "mirror_commit.removed", "mirror_commit.swapped")


def mirror_scenario(name: str, mirror_id: int) -> Scenario:
    other = FTP_ID if mirror_id == RSYNC_ID else RSYNC_ID

    def prepare(w: World) -> None:
        field, url = w.listing_url(mirror_id, 2)
        r = w.client()
        r.hset(schema.mirror_key(mirror_id), mapping={field: url, "lastSync": "0"})
        r.hset(schema.mirror_key(other), "lastSync", str(int(time.time())))

    def recovered(w: World, d: Daemon, o: Outcome) -> None:
        r = w.client()

        def settled() -> bool:
            return r.hget(schema.mirror_key(mirror_id), "lastSync") not in (None, "0") \
                and not r.exists(commit_marker_key(mirror_id), schema.scanning_key(mirror_id))

        try:
            wait_until(settled, 30, f"mirror {mirror_id}'s commit to be finished or dropped")
        except AssertionError as e:
            o.violations.append(str(e))

    def listings(o: Outcome) -> dict[int, list[dict[str, int]]]:
        decided = o.point.startswith(DECIDED)
        return {mirror_id: [V2] if decided else [V1, V2], other: [V1]}

    def finished(w: World) -> bool:
        r = w.client()
        return "lastSuccessfulSync" in r.hgetall(schema.mirror_key(mirror_id)) \
            and r.scard(schema.mirror_files_key(mirror_id)) == len(V2) \
            and not r.exists(schema.scanning_key(mirror_id))

    return Scenario(name, 1, True, prepare, lambda w, d: {}, recovered, listings, finished)


def test_rsync_scan_commit(world: World) -> None:
    run_scenario(world, mirror_scenario("rsync", RSYNC_ID), kill_points(
        [("mirror_commit.staged", [1]), ("mirror_commit.decided", [1]), ("mirror_commit.added", [1, 2]),
         ("mirror_commit.removed", [1]), ("mirror_commit.swapped", [1]), ("cluster_lock.acquired", [2])]))


def test_ftp_scan_commit(world: World) -> None:
    run_scenario(world, mirror_scenario("ftp", FTP_ID), kill_points(
        [("mirror_commit.staged", [2]), ("mirror_commit.decided", []), ("mirror_commit.added", [1]),
         ("mirror_commit.removed", []), ("mirror_commit.swapped", [1])]))


# -- the download counters -------------------------------------------------------------------------


def send_downloads(w: World, d: Daemon) -> dict[str, float]:
    """GET the probe file at a steady pace until the daemon dies; what was answered, and the most
    answers within one flush interval (what a lost flush can hold)."""
    answered: list[float] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and d.alive():
        try:
            status, _ = d.get(PROBE)
        except OSError:
            if d.alive() and not answered:
                time.sleep(0.05)  # not listening yet
                continue
            break
        if status == 302:
            answered.append(time.monotonic())
        time.sleep(0.005)
    window = 0.5  # FLUSH_INTERVAL
    most = max((sum(1 for t in answered if a - window <= t <= a) for a in answered), default=0)
    return {"answered": float(len(answered)), "interval_max": float(most)}


def stats_recovered(w: World, d: Daemon, o: Outcome) -> None:
    time.sleep(1.5)  # three flush intervals: a count flushed twice would show now
    total = w.stats_total()
    answered = int(o.notes["answered"])
    lost = answered - total
    o.notes["lost"] = float(lost)
    if total != o.notes["total_after_kill"]:
        o.violations.append(f"STATS_TOTAL moved from {o.notes['total_after_kill']} to {total} "
                            "after the restart, with no new download")
    if total > answered:
        o.violations.append(f"STATS_TOTAL {total} > {answered} downloads answered: counted twice")
    # A lost flush holds what came in one interval, plus what was answered while it was written.
    if lost > o.notes["interval_max"] * 2:
        o.violations.append(f"{lost} downloads lost, more than two flush intervals "
                            f"({o.notes['interval_max']:.0f} each)")


STATS = Scenario("stats", 1, False, prepare=lambda w: None, trigger=send_downloads,
                 recovered=stats_recovered, listings=lambda o: {RSYNC_ID: [V1], FTP_ID: [V1]},
                 finished=lambda w: True)  # the trigger sends until the daemon dies, or for 20 s


def test_counter_flush(world: World) -> None:
    run_scenario(world, STATS, kill_points(
        [("stats.flush.before", [3]), ("stats.flush.after", [2])]))


# -- a health-check state change -------------------------------------------------------------------


def health_prepare(w: World) -> None:
    # Mirror 2 stored as up, its HTTP server now gone: the first check writes the change.
    w.client().hset(schema.mirror_key(FTP_ID), "http", "http://127.0.0.1:9/gone")


def health_recovered(w: World, d: Daemon, o: Outcome) -> None:
    r = w.client()
    wait_until(lambda: r.hget(schema.mirror_key(FTP_ID), "httpUp") == "0", 40, "the mirror checked down")
    h = r.hgetall(schema.mirror_key(FTP_ID))
    for f in ("ID", "name", "http", "ftp", "enabled", "httpDownReason", "stateSince"):
        if not h.get(f):
            o.violations.append(f"MIRROR_{FTP_ID} lost its field {f}: {h}")
    if r.hget(schema.mirror_key(RSYNC_ID), "httpUp") != "1":
        o.violations.append("the healthy mirror is not up")


HEALTH = Scenario("health", 1, True, prepare=health_prepare, trigger=lambda w, d: {},
                  recovered=health_recovered, listings=lambda o: {RSYNC_ID: [V1], FTP_ID: [V1]},
                  finished=lambda w: w.client().hget(schema.mirror_key(FTP_ID), "httpUp") == "0"
                  and w.client().hget(schema.mirror_key(RSYNC_ID), "httpUp") == "1")


def test_health_state_change(world: World) -> None:
    run_scenario(world, HEALTH, kill_points(
        [("health.state_written", [2]), ("health.published", [1])]))


# -- admin edit / add / remove through the admin channel -------------------------------------------


def editor(w: World) -> str:
    path = w.tmp / "editor.py"
    if not path.exists():
        path.write_text("#!/usr/bin/env python3\nimport sys\np = sys.argv[1]\ns = open(p).read()\n"
                        "open(p, 'w').write(s.replace('Score: 0', 'Score: 7'))\n")
        path.chmod(0o755)
    return str(path)


def admin_trigger(w: World, d: Daemon) -> dict[str, float]:
    d.wait_listening()
    point = (d.fault or "").rsplit(":", 1)[0]
    if point == "admin.save.id":
        d.cli("add", "-http", "http://127.0.0.1:9/new/", "newmirror")
    elif point.startswith("admin.save"):
        d.cli("edit", "rs", env={"EDITOR": editor(w)})
    else:
        d.cli("remove", "-f", "rs")
    return {}


def admin_recovered(w: World, d: Daemon, o: Outcome) -> None:
    r = w.client()
    wait_local_index(w, 1)
    h = r.hgetall(schema.mirror_key(RSYNC_ID))
    if h:
        if r.hget(schema.MIRRORS, str(RSYNC_ID)) != h.get("name"):
            o.violations.append(f"MIRRORS names mirror {RSYNC_ID} {r.hget(schema.MIRRORS, str(RSYNC_ID))!r}, "
                                f"its hash {h.get('name')!r}")
        if h.get("score") not in ("0", "7") or not h.get("rsync"):
            o.violations.append(f"MIRROR_{RSYNC_ID} is neither the old nor the new record: {h}")
    for k in w.keys("MIRROR_*"):
        if k[len("MIRROR_"):].isdigit() and not r.hget(k, "name"):
            o.violations.append(f"{k} holds no name: a partial record {r.hgetall(k)}")


ADMIN = Scenario("admin", 1, False, prepare=lambda w: None, trigger=admin_trigger,
                 recovered=admin_recovered, listings=lambda o: {RSYNC_ID: [V1], FTP_ID: [V1]},
                 finished=lambda w: True)  # the trigger's command has returned


def test_admin_edit_add_remove(world: World) -> None:
    run_scenario(world, ADMIN, kill_points(
        [("admin.save.id", [1]), ("admin.save.written", [1]), ("admin.save.published", [1]),
         ("admin.remove.disabled", [1]), ("admin.remove.written", [1])]))


# -- the cluster locks handed over to a second daemon ----------------------------------------------


def handover(world: World, other: Daemon, *, point: str, repo_version: int, monitor: bool,
             prepare: Callable[[World], None], take_over: list[str], lock: str) -> Outcome:
    world.restore_base()
    prepare(world)
    repo = world.repo_v1 if repo_version == 1 else world.repo_v2
    d = world.start(repo=repo, monitor=monitor, fault=point)
    reached = d.wait_dead(30) and d.killed_by_fault()
    o = Outcome(point, reached, False)
    world.outcomes.append(o)
    if not reached:
        d.stop()
        return o
    died = time.monotonic()
    r = world.client()
    if r.ttl(lock) <= 0:
        o.violations.append(f"{lock} left without TTL ({r.ttl(lock)})")
    # The dead holder's lock expires by itself (TTL 10 s, renewed every 5 s while it lived) ...
    wait_until(lambda: not r.exists(lock), 15, f"{lock} to expire")
    o.notes["lock_expired"] = round(time.monotonic() - died, 1)
    if o.notes["lock_expired"] > 10.5:
        o.violations.append(f"{lock} outlived its holder by {o.notes['lock_expired']} s")
    # ... and the other daemon takes it at its first try.
    res = other.cli(*take_over)
    o.notes["handover"] = round(time.monotonic() - died, 1)
    if res.returncode != 0:
        o.violations.append(f"the other daemon's {' '.join(take_over)} failed: {res.stdout} {res.stderr}")
    return o


def test_cluster_lock_handover(world: World) -> None:
    """Daemon A dies holding SCANNING_1 (mid-commit) or SOURCE_REPO_SYNC; daemon B's admin
    ``scan`` / ``refresh`` gets the lock once it expires, and finishes A's commit first."""
    b = world.start(repo=world.repo_v2, monitor=False, name="handover-b")
    b.wait_listening()
    failures = []
    try:
        mirror = mirror_scenario("handover", RSYNC_ID)
        o = handover(world, b, point="mirror_commit.added:1", repo_version=1, monitor=True,
                     prepare=mirror.prepare, take_over=["scan", "rs"],
                     lock=schema.scanning_key(RSYNC_ID))
        if o.reached:
            o.violations += world.mirror_index_problems({RSYNC_ID: [V2], FTP_ID: [V1]})
        failures += [f"{o.point}: {x}" for x in o.violations]
        o = handover(world, b, point="local_commit.batch:2", repo_version=2, monitor=True,
                     prepare=lambda w: None, take_over=["refresh"], lock=schema.SOURCE_REPO_SYNC)
        if o.reached:
            files, records = world.local_index()
            if files != set(V2) or records != V2:
                o.violations.append("the local index is not the repository after the refresh")
            o.violations += [f"temporary key without TTL: {k}" for k in world.temporary_keys_without_ttl()]
        failures += [f"{o.point}: {x}" for x in o.violations]
    finally:
        b.stop()
    assert not failures, "\n".join(failures)
    assert sum(1 for o in world.outcomes if "handover" in o.notes) == 2


def test_fault_hook_is_inert_without_its_variable() -> None:
    """Production never sets the variable: the bound function is the no-op, whatever is passed."""
    from mirrorbits import faults

    assert os.environ.get(faults.ENV) is None
    assert faults.point is faults.arm(None) is faults.arm("") is faults.arm("nocolon") \
        is faults.arm("x:0") is faults.arm("x:y") is faults.arm(":3")
    faults.point("mirror_commit.decided")  # returns


def test_fault_hook_kills_at_the_nth_passage() -> None:
    import subprocess
    import sys

    code = ("from mirrorbits import faults\nimport sys\n"
            "for i in range(5):\n    faults.point('other')\n    faults.point('here')\n"
            "    print(i, flush=True)\n")
    env = dict(os.environ, MIRRORBITS_FAULT_POINT="here:3")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == -9
    assert p.stdout == "0\n1\n"
    assert "fault point here:3 reached" in p.stderr

