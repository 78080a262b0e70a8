"""Statistics retention, ``stats prune``/``usage``/``export``, against a running daemon on a real Redis
seeded with two years of statistics written the way the Go original writes them."""

from __future__ import annotations

import csv
import http.client
import io
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from mirrorbits.history.retention import LOCK_NAME
from mirrorbits.redis import schema
from tests.admin.conftest import AdminDaemon
from tests.fixtures.statsseed import dump_stats, go_count, seed

PATHS = ["/README", "/sub/file.iso", "/gone/old.tar"]
MIRRORS = [1, 2, 3]
RETENTION = "StatsRetention:\n  DailyDays: 30\n  MonthlyMonths: 12\n  FileDays: 7\n"


def _today() -> date:
    return datetime.now(UTC).date()


def _get(daemon: AdminDaemon, target: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=30)
    try:
        conn.request("GET", target)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def _month(day: date, back: int) -> date:
    i = day.year * 12 + day.month - 1 - back
    return date(i // 12, i % 12 + 1, 1)


def _expected_after(keys: list[str], today: date) -> set[str]:
    """The keys the configured window keeps (FileDays 7, DailyDays 30, MonthlyMonths 12)."""
    keep = set()
    first_month = _month(today, 11)
    for k in keys:
        parts = k.split("_")
        nums = [p for p in parts if p.isdigit()]
        if len(nums) == 3:
            d = date(*map(int, nums))
            window = 7 if k.startswith("STATS_FILE_") else 30
            if d > today - timedelta(days=window):
                keep.add(k)
        elif len(nums) == 2:
            if date(int(nums[0]), int(nums[1]), 1) >= first_month:
                keep.add(k)
        else:
            keep.add(k)
    return keep


def _stats_answers(daemon: AdminDaemon, periods: list[str]) -> dict[str, tuple[int, str]]:
    out = {}
    for path in ("/README", "/sub/file.iso"):
        for p in periods:
            out[f"{path}?stats={p}"] = _get(daemon, f"{path}?stats={p}")
    return out


def test_prune_keeps_the_window_totals_and_stats_answers(daemon: AdminDaemon) -> None:
    r = daemon.redis.client()
    # The session daemon's own prune runs a minute after its start-up (then at 00:05 UTC): on a
    # loaded machine that minute can end just after the reload below configures retention, and its
    # deletions then showed in the dry run's check.  Holding its cluster lock, as a node pruning
    # elsewhere would, makes every deletion seen here one of the commands under test.
    lock = schema.lock_key(LOCK_NAME)
    assert r.set(lock, "the test", nx=True, px=600_000)
    today = _today()
    seeded = seed(r, today, 731, PATHS, MIRRORS)
    before = dump_stats(r)
    years = {k: v for k, v in before.items() if k.count("_") == 2 and k[-4:].isdigit()
             or k in ("STATS_FILE", "STATS_MIRROR", "STATS_MIRROR_BYTES", "STATS_TOTAL")}
    years.update({k: v for k, v in before.items() if k.startswith("STATS_MIRROR_BYTES_") and len(k) == 23})
    assert {"STATS_FILE", "STATS_TOTAL", f"STATS_FILE_{today.year}"} <= set(years)
    # ?stats of periods that stay, and the all-levels answer of today.
    kept_periods = ["", f"{today.year}", f"{today.year - 1}", f"{today.year - 2}",
                    f"{today.year}-{today.month:02d}", f"{today.year}-{today.month:02d}-{today.day:02d}"]
    for back in range(1, 7):
        d = today - timedelta(days=back)
        kept_periods.append(f"{d.year}-{d.month:02d}-{d.day:02d}")
    for back in range(1, 12):
        m = _month(today, back)
        kept_periods.append(f"{m.year}-{m.month:02d}")
    answers = _stats_answers(daemon, kept_periods)
    assert answers[f"/sub/file.iso?stats={today.year - 1}"] == (200, json.dumps(
        {"Period": str(today.year - 1), "Downloads": sum(
            c["/sub/file.iso"] for d, c in seeded.files.items() if d.year == today.year - 1)}, indent=4))

    # Without retention configured, prune refuses and changes nothing.
    res = daemon.one("stats", "prune")
    assert res.code == 1 and "no StatsRetention" in res.err
    daemon.write_config(RETENTION)
    assert daemon.one("reload").code == 0

    dry = daemon.one("stats", "prune", "-dry-run")
    assert dry.code == 0, dry.err
    assert dump_stats(r) == before, "a dry run deleted something"
    listed = [line.split("\t")[0] for line in dry.out.splitlines()[:-1]]
    expected_gone = set(before) - _expected_after(list(before), today)
    assert set(listed) == expected_gone and len(listed) > 600
    assert "would be removed (dry run: nothing was deleted)" in dry.out.splitlines()[-1]
    assert all(int(line.split("\t")[-1]) > 0 for line in dry.out.splitlines()[:-1])

    res = daemon.one("stats", "prune")
    assert res.code == 0, res.err
    assert [line.split("\t")[0] for line in res.out.splitlines()[:-1]] == listed
    assert res.out.splitlines()[-1].startswith(f"{len(listed)} keys removed, ")
    after = dump_stats(r)
    assert set(after) == set(before) - expected_gone
    assert all(after[k] == before[k] for k in after), "a kept key changed"
    assert all(after[k] == v for k, v in years.items()), "a yearly or total counter changed"
    assert _stats_answers(daemon, kept_periods) == answers
    # A second prune finds nothing left.
    again = daemon.one("stats", "prune")
    assert again.code == 0 and again.out.startswith("0 keys removed")

    # A Go node keeps counting into the same keys; the daemon reads them.
    pipe = r.pipeline(transaction=False)
    go_count(pipe, today, "/sub/file.iso", 2, 1000, n=5)
    pipe.execute()
    status, body = _get(daemon, "/sub/file.iso?stats")
    doc = json.loads(body)
    before_today = json.loads(answers["/sub/file.iso?stats="][1])
    assert status == 200 and doc == {k: v + 5 for k, v in before_today.items()}
    assert int(r.get("STATS_TOTAL")) == int(before["STATS_TOTAL"]) + 5

    # usage: one line per family and level, the total at the end.
    use = daemon.one("stats", "usage")
    assert use.code == 0, use.err
    lines = use.out.splitlines()
    assert lines[0].split() == ["FAMILY", "LEVEL", "KEYS", "BYTES", "SIZE", "OLDEST", "NEWEST"]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[1:-1]}
    assert rows[("STATS_FILE", "day")][2] == "7"
    assert rows[("STATS_MIRROR", "day")][2] == "30"
    assert rows[("STATS_MIRROR_BYTES", "month")][2] == "12"
    assert rows[("STATS_FILE", "year")][2] == "3"
    assert rows[("STATS_TOTAL", "total")][2] == "1"
    assert lines[-1].split()[1] == str(len(after))
    assert r.get(lock) == "the test", "the lock was held throughout"
    r.delete(lock)


def test_export_round_trips(daemon: AdminDaemon) -> None:
    r = daemon.redis.client()
    today = _today()
    seed(r, today, 800, PATHS, MIRRORS)
    r.hset("MIRRORS", "1", "first")
    r.hset("MIRROR_1", mapping={"ID": "1", "name": "first", "http": "http://127.0.0.1:9/first/", "enabled": "0"})
    res = daemon.one("stats", "export", "-format", "json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    files = {f["path"]: f["downloads"] for f in doc["files"]}
    assert files == {k: int(v) for k, v in r.hgetall("STATS_FILE").items()}
    assert sum(files.values()) == int(r.get("STATS_TOTAL"))
    assert {m["id"]: m["downloads"] for m in doc["mirrors"]} == \
        {int(k): int(v) for k, v in r.hgetall("STATS_MIRROR").items()}
    assert {m["id"]: m["bytes"] for m in doc["mirrors"]} == \
        {int(k): int(v) for k, v in r.hgetall("STATS_MIRROR_BYTES").items()}
    assert doc["missing"] == [] and doc["from"] is None

    # A period: whole months, then days, add up to the month keys and the day keys they cover.
    first = date(today.year - 1, 2, 20)
    last = date(today.year - 1, 4, 30)
    res = daemon.one("stats", "export", "-format", "csv", "-from", first.isoformat(), "-to", last.isoformat())
    assert res.code == 0, res.err
    rows = list(csv.DictReader(io.StringIO(res.out)))
    got_files = Counter({row["name"]: int(row["downloads"]) for row in rows if row["kind"] == "file"})
    want: Counter[str] = Counter()
    for i in range((date(today.year - 1, 3, 1) - first).days):
        d = first + timedelta(days=i)
        want.update({k: int(v) for k, v in r.hgetall(f"STATS_FILE_{d:%Y_%m_%d}").items()})
    for m in (3, 4):
        want.update({k: int(v) for k, v in r.hgetall(f"STATS_FILE_{today.year - 1}_{m:02d}").items()})
    assert got_files == +want and sum(want.values()) > 100
    mirrors = {int(row["id"]): (int(row["downloads"]), int(row["bytes"])) for row in rows
               if row["kind"] == "mirror"}
    assert mirrors, res.out[:500]
    assert mirrors[1][0] == sum(int(r.hget(k, "1") or 0) for k in
                                [f"STATS_MIRROR_{(first + timedelta(days=i)):%Y_%m_%d}" for i in range(9)]
                                + [f"STATS_MIRROR_{today.year - 1}_03", f"STATS_MIRROR_{today.year - 1}_04"])
    assert [row["name"] for row in rows if row["kind"] == "mirror" and row["id"] == "1"] == ["first"]

    bad = daemon.one("stats", "export", "-format", "xml")
    assert bad.code == 2 and "csv or json" in bad.err
    bad = daemon.one("stats", "export", "-to", "2020-01-01")
    assert bad.code == 2


def test_the_same_commands_through_the_manhole_and_usage_errors(daemon: AdminDaemon) -> None:
    from tests.admin.test_manhole import run_ssh

    r = daemon.redis.client()
    seed(r, _today(), 40, PATHS, MIRRORS)
    usage = run_ssh(daemon, "stats", "usage")
    assert (usage.returncode, usage.stderr) == (0, "")
    assert usage.stdout == daemon.one("stats", "usage").out
    export = run_ssh(daemon, "stats", "export", "-format", "csv")
    assert export.returncode == 0 and export.stdout == daemon.one("stats", "export").out
    bad = daemon.one("stats", "prune", "now")
    assert bad.code == 2 and bad.err.startswith("\nUsage: mirrorbits stats prune [OPTIONS]")
    bad = daemon.one("stats", "usage", "-x")
    assert bad.code == 2 and "flag provided but not defined: -x" in bad.err
    helped = daemon.one("stats", "export", "-help")
    assert helped.code == 0 and "-format string" in helped.err
    # The Go grammar of stats is unchanged.
    assert daemon.one("stats").code == 2
