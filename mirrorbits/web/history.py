"""``?mirrorstats=history``: the network's downloads and bytes over time, and the shares of a period.

Why under ``?mirrorstats``: the Go original already answers that query on any path with its statistics
page, so the history can never shadow a file of the repository, and a Go node asked the same URL
shows its own statistics page instead of redirecting.  ``&period=YYYY[-MM[-DD]]`` chooses the period
of the top files and the shares (default: the current month, UTC).

What the page reads (one pipelined round trip per block, only the keys shown): the per-mirror hashes
of the last 90 days, 24 months and 10 years (a few dozen fields each), the per-mirror hashes of the
period, its per-file hash (for the top files), and the mirror records (names, countries).  Periods
that ``StatsRetention`` removed are drawn as such and said so, with what remains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from twisted.web.iweb import IRequest
from twisted.web.template import Element, Flattenable, Tag, XMLFile, renderer, tags

from mirrorbits.config import StatsRetention
from mirrorbits.history.keys import Level, last_days, last_months, period_label
from mirrorbits.history.reader import Point, period_shares, top_files, totals
from mirrorbits.model import Mirror
from mirrorbits.redis.connection import RedisClient
from mirrorbits.web.charts import BYTES_COLOR, DOWNLOADS_COLOR, column_chart, pie_chart, sizeof

__all__ = ["DAYS", "HistoryData", "HistoryBody", "MONTHS", "TOP_FILES", "YEARS", "fetch_history",
           "period_selector", "retention_notes"]

DAYS = 90
MONTHS = 24
YEARS = 10
TOP_FILES = 20
#: Go's fallback redirects were counted under these pseudo-mirror ids.
FALLBACK_IDS = (0, -1)

Period = tuple[Level, date]


@dataclass
class HistoryData:
    """Everything the page shows, read before rendering."""

    period: Period
    today: date
    retention: StatsRetention
    daily: list[Point]
    monthly: list[Point]
    yearly: list[Point]
    files: list[tuple[str, int]]
    file_count: int
    files_pruned: bool
    downloads: dict[int, int]
    bytes: dict[int, int]
    period_pruned: bool
    mirrors: dict[int, Mirror] = field(default_factory=dict)


async def fetch_history(redis: RedisClient, mirrors: dict[int, Mirror], period: Period,
                        retention: StatsRetention, today: date) -> HistoryData:
    years = [(Level.YEAR, date(today.year - i, 1, 1)) for i in range(YEARS - 1, -1, -1)]
    series = await totals(redis, last_days(today, DAYS) + last_months(today, MONTHS) + years, retention, today)
    daily, monthly, yearly = series[:DAYS], series[DAYS:DAYS + MONTHS], series[DAYS + MONTHS:]
    while len(yearly) > 1 and not yearly[0].downloads and not yearly[0].bytes:
        yearly = yearly[1:]  # years before the first download
    shares = await period_shares(redis, period, retention, today)
    files, count, files_pruned = await top_files(redis, period, TOP_FILES, retention, today)
    return HistoryData(period, today, retention, daily, monthly, yearly, files, count, files_pruned,
                       shares.downloads, shares.bytes, shares.pruned, mirrors)


def period_selector(query_value: str, period: Period, today: date, default: Period) -> Tag:
    """Links to the usual periods and a form for any other: plain HTML, no script."""
    base = "?mirrorstats" + (f"={query_value}" if query_value else "")
    choices = [("Today", (Level.DAY, today)), ("This month", (Level.MONTH, today.replace(day=1))),
               ("This year", (Level.YEAR, today.replace(month=1, day=1))),
               ("Last month", last_months(today, 2)[0]),
               ("Last year", (Level.YEAR, date(today.year - 1, 1, 1)))]
    links: list[Tag] = []
    for text, p in choices:
        href = base if p == default else f"{base}&period={period_label(*p)}"
        link = tags.a(text, href=href)
        if p == period:
            link.attributes["class"] = "current"
        links.append(link)
    form = tags.form(
        tags.input(type="hidden", name="mirrorstats", value=query_value),
        tags.label("Period ", tags.input(type="text", name="period", value=period_label(*period),
                                         pattern=r"\d{4}(-\d{1,2}(-\d{1,2})?)?", size="10",
                                         title="YYYY, YYYY-MM or YYYY-MM-DD")),
        " ", tags.button("Show", type="submit"),
        method="get", action="", class_="period-form")
    other = tags.a("Per mirror", href="?mirrorstats") if query_value else \
        tags.a("Download history", href="?mirrorstats=history")
    return tags.nav([links, form, other], class_="periods", id="periods")


def retention_notes(series: Sequence[tuple[str, Sequence[Point], str]]) -> list[Tag]:
    """One sentence per series with removed periods: what the window is, and what remains."""
    out = []
    for what, points, window in series:
        gone = sum(1 for p in points if p.pruned)
        if gone:
            out.append(tags.p(
                f"{what} statistics are kept {window} (StatsRetention): {gone} of these {len(points)} were "
                f"removed; the {len(points) - gone} that remain are shown.", class_="muted retention"))
    return out


def _table(table_id: str, rows: Sequence[Sequence[str]], head: Sequence[str]) -> Tag:
    return tags.table(
        tags.thead(tags.tr([tags.th(h, class_="num" if i else "") for i, h in enumerate(head)])),
        tags.tbody([tags.tr([tags.td(c, class_="num" if i else "") for i, c in enumerate(r)]) for r in rows]),
        class_="list", id=table_id)


def _axis(labels: Sequence[str], values: Sequence[int | None], unit: str) -> Tag:
    """The first and last periods under a chart, and its scale (the largest value)."""
    top = max((v for v in values if v is not None), default=0)
    scale = sizeof(top) if unit == "bytes" else f"{top} {unit}"
    return tags.div(tags.span(labels[0] if labels else ""), tags.span(f"max {scale}"),
                    tags.span(labels[-1] if labels else ""), class_="axis muted")


def _series_block(name: str, points: Sequence[Point]) -> Tag:
    labels = [p.label for p in points]
    downloads = [None if p.pruned else p.downloads for p in points]
    sizes = [None if p.pruned else p.bytes for p in points]
    rows = [(p.label, "removed" if p.pruned else str(p.downloads), "removed" if p.pruned else str(p.bytes),
             "" if p.pruned else sizeof(p.bytes)) for p in points]
    return tags.div(
        tags.div(tags.span("Downloads", class_="muted"),
                 column_chart(labels, downloads, "downloads", DOWNLOADS_COLOR, f"{name}: downloads"),
                 _axis(labels, downloads, "downloads"), class_="chart"),
        tags.div(tags.span("Bytes", class_="muted"),
                 column_chart(labels, sizes, "bytes", BYTES_COLOR, f"{name}: bytes"),
                 _axis(labels, sizes, "bytes"), class_="chart"),
        tags.details(tags.summary("Figures"), _table(name, rows, ("Period", "Downloads", "Bytes", "Size"))),
        class_="series")


def mirror_label(mirror_id: int, mirrors: dict[int, Mirror]) -> str:
    m = mirrors.get(mirror_id)
    if m is not None:
        return m.name
    if mirror_id in FALLBACK_IDS:
        return "fallback"
    return f"removed mirror #{mirror_id}"


def _country(mirror_id: int, mirrors: dict[int, Mirror]) -> str:
    m = mirrors.get(mirror_id)
    codes = m.country_codes.split() if m is not None else []
    return codes[0] if codes else "--"


def _share_rows(counts: dict[str, int], sizes: dict[str, int]) -> list[tuple[str, str, str, str]]:
    total = sum(counts.values()) or 1
    order = sorted(counts, key=lambda k: (-counts[k], k))
    return [(k, str(counts[k]), f"{counts[k] * 100 / total:.1f}%", sizeof(sizes.get(k, 0))) for k in order]


class HistoryBody(Element):
    """``history.html``."""

    def __init__(self, loader: XMLFile, data: HistoryData, selector: Tag) -> None:
        super().__init__(loader)
        self.data = data
        self.selector = selector

    def render(self, request: IRequest | None) -> Flattenable:
        d = self.data
        return tags.transparent(super().render(request)).fillSlots(
            period=period_label(*d.period), downloads=str(sum(d.downloads.values())),
            bytes=sizeof(sum(d.bytes.values())), mirrors=str(len(d.downloads)))

    @renderer
    def selector_block(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return self.selector

    @renderer
    def notes(self, request: IRequest | None, tag: Tag) -> Flattenable:
        d = self.data
        r = d.retention
        out = retention_notes([("Per-day", d.daily, f"{r.DailyDays} days"),
                                  ("Per-month", d.monthly, f"{r.MonthlyMonths} months")])
        label = period_label(*d.period)
        if d.period_pruned:
            out.append(tags.p(f"The statistics of {label} were removed by the retention policy "
                              "(StatsRetention); the yearly totals still count them.",
                              class_="warning retention", id="period-pruned"))
        elif d.files_pruned:
            out.append(tags.p(f"The per-file statistics of {label} were removed by the retention policy "
                              f"(StatsRetention: files are kept {r.file_days} days); mirror figures remain.",
                              class_="warning retention", id="files-pruned"))
        return out

    @renderer
    def daily(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return _series_block("daily", self.data.daily)

    @renderer
    def monthly(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return _series_block("monthly", self.data.monthly)

    @renderer
    def yearly(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return _series_block("yearly", self.data.yearly)

    @renderer
    def top_files(self, request: IRequest | None, tag: Tag) -> Flattenable:
        d = self.data
        if not d.files:
            if d.files_pruned or d.period_pruned:
                return tags.p(tags.em("Removed by the retention policy"), id="no-files")
            return tags.p(tags.em("No file downloads in this period"), id="no-files")
        return [_table("top-files", [(p, str(n)) for p, n in d.files], ("File", "Downloads")),
                tags.p(f"{len(d.files)} of {d.file_count} files downloaded in this period.", class_="muted")]

    @renderer
    def mirror_share(self, request: IRequest | None, tag: Tag) -> Flattenable:
        d = self.data
        counts = {mirror_label(i, d.mirrors): n for i, n in d.downloads.items()}
        sizes = {mirror_label(i, d.mirrors): n for i, n in d.bytes.items()}
        rows = _share_rows(counts, sizes)
        if not rows:
            return tags.p(tags.em("No downloads in this period"), id="no-mirror-share")
        return [pie_chart([(r[0], float(r[1])) for r in rows], "Share per mirror"),
                _table("mirror-share", rows, ("Mirror", "Downloads", "Share", "Transferred"))]

    @renderer
    def country_share(self, request: IRequest | None, tag: Tag) -> Flattenable:
        d = self.data
        counts: dict[str, int] = {}
        sizes: dict[str, int] = {}
        for i, n in d.downloads.items():
            c = _country(i, d.mirrors)
            counts[c] = counts.get(c, 0) + n
        for i, n in d.bytes.items():
            c = _country(i, d.mirrors)
            sizes[c] = sizes.get(c, 0) + n
        rows = _share_rows(counts, sizes)
        if not rows:
            return tags.p(tags.em("No downloads in this period"), id="no-country-share")
        return [pie_chart([(r[0], float(r[1])) for r in rows], "Share per country"),
                _table("country-share", rows, ("Country", "Downloads", "Share", "Transferred"))]
