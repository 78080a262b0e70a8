"""The ``mirrorbits`` CLI's stdout text, one module per concern.

Scripts parse the Go CLI's output, so every function here returns the exact bytes the Go client prints
(TABs included where the Go code goes through ``text/tabwriter``).  Mirrors are
:class:`mirrorbits.model.Mirror` records; the field names come from its one field table.

* :mod:`~mirrorbits.admin.formatting.mirrorlist`: ``list`` and the state texts;
* :mod:`~mirrorbits.admin.formatting.mirrordoc`: the YAML document of ``show``/``edit`` and its diff;
* :mod:`~mirrorbits.admin.formatting.yamlscalar`: yaml.v3's scalar emitter, used by the document;
* :mod:`~mirrorbits.admin.formatting.export`: ``export`` (mirmon, JSON, CSV);
* :mod:`~mirrorbits.admin.formatting.stats`: ``stats`` dates, key coverage and tables;
* :mod:`~mirrorbits.admin.formatting.messages`: ``add``/``scan`` results, ``logs``, ``version``, fatal lines.

Deliberate deviations from Go (each one fixes a crash or a misleading output):

* ``export mirmon`` of a mirror without country code prints ``--`` as its country (Go panicked);
* the YAML diff of documents with a different number of lines pairs the common prefix by index and then
  lists the extra lines on one side only (Go crashed on a shorter new document);
* ``list`` can optionally show the down reason (``show_reason``); off by default, so the bytes match Go.

Mirror log lines are rendered by :func:`mirrorbits.model.render_mirror_log`.
"""

from __future__ import annotations

from mirrorbits.admin.formatting.export import (
    ExportOptions,
    format_export_csv,
    format_export_json,
    format_mirmon,
)
from mirrorbits.admin.formatting.messages import (
    VersionInfo,
    fatal_line,
    format_add_success,
    format_logs,
    format_scan_result,
    format_version_block,
)
from mirrorbits.admin.formatting.mirrordoc import (
    EDIT_COMMENT_SEPARATOR,
    MIRROR_YAML_KEYS,
    edit_file_text,
    format_edit_success,
    format_family_states,
    format_show,
    mirror_yaml,
    split_edit_file,
    yaml_diff,
)
from mirrorbits.admin.formatting.mirrorlist import (
    ListOptions,
    format_list,
    mirror_down_reason,
    mirror_state,
)
from mirrorbits.admin.formatting.stats import (
    format_stats_file,
    format_stats_mirror,
    parse_stats_date_strict,
    readable_size,
    stats_key_coverage,
)

__all__ = [
    "EDIT_COMMENT_SEPARATOR",
    "MIRROR_YAML_KEYS",
    "ExportOptions",
    "ListOptions",
    "VersionInfo",
    "edit_file_text",
    "fatal_line",
    "format_add_success",
    "format_edit_success",
    "format_export_csv",
    "format_family_states",
    "format_export_json",
    "format_list",
    "format_logs",
    "format_mirmon",
    "format_scan_result",
    "format_show",
    "format_stats_file",
    "format_stats_mirror",
    "format_version_block",
    "mirror_down_reason",
    "mirror_state",
    "mirror_yaml",
    "parse_stats_date_strict",
    "readable_size",
    "split_edit_file",
    "stats_key_coverage",
    "yaml_diff",
]
