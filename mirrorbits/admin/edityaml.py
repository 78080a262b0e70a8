"""Reading back the YAML document of ``mirrorbits edit``.

The document is applied *on top of* the current record, like Go's ``yaml.Unmarshal`` into a filled
struct: keys absent from the document keep their value.  Types follow yaml.v3 (YAML 1.1 booleans such
as ``yes``/``off`` accepted, any scalar accepted for a string, ``null`` = zero value) and errors read
like yaml.v3's (``yaml: line N: ...``, ``yaml: unmarshal errors:\\n  line N: cannot unmarshal !!str
`abc` into int``); line numbers count from the top of the edited file.

Deliberate deviations from Go (the issue asks for validated edits): an unknown key is an error
(``field Bogus not found in type Mirror``; Go ignored it), and the record must pass the ``add`` checks
(non-empty name without spaces, a usable HTTP URL) — :func:`validate_edited`.
"""

from __future__ import annotations

from dataclasses import replace

import yaml

from mirrorbits.admin.commands import go_url_parse_error
from mirrorbits.model import MIRROR_FIELDS, Mirror

__all__ = ["EditError", "apply_mirror_yaml", "validate_edited"]

#: YAML key -> (Mirror attribute, kind): the editable fields of the model's table.
_KEYS: dict[str, tuple[str, str]] = {f.go: (f.attr, f.kind) for f in MIRROR_FIELDS if f.yaml}

#: A converted value: what a Mirror attribute of the document holds.
_Value = str | bool | int | float

#: Go's zero value of each kind (what ``null`` sets).
_ZERO: dict[str, _Value] = {"str": "", "bool": False, "int": 0, "uint": 0, "float32": 0.0, "redirects": 0}

_TAG = "tag:yaml.org,2002:"
_GO_TYPE = {"str": "string", "bool": "bool", "int": "int", "uint": "uint", "float32": "float32",
            "redirects": "bool"}


class EditError(Exception):
    """The edited document cannot be used; the message is what the user sees before ``Retry?``."""


def _short_tag(node: yaml.Node) -> str:
    tag = node.tag or ""
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _convert(node: yaml.Node, kind: str, line: int) -> tuple[_Value | None, str | None]:
    """(value, error) for one value node."""
    if not isinstance(node, yaml.ScalarNode):
        kind_name = "!!seq" if isinstance(node, yaml.SequenceNode) else "!!map"
        return None, f"line {line}: cannot unmarshal {kind_name} into {_GO_TYPE[kind]}"
    tag = _short_tag(node)
    value = node.value
    bad = f"line {line}: cannot unmarshal {tag} `{value}` into {_GO_TYPE[kind]}"
    if tag == "!!null":
        return _ZERO[kind], None
    constructed = yaml.SafeLoader(" ").construct_object(node) if tag != "!!str" else value
    if kind == "str":
        return value, None
    if kind in ("bool", "redirects"):
        if tag != "!!bool":
            return None, bad
        if kind == "redirects":
            return (1 if constructed else 2), None
        return bool(constructed), None
    if kind in ("int", "uint"):
        if tag == "!!float" and isinstance(constructed, float) and constructed.is_integer():
            constructed = int(constructed)
        elif tag != "!!int":
            return None, bad
        if kind == "uint" and constructed < 0 or not -(1 << 63) <= constructed < (1 << 64):
            return None, bad
        return int(constructed), None
    if tag not in ("!!int", "!!float"):
        return None, bad
    return float(constructed), None


def _syntax_error(e: yaml.YAMLError) -> EditError:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if problem.startswith("expected ") and ", but " in problem:
        problem = "did not find expected " + problem[len("expected "):].split(", but ", 1)[0]
    line = mark.line + 1 if mark is not None else 1
    return EditError(f"yaml: line {line}: {problem}")


def apply_mirror_yaml(text: str, base: Mirror) -> Mirror:
    """The record ``base`` with the values of the YAML document ``text`` applied; EditError if the
    document does not parse, has wrong types, unknown or duplicate keys."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise _syntax_error(e) from None
    if root is None:
        return base
    if not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1
        raise EditError(f"yaml: unmarshal errors:\n  line {line}: cannot unmarshal {_short_tag(root)} "
                        f"into Mirror")
    changes: dict[str, object] = {}
    errors: list[str] = []
    seen: dict[str, int] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
        if key in seen:
            raise EditError(f'yaml: unmarshal errors:\n  line {line}: mapping key "{key}" already '
                            f"defined at line {seen[key]}")
        seen[key] = line
        spec = _KEYS.get(key)
        if spec is None:
            errors.append(f"line {line}: field {key} not found in type Mirror")
            continue
        attr, kind = spec
        value, err = _convert(value_node, kind, value_node.start_mark.line + 1)
        if err is not None:
            errors.append(err)
            continue
        changes[attr] = value
    if errors:
        raise EditError("yaml: unmarshal errors:\n  " + "\n  ".join(errors))
    return replace(base, **changes)  # type: ignore[arg-type]  # values typed per field by _convert


def validate_edited(m: Mirror) -> None:
    """The ``add`` rules applied to an edited record (deviation from Go, which checked nothing)."""
    if not m.name:
        raise EditError("The identifier cannot be empty")
    if " " in m.name:
        raise EditError("The identifier cannot contain a space")
    if not m.http_url:
        raise EditError("You *must* pass at least an HTTP URL")
    url = m.http_url
    if url.startswith("http://") or url.startswith("https://"):
        if go_url_parse_error(url) is not None:
            raise EditError("Can't parse HTTP URL")
    elif "://" in url:
        raise EditError("The HTTP URL has an invalid scheme")
    elif go_url_parse_error("http://" + url) is not None:
        raise EditError("Can't parse HTTP URL")
