"""The statistics history pages in headless Chromium (Debian's ``chromium``) with no network:
screenshots in ``test-artifacts/``, and the rendered DOM (``--dump-dom``) checked against the counters
seeded in Redis — two years written the way the Go original writes them, then pruned to a
``StatsRetention`` window so the pages must say what was removed and show what remains.

The history page carries no script at all (checked), so what Chromium shows is what a browser with
JavaScript off shows.  (Chromium's own switch to turn scripts off stops its headless screenshots and
DOM dumps from being written, so it cannot be used here.)"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from twisted.internet import defer, threads

from mirrorbits.config import StatsRetention
from mirrorbits.history.retention import prune
from tests.fixtures.statsseed import Seeded, seed
from tests.web.test_http_cases import RedirectorTestCase, d, put_file, put_mirror
from tests.web.test_pages import Tables
from tests.web.test_pages_browser import ARTIFACTS, chromium, run_chromium

PATHS = [f"/pub/file{i:02d}.iso" for i in range(25)] + ["/testy.tgz"]
RETENTION = StatsRetention(DailyDays=30, MonthlyMonths=12, FileDays=7)


def _month(day: date, back: int) -> date:
    i = day.year * 12 + day.month - 1 - back
    return date(i // 12, i % 12 + 1, 1)


def _in_month(day: date, first: date) -> bool:
    return (day.year, day.month) == (first.year, first.month)


class HistoryBrowser(RedirectorTestCase):
    timeout = 240

    def setUp(self) -> None:
        binary = chromium()
        if binary is None:
            from twisted.trial.unittest import SkipTest

            raise SkipTest("chromium is not installed (apt-get install -y chromium)")
        self.chromium = binary
        super().setUp()
        ARTIFACTS.mkdir(exist_ok=True)
        self.today = datetime.now(UTC).date()
        put_file(self.r, sha256="12" * 32)
        put_mirror(self.r, 1, "http://a.mirror/", countries="FR DE", continentCode="EU")
        put_mirror(self.r, 2, "https://c.mirror/", countries="US", continentCode="NA")
        put_mirror(self.r, 3, "http://d.mirror/", countries="FR", enabled="0")
        self.seeded: Seeded = seed(self.r, self.today, 731, PATHS, [1, 2, 3, 7], per_day=2)
        self.r.hincrby("STATS_MIRROR_1999", "1", 0)  # an old empty year does not start the chart

    async def page(self, url: str, name: str) -> tuple[Tables, str]:
        shot = ARTIFACTS / f"{name}.png"
        if shot.exists():
            shot.unlink()
        res = await threads.deferToThread(run_chromium, self.chromium, [
            "--window-size=1280,2400", f"--screenshot={shot}", url])
        self.assertTrue(shot.exists() and shot.stat().st_size > 10_000,
                        f"no screenshot: {res.stderr.decode(errors='replace')[-2000:]}")
        dom = await threads.deferToThread(run_chromium, self.chromium, ["--dump-dom", url])
        self.assertEqual(dom.returncode, 0, dom.stderr.decode(errors="replace")[-2000:])
        html = dom.stdout.decode()
        return Tables(html), html

    def _day_sums(self, day: date) -> tuple[int, int]:
        return sum(self.seeded.mirrors[day].values()), sum(self.seeded.bytes[day].values())

    def _sums(self, keep: callable) -> tuple[int, int]:  # type: ignore[valid-type]
        days = [x for x in self.seeded.days() if keep(x)]
        return sum(self._day_sums(x)[0] for x in days), sum(self._day_sums(x)[1] for x in days)

    def test_history_pages(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness(StatsRetention=RETENTION)
            report = await prune(h.app.get_redis(), RETENTION, self.today)
            self.assertGreater(len(report.keys), 600)
            base = f"http://127.0.0.1:{h.port.getHost().port}"
            today = self.today
            this_month = today.replace(day=1)

            page, html = await self.page(f"{base}/?mirrorstats=history", "history")
            self.assertNotIn("<script", html)
            self.assertNotRegex(html, r'(src|href)="(https?:)?//')  # nothing from the network
            # Per day: 90 rows; the last 30 hold the seeded counters, the older ones say "removed".
            daily = page.tables["daily"]
            self.assertEqual(len(daily), 90)
            for row in daily:
                day = date.fromisoformat(row[0])
                if day > today - timedelta(days=30):
                    n, b = self._day_sums(day)
                    self.assertEqual(row[1:3], [str(n), str(b)], row)
                else:
                    self.assertEqual(row[1:3], ["removed", "removed"], row)
            # Per month: 24 rows, 12 kept.
            monthly = page.tables["monthly"]
            self.assertEqual(len(monthly), 24)
            for back, row in enumerate(reversed(monthly)):
                first = _month(today, back)
                self.assertEqual(row[0], f"{first.year}-{first.month:02d}")
                if back < 12:
                    n, b = self._sums(lambda x, f=first: _in_month(x, f))
                    self.assertEqual(row[1:3], [str(n), str(b)], row)
                else:
                    self.assertEqual(row[1:3], ["removed", "removed"], row)
            # Per year: never pruned, exact, from the first year with downloads.
            yearly = page.tables["yearly"]
            self.assertEqual([r[0] for r in yearly], [str(y) for y in range(today.year - 2, today.year + 1)])
            for row in yearly:
                n, b = self._sums(lambda x, y=int(row[0]): x.year == y)
                self.assertEqual(row[1:3], [str(n), str(b)], row)
            self.assertIn("Per-day statistics are kept 30 days (StatsRetention): 60 of these 90 were removed; "
                          "the 30 that remain are shown.", page.all_text)
            self.assertIn("Per-month statistics are kept 12 months", page.all_text)
            # The period (this month): summary, top files, shares per mirror and per country.
            n, b = self._sums(lambda x: _in_month(x, this_month))
            self.assertRegex(page.all_text, rf"In {today.year}-{today.month:02d} ?: {n} downloads, ")
            files: Counter[str] = Counter()
            for day in self.seeded.days():
                if _in_month(day, this_month):
                    files.update(self.seeded.files[day])
            want = sorted(files.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
            self.assertEqual([(r[0], int(r[1])) for r in page.tables["top-files"]], want)
            per_mirror: Counter[int] = Counter()
            for day in self.seeded.days():
                if _in_month(day, this_month):
                    per_mirror.update(self.seeded.mirrors[day])
            shares = {r[0]: int(r[1]) for r in page.tables["mirror-share"]}
            self.assertEqual(shares, {"m1": per_mirror[1], "m2": per_mirror[2], "m3": per_mirror[3],
                                      "removed mirror #7": per_mirror[7]})
            countries = {r[0]: int(r[1]) for r in page.tables["country-share"]}
            self.assertEqual(countries, {"FR": per_mirror[1] + per_mirror[3], "US": per_mirror[2],
                                         "--": per_mirror[7]})

            # A day of last year: its per-day keys are gone, the page says so; the yearly chart stays.
            old = date(today.year - 1, 3, 5)
            page, _ = await self.page(f"{base}/?mirrorstats=history&period={old.isoformat()}", "history-pruned")
            self.assertIn("period-pruned", page.ids)
            self.assertIn(f"The statistics of {old.isoformat()} were removed by the retention policy",
                          page.all_text)
            self.assertEqual(len(page.tables["yearly"]), 3)
            # 10 days ago: mirrors kept (DailyDays 30), files gone (FileDays 7).
            ten = today - timedelta(days=10)
            page, _ = await self.page(f"{base}/?mirrorstats=history&period={ten.isoformat()}", "history-files-pruned")
            self.assertIn("files-pruned", page.ids)
            self.assertIn("Top files of " + ten.isoformat() + " Removed by the retention policy", page.all_text)
            self.assertEqual(int(page.tables["mirror-share"][0][1]),
                             max(self.seeded.mirrors[ten][i] for i in (1, 2, 3, 7)))

            # ?mirrorstats: today's table, and per mirror the sparklines of 30 days and 12 months.
            page, html = await self.page(f"{base}/?mirrorstats", "mirrorstats-history")
            rows = page.tables["mirrorstats"]
            got = {r[0]: int(r[2]) for r in rows}
            self.assertEqual(got, {f"m{i}": self.seeded.mirrors[today][i] for i in (1, 2, 3)})
            sparks = re.findall(r'<svg[^>]*class="spark"[^>]*>', html)
            self.assertEqual(len(sparks), 6)
            order = [int(r[0][1:]) for r in rows]
            for k, mid in enumerate(order):
                days = re.search(r'data-downloads="([^"]*)"', sparks[2 * k]).group(1).split(",")
                want_days = [str(self.seeded.mirrors[today - timedelta(days=29 - i)][mid]) for i in range(30)]
                self.assertEqual(days, want_days)
                months = re.search(r'data-bytes="([^"]*)"', sparks[2 * k + 1]).group(1).split(",")
                want_months = []
                for back in range(11, -1, -1):
                    first = _month(today, back)
                    want_months.append(str(sum(self.seeded.bytes[x][mid] for x in self.seeded.days()
                                               if _in_month(x, first))))
                self.assertEqual(months, want_months)
            # Another period from the selector: last month.
            last = _month(today, 1)
            page, _ = await self.page(f"{base}/?mirrorstats&period={last.year}-{last.month:02d}",
                                      "mirrorstats-last-month")
            self.assertRegex(page.all_text, rf"In {last.year}-{last.month:02d} ?: ")
            got = {r[0]: int(r[2]) for r in page.tables["mirrorstats"]}
            self.assertEqual(got["m1"], sum(self.seeded.mirrors[x][1] for x in self.seeded.days()
                                            if _in_month(x, last)))
        return d(run())
