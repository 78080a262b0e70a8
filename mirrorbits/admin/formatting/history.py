"""``mirrorbits stats prune``, ``stats usage``: the statistics keys and the memory they take.

Not in the Go CLI (whose statistics only grow), so these texts are our own; they go through the same
tab writer as the Go tables so that columns line up.
"""

from __future__ import annotations

from collections.abc import Sequence

from mirrorbits.admin.formatting.stats import readable_size
from mirrorbits.admin.tabwriter import tabulate
from mirrorbits.history.retention import FamilyUsage, PruneReport

__all__ = ["format_prune", "format_usage"]


def format_prune(report: PruneReport) -> str:
    """One line per key (name, bytes), then how many keys and bytes were (or would be) freed."""
    lines = [f"{k.name}\t{k.bytes}\n" for k in report.keys]
    n = len(report.keys)
    size = f"{readable_size(report.freed)} ({report.freed} bytes)"
    if report.dry_run:
        summary = f"{n} keys, {size}, would be removed (dry run: nothing was deleted)\n"
    else:
        summary = f"{n} keys removed, {size} freed\n"
    return tabulate("".join(lines)) + summary


def format_usage(families: Sequence[FamilyUsage]) -> str:
    """``FAMILY LEVEL KEYS BYTES SIZE OLDEST NEWEST`` per family and level, then the total."""
    rows = ["FAMILY\tLEVEL\tKEYS\tBYTES\tSIZE\tOLDEST\tNEWEST\n"]
    for f in families:
        rows.append(f"{f.family}\t{f.level}\t{f.keys}\t{f.bytes}\t{readable_size(f.bytes)}\t{f.oldest}\t"
                    f"{f.newest}\n")
    total = sum(f.bytes for f in families)
    rows.append(f"Total\t\t{sum(f.keys for f in families)}\t{total}\t{readable_size(total)}\t\t\n")
    return tabulate("".join(rows))
