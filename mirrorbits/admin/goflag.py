"""A small, pure re-implementation of Go's ``flag`` package.

The Go CLI's users (and its bash completion, and scripts) rely on Go's flag grammar and on its exact
error and usage texts, so the Python CLI parses its global, ``daemon`` and sub-command flags the same
way:

* ``-x`` and ``--x`` are the same; ``-x=v`` or ``-x v`` for non-boolean flags;
* booleans take no separate argument (``-x`` means true; ``-x=false`` turns one off);
* parsing stops at the first non-flag word, at a lone ``-``, and after ``--`` (which is consumed);
* ``-h``/``-help`` print the usage when the set does not define them;
* integers follow ``strconv.ParseInt(s, 0, 64)`` (``0x``, ``0o``, ``0b``, leading-zero octal, ``_``).

Nothing here writes to a stream or exits: :meth:`FlagSet.parse` returns a :class:`ParseResult` carrying
the values, the remaining words and the exact text Go would have written to stderr, so the caller decides
what to print and which exit status to use.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mirrorbits.gocompat import NumError, go_quote, parse_go_bool, parse_go_int, parse_go_uint

__all__ = [
    "FlagDef",
    "FlagSet",
    "ParseResult",
    "ParseStatus",
    "bool_flag",
    "string_flag",
    "int_flag",
    "uint_flag",
]

FlagValue = bool | str | int

_KINDS = ("bool", "string", "int", "uint")

#: Go's flag package reports a strconv failure by its kind only.
_ERR_PARSE = "parse error"
_ERR_RANGE = "value out of range"


def _flag_error(exc: NumError) -> ValueError:
    """``flag``'s ``numError``: ``value out of range`` for ``ErrRange``, else ``parse error``."""
    return ValueError(_ERR_RANGE if exc.out_of_range else _ERR_PARSE)


@dataclass(frozen=True)
class FlagDef:
    """One declared flag: what ``fs.Bool/String/Int/Uint(name, default, usage)`` declares in Go.

    ``bits`` is the integer width used for range checks (Go's ``int``/``uint`` are 64-bit on amd64).
    """

    name: str
    kind: str
    default: FlagValue
    usage: str
    bits: int = 64
    #: Accepted but left out of the usage text (our extensions that must not change Go's usage blocks).
    hidden: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown flag kind {self.kind!r}")
        if not self.name or self.name.startswith("-") or "=" in self.name:
            raise ValueError(f"bad flag name {self.name!r}")

    @property
    def is_bool(self) -> bool:
        return self.kind == "bool"

    def default_text(self) -> str:
        """``Flag.DefValue``: the default as Go's Value.String() renders it."""
        if self.kind == "bool":
            return "true" if self.default else "false"
        return str(self.default)

    def is_zero_default(self) -> bool:
        """Go's isZeroValue: defaults equal to the type's zero value are not shown."""
        return self.default_text() == {"bool": "false", "string": "", "int": "0", "uint": "0"}[self.kind]

    def convert(self, text: str) -> FlagValue:
        """Value.Set: raises ValueError whose message is Go's error text ('parse error', ...)."""
        if self.kind == "string":
            return text
        try:
            if self.kind == "bool":
                return parse_go_bool(text)
            if self.kind == "int":
                return parse_go_int(text, self.bits, base=0)
            return parse_go_uint(text, self.bits, base=0)
        except NumError as exc:
            raise _flag_error(exc) from None

    def unquote_usage(self) -> tuple[str, str]:
        """flag.UnquoteUsage: a back-quoted word in the usage names the argument; else the type name."""
        usage = self.usage
        start = usage.find("`")
        if start >= 0:
            end = usage.find("`", start + 1)
            if end >= 0:
                name = usage[start + 1 : end]
                return name, usage[:start] + name + usage[end + 1 :]
        name = {"bool": "", "string": "string", "int": "int", "uint": "uint"}[self.kind]
        return name, usage


def bool_flag(name: str, default: bool, usage: str) -> FlagDef:
    """Shorthand for ``FlagDef(name, "bool", default, usage)``."""
    return FlagDef(name, "bool", default, usage)


def string_flag(name: str, default: str, usage: str) -> FlagDef:
    """Shorthand for ``FlagDef(name, "string", default, usage)``."""
    return FlagDef(name, "string", default, usage)


def int_flag(name: str, default: int, usage: str, bits: int = 64) -> FlagDef:
    """Shorthand for ``FlagDef(name, "int", default, usage)``."""
    return FlagDef(name, "int", default, usage, bits)


def uint_flag(name: str, default: int, usage: str, bits: int = 64) -> FlagDef:
    """Shorthand for ``FlagDef(name, "uint", default, usage)``."""
    return FlagDef(name, "uint", default, usage, bits)


class ParseStatus(enum.Enum):
    """Outcome of a parse: OK, HELP (``-h``/``-help`` asked for usage) or ERROR."""

    OK = "ok"
    HELP = "help"
    ERROR = "error"


@dataclass(frozen=True)
class ParseResult:
    """What ``FlagSet.Parse`` leaves behind, without any side effect.

    ``stderr`` is exactly what Go would have printed (error line and/or usage). ``exit_code`` is what an
    ``ExitOnError`` flag set would exit with (0 for help, 2 for errors, 0 when OK); the Go sub-commands
    used ``ContinueOnError`` and exited 0 — callers choose.
    """

    status: ParseStatus
    values: Mapping[str, FlagValue]
    args: tuple[str, ...]
    actual: frozenset[str] = frozenset()
    error: str | None = None
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.status is ParseStatus.OK

    @property
    def exit_code(self) -> int:
        return 2 if self.status is ParseStatus.ERROR else 0

    def __getitem__(self, name: str) -> FlagValue:
        return self.values[name]

    def get_bool(self, name: str) -> bool:
        value = self.values[name]
        assert isinstance(value, bool)
        return value

    def get_str(self, name: str) -> str:
        value = self.values[name]
        assert isinstance(value, str)
        return value

    def get_int(self, name: str) -> int:
        value = self.values[name]
        assert isinstance(value, int) and not isinstance(value, bool)
        return value

    def is_set(self, name: str) -> bool:
        """Whether the flag appeared on the command line (Go's ``Visit``)."""
        return name in self.actual


@dataclass(frozen=True)
class FlagSet:
    """A named set of flags; immutable, so one definition can be parsed many times.

    ``usage`` renders the usage text printed on ``-help`` and after an error; by default it is Go's
    ``Usage of <name>:`` followed by :meth:`defaults_text`.
    """

    name: str
    flags: tuple[FlagDef, ...]
    usage: Callable[[FlagSet], str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.flags]
        if len(set(names)) != len(names):
            raise ValueError(f"flag redefined in set {self.name!r}")

    def lookup(self, name: str) -> FlagDef | None:
        for f in self.flags:
            if f.name == name:
                return f
        return None

    def defaults(self) -> dict[str, FlagValue]:
        return {f.name: f.default for f in self.flags}

    def defaults_text(self) -> str:
        """Go's ``PrintDefaults``: flags sorted by name, exact spacing and TABs."""
        lines = []
        for f in sorted(self.flags, key=lambda d: d.name.encode("utf-8")):
            if f.hidden:
                continue
            arg, usage = f.unquote_usage()
            b = f"  -{f.name}"
            if arg:
                b += " " + arg
            # Go: one-letter boolean flags (b.Len() <= 4 bytes) keep the help on the same line.
            if len(b.encode("utf-8")) <= 4:
                b += "\t"
            else:
                b += "\n    \t"
            b += usage.replace("\n", "\n    \t")
            if not f.is_zero_default():
                if f.kind == "string":
                    b += f" (default {go_quote(f.default_text())})"
                else:
                    b += f" (default {f.default_text()})"
            lines.append(b + "\n")
        return "".join(lines)

    def usage_text(self) -> str:
        """The text Go's ``f.usage()`` prints."""
        if self.usage is not None:
            return self.usage(self)
        header = "Usage:\n" if self.name == "" else f"Usage of {self.name}:\n"
        return header + self.defaults_text()

    def parse(self, arguments: Sequence[str]) -> ParseResult:
        """Go's ``FlagSet.Parse``: stop at the first non-flag; never raises on user input."""
        values: dict[str, FlagValue] = self.defaults()
        actual: set[str] = set()
        args = list(arguments)

        def fail(message: str) -> ParseResult:
            return ParseResult(
                ParseStatus.ERROR,
                values,
                tuple(args),
                frozenset(actual),
                message,
                message + "\n" + self.usage_text(),
            )

        while args:
            s = args[0]
            if len(s) < 2 or s[0] != "-":
                break
            num_minuses = 1
            if s[1] == "-":
                num_minuses = 2
                if len(s) == 2:  # "--" terminates the flags
                    args.pop(0)
                    break
            name = s[num_minuses:]
            if not name or name[0] in "-=":
                return fail(f"bad flag syntax: {s}")
            args.pop(0)
            has_value = False
            value = ""
            eq = name.find("=", 1)
            if eq > 0:
                value = name[eq + 1 :]
                name = name[:eq]
                has_value = True
            flag = self.lookup(name)
            if flag is None:
                if name in ("help", "h"):
                    return ParseResult(
                        ParseStatus.HELP, values, tuple(args), frozenset(actual), "flag: help requested",
                        self.usage_text(),
                    )
                return fail(f"flag provided but not defined: -{name}")
            if flag.is_bool:
                text = value if has_value else "true"
                try:
                    values[name] = flag.convert(text)
                except ValueError as exc:
                    if has_value:
                        return fail(f"invalid boolean value {go_quote(value)} for -{name}: {exc}")
                    return fail(f"invalid boolean flag {name}: {exc}")  # pragma: no cover - unreachable
            else:
                if not has_value and args:
                    value = args.pop(0)
                    has_value = True
                if not has_value:
                    return fail(f"flag needs an argument: -{name}")
                try:
                    values[name] = flag.convert(value)
                except ValueError as exc:
                    return fail(f"invalid value {go_quote(value)} for flag -{name}: {exc}")
            actual.add(name)
        return ParseResult(ParseStatus.OK, values, tuple(args), frozenset(actual))
