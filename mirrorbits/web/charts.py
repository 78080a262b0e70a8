"""Inline SVG charts of the HTML pages: pie, horizontal bar, sparkline, column chart.

Why server-side SVG: operators open the pages on hosts without internet access and with JavaScript
off, so every chart is drawn here, with its figures in ``<title>`` tooltips and ``data-*`` attributes
(and, for the column charts, a table beside them), and reads without any script or network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from twisted.web.template import Flattenable, Tag, tags

__all__ = ["PALETTE", "SVG_NS", "bar", "column_chart", "num", "pie_chart", "sizeof", "sparkline", "svg"]

PALETTE = ("#2980b9", "#27ae60", "#e67e22", "#8e44ad", "#c0392b", "#16a085", "#d35400", "#2c3e50",
           "#f1c40f", "#7f8c8d")
SVG_NS = "http://www.w3.org/2000/svg"
DOWNLOADS_COLOR = "#4078C0"
BYTES_COLOR = "#e67e22"
PRUNED_COLOR = "#d5dbe0"


def sizeof(n: int | float) -> str:
    """Go's ``sizeof``: ``%3.1f <unit>`` in steps of 1024 (0 → ``0.0 bytes``, 1000000 → ``976.6 KiB``)."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    value = float(n)
    i = 0
    while abs(value) >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return f"{value:3.1f} {units[i]}"


def svg(name: str, children: Iterable[Flattenable] = (), **attrs: str) -> Tag:
    """An SVG element; ``class_`` → ``class``, ``stroke_width`` → ``stroke-width``."""
    t = Tag(name, attributes={k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()})
    t.children.extend(children)
    return t


def num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def pie_chart(slices: Sequence[tuple[str, float]], label: str = "Load distribution") -> Tag:
    """An inline SVG pie (with a text legend beside it) of ``(label, value)`` pairs."""
    total = sum(v for _, v in slices) or 1.0
    cx = cy = r = 100.0
    parts: list[Tag] = []
    legend: list[Tag] = []
    angle = -math.pi / 2
    for i, (name, value) in enumerate(slices):
        color = PALETTE[i % len(PALETTE)]
        frac = value / total
        pct = frac * 100
        text = f"{name}: {pct:.0f}%" if pct >= 1 else f"{name}: <1%"
        if frac >= 0.999999:
            shape = svg("circle", [svg("title", [text])], cx=num(cx), cy=num(cy), r=num(r), fill=color)
        else:
            end = angle + frac * 2 * math.pi
            x1, y1 = cx + r * math.cos(angle), cy + r * math.sin(angle)
            x2, y2 = cx + r * math.cos(end), cy + r * math.sin(end)
            large = 1 if frac > 0.5 else 0
            d = (f"M{num(cx)},{num(cy)} L{num(x1)},{num(y1)} "
                 f"A{num(r)},{num(r)} 0 {large} 1 {num(x2)},{num(y2)} Z")
            shape = svg("path", [svg("title", [text])], d=d, fill=color, stroke="#fff", stroke_width="1")
            angle = end
        parts.append(shape)
        legend.append(tags.li(tags.span(class_="swatch", style=f"background:{color}"), text))
    picture = svg("svg", parts, xmlns=SVG_NS, viewBox="0 0 200 200", width="180", height="180",
                  role="img", **{"aria-label": label})
    return tags.div(picture, tags.ul(legend, class_="legend"), class_="pie")


def bar(percent: float, color: str, title: str) -> Tag:
    """A horizontal SVG bar ``percent`` wide, with ``title`` as its tooltip."""
    pct = percent if math.isfinite(percent) else 0.0
    pct = max(0.0, min(100.0, pct))
    return svg("svg", [
        svg("rect", [svg("title", [title])], x="0", y="0", width=num(pct), height="10", fill=color),
    ], xmlns=SVG_NS, viewBox="0 0 100 10", preserveAspectRatio="none", class_="bar")


def _series_attr(values: Sequence[int | None]) -> str:
    return ",".join("-" if v is None else str(v) for v in values)


def _polylines(values: Sequence[int | None], width: float, height: float, color: str) -> list[Tag]:
    """One polyline per run of known values (a pruned period, None, breaks the line)."""
    top = max((v for v in values if v is not None), default=0) or 1
    step = width / max(len(values) - 1, 1)
    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            runs.append([])
            continue
        runs[-1].append(f"{num(i * step)},{num(height - 1 - (height - 2) * v / top)}")
    out = []
    for run in runs:
        if len(run) == 1:  # a lone point: a dot
            x, y = run[0].split(",")
            out.append(svg("circle", cx=x, cy=y, r="1.2", fill=color))
        elif run:
            out.append(svg("polyline", points=" ".join(run), fill="none", stroke=color, stroke_width="1.2"))
    return out


def sparkline(downloads: Sequence[int | None], sizes: Sequence[int | None], title: str) -> Tag:
    """Downloads (blue) and bytes (orange) over a few periods, each scaled to its own maximum.

    None marks a period retention removed: the lines break there.  The figures are in the tooltip
    and in ``data-downloads``/``data-bytes`` (``-`` for a removed period)."""
    width, height = 120.0, 28.0
    known_d = [v for v in downloads if v is not None]
    known_b = [v for v in sizes if v is not None]
    text = f"{title}: {sum(known_d)} downloads, {sizeof(sum(known_b))}"
    if len(known_d) < len(downloads):
        text += f" ({len(downloads) - len(known_d)} periods pruned)"
    return svg("svg", [svg("title", [text]), *_polylines(sizes, width, height, BYTES_COLOR),
                       *_polylines(downloads, width, height, DOWNLOADS_COLOR)],
               xmlns=SVG_NS, viewBox=f"0 0 {num(width)} {num(height)}", width="120", height="28",
               class_="spark", role="img", **{"aria-label": text, "data-downloads": _series_attr(downloads),
                                              "data-bytes": _series_attr(sizes)})


def column_chart(labels: Sequence[str], values: Sequence[int | None], unit: str, color: str,
                 name: str) -> Tag:
    """Vertical columns, one per period, scaled to the maximum; a removed period (None) is a short
    grey column whose tooltip says so."""
    height = 100.0
    step = 10.0
    top = max((v for v in values if v is not None), default=0) or 1
    parts: list[Tag] = []
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        x = num(i * step + 1)
        if v is None:
            parts.append(svg("rect", [svg("title", [f"{label}: removed by the retention policy"])],
                             x=x, y=num(height - 4), width="8", height="4", fill=PRUNED_COLOR))
            continue
        h = max(height * v / top, 0.5 if v else 0.0)
        shown = sizeof(v) if unit == "bytes" else f"{v} {unit}"
        parts.append(svg("rect", [svg("title", [f"{label}: {shown}"])],
                         x=x, y=num(height - h), width="8", height=num(h), fill=color))
    return svg("svg", parts, xmlns=SVG_NS, viewBox=f"0 0 {num(max(len(values), 1) * step)} {num(height)}",
               preserveAspectRatio="none", class_="columns", role="img",
               **{"aria-label": name, "data-values": _series_attr(values)})
