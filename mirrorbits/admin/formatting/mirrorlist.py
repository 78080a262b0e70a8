"""``mirrorbits list``: the mirrors table, their state texts and the down reasons.

Scripts and the bash completion read the Go client's output, so the table goes through the same
``text/tabwriter`` rules and keeps Go's trailing spaces; ``list -reason`` (our addition, off by
default) adds why a mirror is down, ``list -families`` (also ours) its state over IPv4 and IPv6.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Self

from mirrorbits.admin.tabwriter import tabulate
from mirrorbits.gocompat import NS_PER_SECOND, ZERO_TIME_NS, format_rfc1123
from mirrorbits.model import Mirror

__all__ = ["FlagOptions", "ListOptions", "format_list", "mirror_down_reason", "mirror_state"]


def url_kind(http_url: str) -> str:
    """``http`` or ``https`` for a URL with that scheme, ``both`` for a scheme-less one."""
    if http_url.startswith("http://"):
        return "http"
    if http_url.startswith("https://"):
        return "https"
    return "both"


def mirror_state(m: Mirror) -> str:
    """The STATE text of ``list`` and ``stats mirror``: disabled, up, down, up/down or down/up."""
    if not m.enabled:
        return "disabled"
    kind = url_kind(m.http_url)
    if kind == "http":
        return "up" if m.http_up else "down"
    if kind == "https":
        return "up" if m.https_up else "down"
    if m.http_up == m.https_up:
        return "up" if m.http_up else "down"
    return f"{'up' if m.http_up else 'down'}/{'up' if m.https_up else 'down'}"


def mirror_down_reason(m: Mirror) -> str:
    """Why the mirror is (partly) down, from ``httpDownReason``/``httpsDownReason``; empty when up."""
    kind = url_kind(m.http_url)
    parts = []
    if kind in ("http", "both") and not m.http_up:
        parts.append(("HTTP", m.http_down_reason))
    if kind in ("https", "both") and not m.https_up:
        parts.append(("HTTPS", m.https_down_reason))
    parts = [(p, r) for p, r in parts if r]
    if not parts:
        return ""
    if len(parts) == 1 and kind != "both":
        return parts[0][1]
    return "; ".join(f"{p}: {r}" for p, r in parts)


class FlagOptions:
    """A frozen dataclass of boolean options named like the command's flags."""

    @classmethod
    def from_flags(cls, values: Mapping[str, object], **extra: bool) -> Self:
        """Build from the parsed flags (e.g. ``ParseResult.values``); ``extra`` sets the options
        that are not flags of their own name."""
        names: list[str] = [f.name for f in fields(cls)]  # type: ignore[arg-type]  # subclasses are dataclasses
        return cls(**{n: bool(values[n]) for n in names if n in values}, **extra)


@dataclass(frozen=True)
class ListOptions(FlagOptions):
    """The ``list`` flags (same names and defaults as Go), plus the opt-in ``show_reason`` column."""

    http: bool = False
    rsync: bool = False
    ftp: bool = False
    location: bool = False
    score: bool = False
    state: bool = True
    disabled: bool = False
    enabled: bool = False
    down: bool = False
    show_reason: bool = False
    #: ``-families``: IPV4 and IPV6 columns (the cells come with the call).
    families: bool = False


def _state_since_ns(m: Mirror) -> int:
    """``StateSince`` as epoch ns; Go's zero time when the field is absent."""
    return ZERO_TIME_NS if m.state_since is None else m.state_since * NS_PER_SECOND


def _location(m: Mirror) -> str:
    return f"{m.country_codes.split(' ')[0]} ({m.continent_code})"


#: The optional columns of ``list``, in Go's order: (option, header, cell text).
_COLUMNS: tuple[tuple[str, str, Callable[[Mirror], object]], ...] = (
    ("score", "\tSCORE", lambda m: m.score),
    ("http", "\tHTTP ", lambda m: m.http_url),
    ("rsync", "\tRSYNC ", lambda m: m.rsync_url),
    ("ftp", "\tFTP ", lambda m: m.ftp_url),
    ("location", "\tLOCATION ", _location),
)


def format_list(mirrors: Iterable[Mirror], opts: ListOptions | None = None,
                family_cells: Mapping[int, tuple[str, str]] | None = None) -> str:
    """The stdout of ``list``: sorted by state change (newest first), filtered, through the tab writer.
    ``family_cells``: mirror id -> (IPv4, IPv6) cells of the ``families`` columns."""
    opts = opts or ListOptions()
    cells = family_cells or {}
    rows = list(mirrors)
    # Go sorts by StateSince descending with an unstable sort; ties are broken by name here so the
    # output is deterministic.
    rows.sort(key=lambda m: m.name)
    rows.sort(key=_state_since_ns, reverse=True)
    columns = [(head, cell) for flag, head, cell in _COLUMNS if getattr(opts, flag)]
    out = ["Identifier "]
    out += [head for head, _ in columns]
    if opts.state:
        out.append("\tSTATE\tSINCE")
        if opts.show_reason:
            out.append("\tREASON")
    if opts.families:
        out.append("\tIPV4\tIPV6")
    out.append("\n")
    for m in rows:
        if opts.disabled and m.enabled:
            continue
        if opts.enabled and not m.enabled:
            continue
        if opts.down and (m.is_up() or not m.enabled):
            continue
        out.append(f"{m.name} ")
        out += [f"\t{cell(m)} " for _, cell in columns]
        if opts.state:
            out.append(f"\t{mirror_state(m)} \t({format_rfc1123(_state_since_ns(m), 'UTC')})")
            if opts.show_reason:
                out.append(f"\t{mirror_down_reason(m) if m.enabled else ''}")
        if opts.families:
            v4, v6 = cells.get(m.id, ("-", "-"))
            out.append(f"\t{v4}\t{v6}")
        out.append("\n")
    return tabulate("".join(out))
