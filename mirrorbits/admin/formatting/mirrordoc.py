"""The mirror as a YAML document: what ``show`` prints, what ``edit`` opens in ``$EDITOR`` and reads
back, and the ``- old``/``+ new`` diff an edit reports.

The document is yaml.v3's ``Marshal`` of the Go ``Mirror`` struct: the fields marked ``yaml`` in
:data:`mirrorbits.model.MIRROR_FIELDS`, in that order, each scalar written as
:mod:`~mirrorbits.admin.formatting.yamlscalar` does.
"""

from __future__ import annotations

from collections.abc import Iterable

from mirrorbits.admin.formatting.yamlscalar import yaml_float32, yaml_key_value, yaml_scalar
from mirrorbits.gocompat import NS_PER_SECOND, format_rfc1123
from mirrorbits.model import MIRROR_FIELDS, Mirror, MirrorField

__all__ = [
    "EDIT_COMMENT_SEPARATOR",
    "MIRROR_YAML_KEYS",
    "edit_file_text",
    "format_edit_success",
    "format_family_states",
    "format_show",
    "mirror_yaml",
    "split_edit_file",
    "yaml_diff",
]

_YAML_FIELDS: tuple[MirrorField, ...] = tuple(f for f in MIRROR_FIELDS if f.yaml)
#: YAML keys of the mirror document, in Go's struct order.
MIRROR_YAML_KEYS: tuple[str, ...] = tuple(f.go for f in _YAML_FIELDS)


def _yaml_value(m: Mirror, f: MirrorField) -> str:
    value = getattr(m, f.attr)
    if f.kind == "bool":
        return "true" if value else "false"
    if f.kind in ("int", "uint"):
        return str(value)
    if f.kind == "float32":
        return yaml_float32(value)
    if f.kind == "redirects":
        # Go's Redirects: 0 = unset (null), 1 = allowed, 2 = forbidden.
        return {1: "true", 2: "false"}.get(value, "null")
    return yaml_scalar(value)


def mirror_yaml(m: Mirror) -> str:
    """The YAML document ``show`` prints and ``edit`` opens, as Go's yaml.v3 Marshal writes it."""
    return "".join(yaml_key_value(f.go, _yaml_value(m, f)) for f in _YAML_FIELDS)


def format_show(m: Mirror) -> str:
    """``show``: YAML, empty line, ``Comment:``, the comment, newline."""
    return f"{mirror_yaml(m)}\nComment:\n{m.comment}\n"


def format_family_states(states: Iterable[tuple[str, str, str, str, int]]) -> str:
    """What ``show`` adds after Go's text for a mirror checked per address family
    (``SelectByIPFamily``): one line per (protocol, family, state, reason, last check); nothing
    for a mirror never checked per family, so Go's text is unchanged."""
    lines = []
    for protocol, family, state, reason, checked in states:
        text = {"up": "up", "none": "no address"}.get(state, f"down: {reason}" if reason else "down")
        when = f" (checked {format_rfc1123(checked * NS_PER_SECOND, 'UTC')})" if checked else ""
        lines.append(f"  {protocol} over {family}: {text}{when}\n")
    return "\nIP families:\n" + "".join(lines) if lines else ""


def yaml_diff(old_yaml: str, new_yaml: str) -> str:
    """The ``Diff`` text of UpdateMirror/GeoUpdateMirror: ``- old``/``+ new`` per differing line.

    Lines are paired by index like Go. When the line counts differ (multi-line CustomData), Go crashed
    on a shorter new document; here the extra lines are listed on their own side only.
    """
    a = old_yaml.split("\n")
    b = new_yaml.split("\n")
    out = []
    for i in range(max(len(a), len(b))):
        old = a[i] if i < len(a) else None
        new = b[i] if i < len(b) else None
        if old == new:
            continue
        if old is not None:
            out.append(f"- {old}\n")
        if new is not None:
            out.append(f"+ {new}\n")
    return "".join(out)


def format_edit_success(diff: str, name: str) -> str:
    """stdout after a successful edit: the diff and an empty line (if any), then the success line."""
    head = diff + "\n" if diff else ""
    return f"{head}Mirror '{name}' edited successfully\n"


EDIT_COMMENT_SEPARATOR = "##### Comments go below this line #####"


def edit_file_text(yaml_doc: str, comment: str) -> str:
    """The temporary file ``edit`` opens in ``$EDITOR``."""
    return ("# You can now edit this mirror configuration.\n"
            "# Just save and quit when you're done.\n\n"
            f"{yaml_doc}\n{EDIT_COMMENT_SEPARATOR}\n\n{comment}\n")


def split_edit_file(text: str) -> tuple[str, str | None]:
    """Split an edited file into (YAML part, comment); comment is None when there is no separator.

    Like Go, only a separator found after position 0 counts, and the comment is trimmed.
    """
    idx = text.find(EDIT_COMMENT_SEPARATOR)
    if idx > 0:
        return text[:idx], text[idx + len(EDIT_COMMENT_SEPARATOR):].strip()
    return text, None
