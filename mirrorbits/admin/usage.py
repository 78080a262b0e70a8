"""The ``mirrorbits`` command table, help text and usage blocks, byte for byte as the Go client prints them.

Everything a user reads when they get the syntax wrong is generated here from declarative definitions,
byte-identical to the Go CLI, so scripts and muscle memory keep working. Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from mirrorbits.admin.goflag import (
    FlagDef,
    FlagSet,
    bool_flag,
    int_flag,
    string_flag,
    uint_flag,
)

__all__ = [
    "Command",
    "COMMANDS",
    "GLOBAL_FLAGS",
    "DAEMON_FLAGS",
    "Dispatch",
    "DispatchKind",
    "help_text",
    "command_usage",
    "command_flagset",
    "global_flagset",
    "daemon_flagset",
    "lookup_command",
    "dispatch",
    "command_not_found_text",
    "STATS_SUBCOMMANDS",
    "stats_subcommand_flagset",
]


@dataclass(frozen=True)
class Command:
    """One CLI sub-command.

    ``summary`` is the line in the help table; ``description`` the paragraph of its usage block (the Go
    code has two different texts for most commands); ``signature`` follows ``mirrorbits <name>``.
    """

    name: str
    summary: str
    signature: str
    description: str
    flags: tuple[FlagDef, ...] = ()

    def flagset(self) -> FlagSet:
        """The flag set whose usage (on ``-help`` or a parse error) is this command's usage block."""
        return FlagSet(self.name, self.flags, usage=lambda fs: _usage_block(self.name, self.signature,
                                                                            self.description, fs))

    def usage(self) -> str:
        """The exact usage block, starting with an empty line."""
        return self.flagset().usage_text()


def _usage_block(name: str, signature: str, description: str, fs: FlagSet) -> str:
    # Go: fmt.Fprintf(os.Stderr, "\nUsage: mirrorbits %s %s\n\n%s\n\n", ...) then PrintDefaults().
    return f"\nUsage: mirrorbits {name} {signature}\n\n{description}\n\n" + fs.defaults_text()


_F = "Never prompt for confirmation"

#: Every client command, in the order of the help table (alphabetical, as in Go).
COMMANDS: tuple[Command, ...] = (
    Command(
        "add", "Add a new mirror", "[OPTIONS] IDENTIFIER", "Add a new mirror",
        (
            string_flag("http", "", "HTTP base URL"),
            string_flag("rsync", "", "RSYNC base URL (for scanning only)"),
            string_flag("ftp", "", "FTP base URL (for scanning only)"),
            string_flag("sponsor-name", "", "Name of the sponsor"),
            string_flag("sponsor-url", "", "URL of the sponsor"),
            string_flag("sponsor-logo", "", "URL of a logo to display for this mirror"),
            string_flag("admin-name", "", "Admin's name"),
            string_flag("admin-email", "", "Admin's email"),
            string_flag("custom-data", "",
                        "Associated data to return when the mirror is selected (i.e. json document)"),
            bool_flag("continent-only", False, "The mirror should only handle its continent"),
            bool_flag("country-only", False, "The mirror should only handle its country"),
            bool_flag("as-only", False, "The mirror should only handle clients in the same AS number"),
            int_flag("score", 0, "Weight to give to the mirror during selection"),
            string_flag("comment", "", "Comment"),
        ),
    ),
    Command("disable", "Disable a mirror", "[IDENTIFIER]", "Disable a mirror"),
    Command("edit", "Edit a mirror", "[IDENTIFIER]", "Edit a mirror"),
    Command("enable", "Enable a mirror", "[IDENTIFIER]", "Enable a mirror"),
    Command(
        "export", "Export the mirror database", "[format]",
        "Export the mirror database.\n\nAvailable formats: mirmon",
        (
            bool_flag("rsync", True, "Export rsync URLs"),
            bool_flag("http", True, "Export http URLs"),
            bool_flag("ftp", True, "Export ftp URLs"),
            bool_flag("disabled", True, "Export disabled mirrors"),
        ),
    ),
    Command(
        "geoupdate", "Update geolocation of a mirror", "[IDENTIFIER]", "Update geolocation of a mirror",
        (bool_flag("f", False, _F),),
    ),
    Command(
        "list", "List all mirrors", "", "Get the list of mirrors",
        (
            bool_flag("http", False, "Print HTTP addresses"),
            bool_flag("rsync", False, "Print rsync addresses"),
            bool_flag("ftp", False, "Print FTP addresses"),
            bool_flag("location", False, "Print the country and continent code"),
            bool_flag("state", True, "Print the state of the mirror"),
            bool_flag("score", False, "Print the score of the mirror"),
            bool_flag("disabled", False, "List disabled mirrors only"),
            bool_flag("enabled", False, "List enabled mirrors only"),
            bool_flag("down", False, "List only mirrors currently down"),
            # Extension: a REASON column with the last health-check failure (hidden in the usage
            # block, which stays Go's byte for byte).
            FlagDef("reason", "bool", False, "Print why a mirror is down", hidden=True),
            # Extension: IPV4 and IPV6 columns, the last per-family check (SelectByIPFamily).
            FlagDef("families", "bool", False, "Print the state over IPv4 and IPv6", hidden=True),
        ),
    ),
    Command(
        "logs", "Print logs of a mirror", "[IDENTIFIER]", "Print logs of a mirror",
        (uint_flag("l", 500, "Maximum number of logs to return"),),
    ),
    Command(
        "refresh", "Refresh the local repository", "", "Scan the local repository",
        (bool_flag("rehash", False, "Force a rehash of the files"),),
    ),
    Command("reload", "Reload configuration", "", "Reload configuration"),
    Command(
        "remove", "Remove a mirror", "IDENTIFIER", "Remove an existing mirror",
        (bool_flag("f", False, _F),),
    ),
    Command(
        "scan", "(Re-)Scan a mirror", "[IDENTIFIER]", "(Re-)Scan a mirror",
        (
            bool_flag("enable", False, "Enable the mirror automatically if the scan is successful"),
            bool_flag("all", False, "Scan all mirrors at once"),
            bool_flag("ftp", False, "Force a scan using FTP"),
            bool_flag("rsync", False, "Force a scan using rsync"),
            uint_flag("timeout", 0, "Timeout in seconds"),
        ),
    ),
    Command("show", "Print a mirror configuration", "[IDENTIFIER]", "Print a mirror configuration"),
    Command(
        "stats", "Show download stats", "[OPTIONS] [mirror|file] [IDENTIFIER|PATTERN]",
        "Show download stats for a particular mirror or a file pattern",
        (
            string_flag("start-date", "", "Starting date (format YYYY-MM-DD)"),
            string_flag("end-date", "", "Ending date (format YYYY-MM-DD)"),
            bool_flag("h", True, "Human readable version"),
        ),
    ),
    Command("upgrade", "Seamless binary upgrade", "", "Seamless binary upgrade"),
    Command("version", "Print version information", "", "Print version information"),
)

_BY_NAME = {c.name: c for c in COMMANDS}

#: ``stats prune|usage|export``: statistics housekeeping, not in the Go CLI.  They are words after
#: ``stats`` (whose Go usage block stays as it was), each with its own flags.
STATS_SUBCOMMANDS: dict[str, Command] = {c.name: c for c in (
    Command(
        "prune", "Prune old statistics", "[OPTIONS]",
        "Delete the statistics keys older than the StatsRetention window of the configuration\n"
        "(never the yearly and total counters), printing each key and the memory it frees",
        (bool_flag("dry-run", False, "Only print what would be deleted"),),
    ),
    Command("usage", "Statistics memory", "", "Print the Redis memory taken by each family of statistics keys"),
    Command(
        "export", "Export statistics", "[OPTIONS]",
        "Print the download counters of every file and mirror, over all time or a period",
        (
            string_flag("format", "csv", "Output format: csv or json"),
            string_flag("from", "", "First day of the period (format YYYY-MM-DD)"),
            string_flag("to", "", "Last day of the period (format YYYY-MM-DD, default: today)"),
        ),
    ),
)}


def stats_subcommand_flagset(word: str) -> FlagSet:
    """Flag set of ``stats <word>``; its usage block reads ``Usage: mirrorbits stats <word> ...``."""
    c = STATS_SUBCOMMANDS[word]
    return FlagSet(f"stats {c.name}", c.flags, usage=lambda fs: _usage_block(
        f"stats {c.name}", c.signature, c.description, fs))

#: Client (global) flags.
GLOBAL_FLAGS: tuple[FlagDef, ...] = (
    string_flag("h", "localhost", "Server host"),
    uint_flag("p", 3390, "Server port"),
    string_flag("P", "", "Server password"),
    bool_flag("a", False, "Ask for server password"),
    bool_flag("debug", False, "Debug mode"),
    string_flag("cpuprofile", "", "write cpu profile to file"),
)

#: ``mirrorbits daemon`` flags.
DAEMON_FLAGS: tuple[FlagDef, ...] = (
    string_flag("config", "", "Path to the config file"),
    string_flag("p", "", "Path to pid file"),
    string_flag("log", "", "File to output logs (default: stderr)"),
    bool_flag("debug", False, "Debug mode"),
    bool_flag("monitor", True, "Enable the background mirrors monitor"),
    string_flag("cpuprofile", "", "write cpu profile to file"),
)


def global_flagset(argv0: str) -> FlagSet:
    """The client flag set; its usage reads ``Usage of <argv0>:`` like Go's ``flag.CommandLine``."""
    return FlagSet(argv0, GLOBAL_FLAGS)


def daemon_flagset() -> FlagSet:
    """The ``daemon`` flag set (usage ``Usage of daemon:``)."""
    return FlagSet("daemon", DAEMON_FLAGS)


def help_text() -> str:
    """The help text of the Go client, exactly (ends with an extra empty line); goes to stderr."""
    out = "Usage: mirrorbits [OPTIONS] COMMAND [arg...]\n\nA smart download redirector.\n\n"
    out += "Server commands:\n" + _help_line("daemon", "Start the server") + "\n"
    out += "CLI commands:\n"
    for c in COMMANDS:
        out += _help_line(c.name, c.summary)
    return out + "\n"


def _help_line(name: str, summary: str) -> str:
    # Go's "    %-10.10s%s\n": padded and truncated to 10 characters.
    return f"    {name[:10]:<10}{summary}\n"


def command_not_found_text(word: str) -> str:
    """The stdout line for an unknown command (``fmt.Println("Error: Command not found:", word)``)."""
    return f"Error: Command not found: {word}\n"


def lookup_command(word: str) -> Command | None:
    """Find a command the way Go does: first character upper-cased, the rest lower-cased.

    ``LIST``, ``List`` and ``lIsT`` all find ``list``. The empty word finds nothing (Go panicked on it).
    ``help`` is not a :class:`Command` here; see :func:`dispatch`.
    """
    if not word or not word[0].isascii():
        # Go upper-cases the first *byte*; a non-ASCII first character can never match a method name.
        return None
    canonical = word[0].lower() + word[1:].lower()
    return _BY_NAME.get(canonical)


def command_usage(name: str) -> str:
    """Usage block of the named command."""
    return _BY_NAME[name].usage()


def command_flagset(name: str) -> FlagSet:
    """Flag set of the named command."""
    return _BY_NAME[name].flagset()


class DispatchKind(enum.Enum):
    """What to do with the words left after the global flags."""

    HELP = "help"
    UNKNOWN = "unknown"
    COMMAND = "command"


@dataclass(frozen=True)
class Dispatch:
    """Result of :func:`dispatch`: the command (if any), its arguments, and the word typed."""

    kind: DispatchKind
    word: str = ""
    command: Command | None = None
    args: tuple[str, ...] = ()


def dispatch(words: Sequence[str]) -> Dispatch:
    """Decide between help, unknown command and a command.

    No words or ``help`` in any case → HELP (Go panicked on ``HELP``/``Help``; we show the help);
    the empty word → UNKNOWN (Go panicked). Extra words after ``help`` are ignored.
    """
    if not words:
        return Dispatch(DispatchKind.HELP)
    word = words[0]
    if word.lower() == "help" and word.isascii():
        return Dispatch(DispatchKind.HELP, word)
    command = lookup_command(word)
    if command is None:
        return Dispatch(DispatchKind.UNKNOWN, word)
    return Dispatch(DispatchKind.COMMAND, word, command, tuple(words[1:]))
