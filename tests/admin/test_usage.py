"""Help text, every Appendix A usage block (byte for byte) and command dispatch."""

from __future__ import annotations

import pytest

from mirrorbits.admin.goflag import ParseStatus
from mirrorbits.admin.usage import (
    COMMANDS,
    DispatchKind,
    command_flagset,
    command_not_found_text,
    command_usage,
    daemon_flagset,
    dispatch,
    global_flagset,
    help_text,
    lookup_command,
)

HELP = """Usage: mirrorbits [OPTIONS] COMMAND [arg...]

A smart download redirector.

Server commands:
    daemon    Start the server

CLI commands:
    add       Add a new mirror
    disable   Disable a mirror
    edit      Edit a mirror
    enable    Enable a mirror
    export    Export the mirror database
    geoupdate Update geolocation of a mirror
    list      List all mirrors
    logs      Print logs of a mirror
    refresh   Refresh the local repository
    reload    Reload configuration
    remove    Remove a mirror
    scan      (Re-)Scan a mirror
    show      Print a mirror configuration
    stats     Show download stats
    upgrade   Seamless binary upgrade
    version   Print version information

"""

# The Go CLI's usage texts, with "\t" written for the real TABs.
APPENDIX_A = {
    "list": r"""
Usage: mirrorbits list\s

Get the list of mirrors

  -disabled
    \tList disabled mirrors only
  -down
    \tList only mirrors currently down
  -enabled
    \tList enabled mirrors only
  -ftp
    \tPrint FTP addresses
  -http
    \tPrint HTTP addresses
  -location
    \tPrint the country and continent code
  -rsync
    \tPrint rsync addresses
  -score
    \tPrint the score of the mirror
  -state
    \tPrint the state of the mirror (default true)
""",
    "add": r"""
Usage: mirrorbits add [OPTIONS] IDENTIFIER

Add a new mirror

  -admin-email string
    \tAdmin's email
  -admin-name string
    \tAdmin's name
  -as-only
    \tThe mirror should only handle clients in the same AS number
  -comment string
    \tComment
  -continent-only
    \tThe mirror should only handle its continent
  -country-only
    \tThe mirror should only handle its country
  -custom-data string
    \tAssociated data to return when the mirror is selected (i.e. json document)
  -ftp string
    \tFTP base URL (for scanning only)
  -http string
    \tHTTP base URL
  -rsync string
    \tRSYNC base URL (for scanning only)
  -score int
    \tWeight to give to the mirror during selection
  -sponsor-logo string
    \tURL of a logo to display for this mirror
  -sponsor-name string
    \tName of the sponsor
  -sponsor-url string
    \tURL of the sponsor
""",
    "remove": r"""
Usage: mirrorbits remove IDENTIFIER

Remove an existing mirror

  -f\tNever prompt for confirmation
""",
    "scan": r"""
Usage: mirrorbits scan [IDENTIFIER]

(Re-)Scan a mirror

  -all
    \tScan all mirrors at once
  -enable
    \tEnable the mirror automatically if the scan is successful
  -ftp
    \tForce a scan using FTP
  -rsync
    \tForce a scan using rsync
  -timeout uint
    \tTimeout in seconds
""",
    "refresh": r"""
Usage: mirrorbits refresh\s

Scan the local repository

  -rehash
    \tForce a rehash of the files
""",
    "edit": r"""
Usage: mirrorbits edit [IDENTIFIER]

Edit a mirror

""",
    "geoupdate": r"""
Usage: mirrorbits geoupdate [IDENTIFIER]

Update geolocation of a mirror

  -f\tNever prompt for confirmation
""",
    "show": r"""
Usage: mirrorbits show [IDENTIFIER]

Print a mirror configuration

""",
    "export": r"""
Usage: mirrorbits export [format]

Export the mirror database.

Available formats: mirmon

  -disabled
    \tExport disabled mirrors (default true)
  -ftp
    \tExport ftp URLs (default true)
  -http
    \tExport http URLs (default true)
  -rsync
    \tExport rsync URLs (default true)
""",
    "enable": r"""
Usage: mirrorbits enable [IDENTIFIER]

Enable a mirror

""",
    "disable": r"""
Usage: mirrorbits disable [IDENTIFIER]

Disable a mirror

""",
    "stats": r"""
Usage: mirrorbits stats [OPTIONS] [mirror|file] [IDENTIFIER|PATTERN]

Show download stats for a particular mirror or a file pattern

  -end-date string
    \tEnding date (format YYYY-MM-DD)
  -h\tHuman readable version (default true)
  -start-date string
    \tStarting date (format YYYY-MM-DD)
""",
    "logs": r"""
Usage: mirrorbits logs [IDENTIFIER]

Print logs of a mirror

  -l uint
    \tMaximum number of logs to return (default 500)
""",
    "reload": r"""
Usage: mirrorbits reload\s

Reload configuration

""",
    "upgrade": r"""
Usage: mirrorbits upgrade\s

Seamless binary upgrade

""",
    "version": r"""
Usage: mirrorbits version\s

Print version information

""",
}

GLOBAL_USAGE = r"""Usage of mirrorbits:
  -P string
    \tServer password
  -a\tAsk for server password
  -cpuprofile string
    \twrite cpu profile to file
  -debug
    \tDebug mode
  -h string
    \tServer host (default "localhost")
  -p uint
    \tServer port (default 3390)
"""

DAEMON_USAGE = r"""Usage of daemon:
  -config string
    \tPath to the config file
  -cpuprofile string
    \twrite cpu profile to file
  -debug
    \tDebug mode
  -log string
    \tFile to output logs (default: stderr)
  -monitor
    \tEnable the background mirrors monitor (default true)
  -p string
    \tPath to pid file
"""


def _tabs(text: str) -> str:
    """Turn the appendix notation into bytes: \\t is a TAB, \\s a (trailing) space."""
    return text.replace("\\t", "\t").replace("\\s", " ")


def test_help_text_exact() -> None:
    assert help_text() == HELP
    assert help_text().endswith("version   Print version information\n\n")


def test_every_command_has_an_appendix_block() -> None:
    assert sorted(c.name for c in COMMANDS) == sorted(APPENDIX_A)


@pytest.mark.parametrize("name", sorted(APPENDIX_A))
def test_usage_block_matches_appendix_a(name: str) -> None:
    assert command_usage(name) == _tabs(APPENDIX_A[name])


def test_global_and_daemon_usage() -> None:
    assert global_flagset("mirrorbits").usage_text() == _tabs(GLOBAL_USAGE)
    assert global_flagset("/usr/bin/mirrorbits").usage_text().startswith("Usage of /usr/bin/mirrorbits:\n")
    assert daemon_flagset().usage_text() == _tabs(DAEMON_USAGE)


def test_global_flags_parse() -> None:
    fs = global_flagset("mirrorbits")
    r = fs.parse(["-p", "13390", "-P", "sekret", "list", "-state=false"])
    assert r.ok
    assert (r["p"], r["P"], r["h"], r["a"]) == (13390, "sekret", "localhost", False)
    assert r.args == ("list", "-state=false")
    # -h is the host: alone it needs an argument, exit 2.
    r = fs.parse(["-h"])
    assert r.status is ParseStatus.ERROR and r.exit_code == 2
    assert r.stderr == "flag needs an argument: -h\n" + _tabs(GLOBAL_USAGE)
    r = fs.parse(["--help"])
    assert r.status is ParseStatus.HELP and r.exit_code == 0 and r.stderr == _tabs(GLOBAL_USAGE)


def test_daemon_flags_parse_and_errors() -> None:
    fs = daemon_flagset()
    r = fs.parse(["-config", "/etc/m.conf", "-monitor=false", "-debug"])
    assert r.ok and r["config"] == "/etc/m.conf" and r["monitor"] is False and r["debug"] is True
    assert fs.parse([])["monitor"] is True
    r = fs.parse(["-bogus"])
    assert r.stderr == "flag provided but not defined: -bogus\n" + _tabs(DAEMON_USAGE)


def test_subcommand_parse_error_prints_error_then_block() -> None:
    r = command_flagset("logs").parse(["-l", "-1", "mirror1"])
    assert r.stderr == 'invalid value "-1" for flag -l: parse error\n' + _tabs(APPENDIX_A["logs"])
    r = command_flagset("list").parse(["-bogus"])
    assert r.stderr == "flag provided but not defined: -bogus\n" + _tabs(APPENDIX_A["list"])
    r = command_flagset("stats").parse(["-h=false", "mirror", "m1"])
    assert r.ok and r["h"] is False and r.args == ("mirror", "m1")
    r = command_flagset("stats").parse(["-help"])
    assert r.status is ParseStatus.HELP  # stats defines -h but not -help
    assert r.stderr == _tabs(APPENDIX_A["stats"])


@pytest.mark.parametrize("word", ["list", "LIST", "List", "lIsT"])
def test_lookup_is_case_insensitive(word: str) -> None:
    c = lookup_command(word)
    assert c is not None and c.name == "list"


@pytest.mark.parametrize("word", ["", "daemon", "foo", "lis", "ｌist", "\u0130list"])
def test_lookup_unknown(word: str) -> None:
    assert lookup_command(word) is None


def test_dispatch() -> None:
    assert dispatch([]).kind is DispatchKind.HELP
    assert dispatch(["help", "list"]).kind is DispatchKind.HELP
    # Go panicked on these two; the spec asks for help / unknown command instead.
    assert dispatch(["HELP"]).kind is DispatchKind.HELP
    assert dispatch(["Help"]).kind is DispatchKind.HELP
    d = dispatch([""])
    assert d.kind is DispatchKind.UNKNOWN and d.word == ""
    d = dispatch(["daemon"])
    assert d.kind is DispatchKind.UNKNOWN and d.word == "daemon"
    d = dispatch(["Scan", "-all"])
    assert d.kind is DispatchKind.COMMAND and d.command is not None
    assert d.command.name == "scan" and d.args == ("-all",)


def test_command_not_found_text() -> None:
    assert command_not_found_text("foo") == "Error: Command not found: foo\n"
