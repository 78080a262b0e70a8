"""The ``mirrorbits`` client commands (every word of the console script but ``daemon``).

The console script itself is :mod:`mirrorbits.console`: it starts the daemon for ``daemon`` and runs
:func:`run` for the rest.  This module is the command table only, shared with the SSH manhole, so it
never imports the daemon's assembly.

Arguments, texts, columns and prompts follow the Go CLI, because scripts
parse them.  Commands run against the daemon's admin channel (:mod:`mirrorbits.admin.rpc`,
``-h``/``-p``/``-P``/``-a`` as in Go).

When the daemon cannot be reached, the commands that only need Redis (list, show, add, edit, enable,
disable, remove, geoupdate, logs, export, stats) run directly on Redis instead, after saying so on
stderr.  The Redis settings then come from the configuration file named by ``$MIRRORBITS_CONFIG``,
else ``/etc/mirrorbits.conf`` (the Go client never reads a config; with neither file the command fails,
saying that the daemon cannot be reached).  ``refresh``, ``scan``, ``reload``, ``upgrade`` and the server half of
``version`` always need the daemon.

The same command runner serves the SSH manhole's non-interactive commands: it writes through a
:class:`CliIO`, never to ``sys.stdout`` directly.

Deliberate deviations from Go:

* exit status: 0 on success, 1 on errors, **2 on usage errors** (Go exited 0), 255 for ``add``
  validation errors (as Go); an unknown command exits 2; ``scan -all`` exits 1 if a mirror failed;
* an exact mirror name wins over substring matches;
* ``stats`` rejects a malformed date (Go silently used "now");
* ``export json`` and ``export csv`` exist besides ``mirmon`` (the usage block still lists mirmon
  only, byte-identical to Go's); a mirror without country is exported as ``--`` (Go panicked);
* ``list -reason`` (hidden in the usage block) adds a REASON column with the last check failure;
* ``edit`` rejects unknown keys and applies the ``add`` checks; answering a prompt with EOF means "no"
  (Go panicked); the temporary file is always removed;
* ``upgrade`` answers before the daemon starts the upgrade, so success exits 0.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import termios
import tty as tty_mod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from twisted.internet import threads

from mirrorbits.admin import rpc, usage
from mirrorbits.admin.commands import (
    PROTOCOL_ALL,
    PROTOCOL_FTP,
    PROTOCOL_RSYNC,
    AdminCommands,
    AdminError,
    validate_add,
    version_info,
)
from mirrorbits.admin.edityaml import EditError, apply_mirror_yaml, validate_edited
from mirrorbits.admin.formatting import (
    ExportOptions,
    ListOptions,
    edit_file_text,
    fatal_line,
    format_add_success,
    format_edit_success,
    format_export_csv,
    format_export_json,
    format_family_states,
    format_list,
    format_logs,
    format_mirmon,
    format_scan_result,
    format_show,
    format_stats_file,
    format_stats_mirror,
    format_version_block,
    mirror_yaml,
    parse_stats_date_strict,
    split_edit_file,
)
from mirrorbits.admin.formatting.history import format_prune, format_usage
from mirrorbits.admin.goflag import ParseResult
from mirrorbits.config import ConfigError, load_config
from mirrorbits.history.export import export_csv, export_json
from mirrorbits.ipfamily import family_cells
from mirrorbits.model import Mirror
from mirrorbits.reactor import IDaemonReactor, default_reactor
from mirrorbits.redis.connection import RedisClient, RedisSettings

if TYPE_CHECKING:
    from mirrorbits.admin.interface import AdminAPI, MirrorRef

__all__ = ["COMMAND_FUNCTIONS", "CliIO", "StdIO", "run"]

#: Commands that can run on Redis alone when the daemon is down.
LOCAL_COMMANDS = frozenset({"list", "show", "add", "edit", "enable", "disable", "remove", "geoupdate",
                            "logs", "export", "stats"})
CONFIG_ENV = "MIRRORBITS_CONFIG"

EXIT_USAGE = 2


class CliExit(Exception):
    """End the command with this status (the message, if any, has been written already)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class CliIO(Protocol):
    """Where a command reads and writes: the process' streams, or an SSH channel."""

    env: Mapping[str, str]

    def out(self, text: str) -> None: ...

    def err(self, text: str) -> None: ...

    async def readline(self) -> str | None:
        """One line of input without its newline; None at EOF."""

    async def read_password(self) -> str:
        """The ``-a`` prompt's input (raises EOFError/KeyboardInterrupt)."""

    async def run_editor(self, editor: str, path: str) -> int:
        """Run ``editor path`` on the operator's terminal; returns its exit status."""


class StdIO:
    """The process' own streams; blocking reads happen in a thread, off the reactor."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env: Mapping[str, str] = dict(os.environ if env is None else env)

    def out(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def err(self, text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    async def readline(self) -> str | None:
        line: str = await threads.deferToThread(sys.stdin.readline)
        if not line:
            return None
        return line.rstrip("\r\n")

    async def read_password(self) -> str:
        return await threads.deferToThread(_read_password_blocking)

    async def run_editor(self, editor: str, path: str) -> int:
        def run() -> int:
            return subprocess.call([editor, path], env=self.env)

        return await threads.deferToThread(run)


def _read_password_blocking() -> str:
    """Go's gopass.GetPasswdMasked: one ``*`` per byte, backspace erases, CR/LF ends, max 512."""
    fd = sys.stdin.fileno()
    tty = os.isatty(fd)
    old = None
    if tty:
        old = termios.tcgetattr(fd)
        tty_mod.setraw(fd)
    buf = bytearray()
    try:
        while True:
            ch = os.read(fd, 1)
            if not ch:
                raise EOFError("EOF")
            c = ch[0]
            if c in (10, 13):
                break
            if c == 3:
                raise KeyboardInterrupt("interrupted")
            if c in (8, 127):
                if buf:
                    buf.pop()
                    sys.stdout.write("\b \b")
                    sys.stdout.flush()
                continue
            if len(buf) >= 512:
                raise ValueError("maximum byte limit (512) exceeded")
            buf.append(c)
            sys.stdout.write("*")
            sys.stdout.flush()
    finally:
        if old is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
            sys.stdout.write("\n")
            sys.stdout.flush()
    return buf.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------------
# Connection: daemon first, Redis directly as the fallback


class Session:
    """The lazily opened admin connection of one command."""

    def __init__(self, io: CliIO, host: str, port: int, password: str, reactor: IDaemonReactor) -> None:
        self.io = io
        self.host = host
        self.port = port
        self.password = password
        self.reactor = reactor
        self._admin: AdminAPI | None = None
        self._local_client: RedisClient | None = None

    async def admin(self, command: str) -> AdminAPI:
        if self._admin is not None:
            return self._admin

        try:
            remote = await rpc.connect(self.host, self.port, self.password, self.reactor)
        except Exception as e:
            reason = _dial_error(e)
            if command in LOCAL_COMMANDS:
                local = await self._local(reason)
                if local is not None:
                    self._admin = local
                    return local
            self.io.err(f"mirrorbits: cannot reach the daemon at {self.host}:{self.port}: {reason} (is it "
                        "running, and listening there? see RPCListenAddress in its configuration)\n")
            raise CliExit(1) from None
        try:
            await remote.ping()
        except AdminError as e:
            if e.code == "Unauthenticated":
                remote.close()
                self.io.err("Please set the server password with the -P option.\n" if not self.password
                            else "Password refused\n")
                raise CliExit(1) from None
            if e.code == "ResourceExhausted":  # this address gave too many wrong passwords
                remote.close()
                self.io.err(f"mirrorbits: {e.message}\n")
                raise CliExit(1) from None
        self._admin = remote
        return remote

    async def _local(self, reason: str) -> AdminCommands | None:
        """AdminCommands on the Redis named by the config file, or None without a config."""

        path = self.io.env.get(CONFIG_ENV) or ("/etc/mirrorbits.conf"
                                                if os.path.exists("/etc/mirrorbits.conf") else "")
        if not path:
            return None
        try:
            config = load_config(path)
        except ConfigError as e:
            self.io.err(f"mirrorbits: cannot use {path}: {e}\n")
            return None
        if config.embedded_redis:
            self.io.err(f"mirrorbits: {path} uses the daemon's embedded Redis, which is not running\n")
            return None
        settings = RedisSettings.from_config(config)
        client = RedisClient(lambda: settings, reactor=self.reactor)
        client.set_ready()
        try:
            version = await client.execute("GET", "MIRRORBITS_DB_VERSION")
        except Exception as e:
            await client.stop()
            self.io.err(f"mirrorbits: the daemon is not reachable ({reason}) and neither is Redis "
                        f"{settings.address}: {e}\n")
            return None
        if version not in (None, "2"):
            await client.stop()
            self.io.err(f"mirrorbits: Redis {settings.address} holds database version {version}; only the "
                        "daemon may upgrade it\n")
            return None
        self.io.err(f"mirrorbits: the daemon at {self.host}:{self.port} is not reachable ({reason}); "
                    f"working on Redis {settings.address} directly (config {path})\n")
        self._local_client = client
        return AdminCommands(client, lambda: config, where="CLI without the daemon")

    async def close(self) -> None:
        if isinstance(self._admin, rpc.RemoteAdmin):
            self._admin.close()  # the AMP connection (a local AdminCommands holds none)
        if self._local_client is not None:
            await self._local_client.stop()


def _dial_error(e: Exception) -> str:
    text = str(e)
    if "refused" in text.lower():
        return "connection refused"
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "no answer (timed out)"
    if "DNS" in text or "address" in text.lower():
        return f"name lookup failed: {text}"
    return text


# ---------------------------------------------------------------------------------------------------
# Helpers


def _fatal(io: CliIO, message: str) -> CliExit:
    io.err(fatal_line(message))
    return CliExit(1)


def _rpc(e: Exception) -> str:
    """What went wrong, in plain words (Go wrapped it in ``rpc error: code = Unknown desc = ...``)."""

    return e.message if isinstance(e, AdminError) else str(e)


def _usage(io: CliIO, name: str) -> CliExit:
    io.err(usage.command_usage(name))
    return CliExit(EXIT_USAGE)


def _parse(io: CliIO, name: str, args: Sequence[str]) -> ParseResult:
    parsed = usage.command_flagset(name).parse(list(args))
    if not parsed.ok:
        io.err(parsed.stderr)
        # -help asked for the usage: not an error.  A bad flag is one (Go exited 0 for both).
        raise CliExit(0 if parsed.status.value == "help" else EXIT_USAGE)
    return parsed


async def _resolve(io: CliIO, admin: AdminAPI, pattern: str) -> MirrorRef:
    try:
        refs = await admin.resolve(pattern)
    except AdminError as e:
        io.err(f"mirror matching: {e.message}\n")
        raise CliExit(1) from None
    if not refs:
        io.err(f"No match for '{pattern}'\n")
        raise CliExit(1)
    if len(refs) > 1:
        io.err("Multiple match:\n" + "".join(f"  {r.name}\n" for r in refs))
        raise CliExit(1)
    return refs[0]


async def _one_mirror(io: CliIO, s: Session, name: str,
                      args: Sequence[str]) -> tuple[ParseResult, AdminAPI, MirrorRef]:
    """The common start of the commands taking exactly one IDENTIFIER: flags, usage check, the
    connection, and the mirror the identifier designates."""
    p = _parse(io, name, args)
    if len(p.args) != 1:
        raise _usage(io, name)
    admin = await s.admin(name)
    ref = await _resolve(io, admin, p.args[0])
    return p, admin, ref


def _yes(line: str | None) -> bool:
    return bool(line) and line[0] in "yY"  # type: ignore[index]


# ---------------------------------------------------------------------------------------------------
# Commands


async def cmd_list(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p = _parse(io, "list", args)
    if p.args:
        raise _usage(io, "list")
    admin = await s.admin("list")
    try:
        mirrors = await admin.list_mirrors()
        states = await admin.family_states([m.id for m in mirrors]) if p.get_bool("families") else []
    except Exception as e:
        raise _fatal(io, f"list error: {_rpc(e)}") from None
    by_mirror: dict[int, list[tuple[str, str]]] = {}
    for st in states:
        by_mirror.setdefault(st.mirror_id, []).append((st.family, st.state))
    cells = {m.id: family_cells(by_mirror.get(m.id, ())) for m in mirrors}
    io.out(format_list(mirrors, ListOptions.from_flags(p.values, show_reason=p.get_bool("reason")), cells))
    return 0


async def cmd_add(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p = _parse(io, "add", args)
    if not p.args:
        raise _usage(io, "add")
    name = p.args[0]
    error = validate_add(name, p.get_str("http"))
    if error is not None:
        io.err(error + "\n")
        return 255
    mirror = Mirror(
        name=name, http_url=p.get_str("http"), rsync_url=p.get_str("rsync"), ftp_url=p.get_str("ftp"),
        sponsor_name=p.get_str("sponsor-name"), sponsor_url=p.get_str("sponsor-url"),
        sponsor_logo_url=p.get_str("sponsor-logo"), admin_name=p.get_str("admin-name"),
        admin_email=p.get_str("admin-email"), custom_data=p.get_str("custom-data"),
        continent_only=p.get_bool("continent-only"), country_only=p.get_bool("country-only"),
        as_only=p.get_bool("as-only"), score=p.get_int("score"), comment=p.get_str("comment"),
    )
    admin = await s.admin("add")
    try:
        r = await admin.add_mirror(mirror)
    except Exception as e:
        raise _fatal(io, f"edit error: {_rpc(e)}") from None
    io.out(format_add_success(name, r.warnings, r.latitude, r.longitude, r.continent, r.country, r.asn))
    return 0


async def cmd_remove(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p, admin, ref = await _one_mirror(io, s, "remove", args)
    if not p.get_bool("f"):
        io.out(f"Removing {ref.name}, are you sure? [y/N]")
        if not _yes(await io.readline()):
            return 0
    try:
        await admin.remove_mirror(ref.id)
    except Exception as e:
        raise _fatal(io, f"remove error: {_rpc(e)}") from None
    io.out(f"Mirror '{ref.name}' removed successfully\n")
    return 0


async def cmd_scan(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p = _parse(io, "scan", args)
    scan_all = p.get_bool("all")
    if (scan_all and p.args) or (not scan_all and len(p.args) != 1):
        raise _usage(io, "scan")
    protocol = PROTOCOL_RSYNC if p.get_bool("rsync") else PROTOCOL_FTP if p.get_bool("ftp") else PROTOCOL_ALL
    timeout = p.get_int("timeout") or None
    admin = await s.admin("scan")
    if scan_all:
        try:
            refs = await admin.match_mirror("")
        except AdminError:
            io.err("Cannot fetch the list of mirrors\n")
            return 1
    else:
        refs = [await _resolve(io, admin, p.args[0])]
    status = 0
    for ref in refs:
        io.out(f"Scanning {ref.name}... ")
        try:
            r = await admin.scan_mirror(ref.id, p.get_bool("enable"), protocol, timeout=timeout)
        except AdminError as e:
            if not scan_all or e.code == "FailedPrecondition":
                io.err(f"\nscan error: {e.message}\n")
                return 1
            io.out(f"scan error: {e.message}\n")
            status = 1  # deviation: Go exited 0 even when every mirror failed
            continue
        io.out(format_scan_result(r.files_indexed, r.known_indexed, r.removed, r.tz_offset_ms, r.enabled))
    return status


async def cmd_refresh(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p = _parse(io, "refresh", args)
    if p.args:
        raise _usage(io, "refresh")
    admin = await s.admin("refresh")
    io.out("Refreshing the local repository... ")
    try:
        await admin.refresh(p.get_bool("rehash"))
    except Exception as e:
        io.out("\n")
        raise _fatal(io, _rpc(e)) from None
    io.out("done\n")
    return 0


def _find_editor(env: Mapping[str, str]) -> str | None:
    if env.get("EDITOR"):
        return env["EDITOR"]
    for name in ("editor", "vi", "emacs", "nano"):
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return found
    return None


async def cmd_edit(io: CliIO, s: Session, args: Sequence[str]) -> int:
    editor = _find_editor(io.env)
    if editor is None:
        raise _fatal(io, "No text editor found, please set the EDITOR environment variable")
    p, admin, ref = await _one_mirror(io, s, "edit", args)
    try:
        current = await admin.mirror_info(ref.id)
    except Exception as e:
        raise _fatal(io, f"edit error: {_rpc(e)}") from None
    current = replace(current, id=ref.id)
    fd, path = tempfile.mkstemp(prefix="edit")
    try:
        original = edit_file_text(mirror_yaml(current), current.comment).encode("utf-8", "surrogateescape")
        with os.fdopen(fd, "wb") as f:
            f.write(original)
        digest = hashlib.sha256(original).digest()
        while True:
            status = await io.run_editor(editor, path)
            if status != 0:
                raise _fatal(io, f"exit status {status}")
            with open(path, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).digest() == digest:
                io.out("Aborted - settings are unmodified, so there is nothing to change.\n")
                return 0
            text = data.decode("utf-8", "surrogateescape")
            yaml_part, comment = split_edit_file(text)
            try:
                edited = apply_mirror_yaml(yaml_part, current)
                validate_edited(edited)
                break
            except EditError as e:
                if not await _retry(io, str(e)):
                    return 0
        edited = replace(edited, id=ref.id, comment=current.comment if comment is None else comment)
        try:
            diff = await admin.update_mirror(edited)
        except Exception as e:
            raise _fatal(io, f"edit error: {_rpc(e)}") from None
        io.out(format_edit_success(diff, edited.name))
        return 0
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


async def _retry(io: CliIO, error: str) -> bool:
    """``<error>\\nRetry? [Y/n]`` until a usable answer; EOF means no (Go panicked)."""
    while True:
        io.out(f"{error}\nRetry? [Y/n]")
        line = await io.readline()
        if line is None or line[:1] in ("n", "N"):
            io.out("Aborted\n")
            return False
        if line == "" or line[0] in "yY":
            return True


async def cmd_geoupdate(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p, admin, ref = await _one_mirror(io, s, "geoupdate", args)
    try:
        r = await admin.geo_update_mirror(ref.id)
    except Exception as e:
        raise _fatal(io, f"edit error: {_rpc(e)}") from None
    if r.warnings:
        io.out("".join(w + "\n" for w in r.warnings) + "\n")
    if not r.diff:
        io.out("Geolocation is up to date, there is nothing to change.\n")
        return 0
    io.out(r.diff + "\n")
    if not p.get_bool("f"):
        io.out(f"Update mirror {ref.name}? [y/N]")
        if not _yes(await io.readline()):
            return 0
    try:
        diff = await admin.update_mirror(replace(r.mirror, id=ref.id))
    except Exception as e:
        raise _fatal(io, f"edit error: {_rpc(e)}") from None
    if diff != r.diff:
        io.out("Unexpected diff, see below:\n" + diff)
    io.out(f"Mirror '{ref.name}' updated successfully\n")
    return 0


async def cmd_show(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p, admin, ref = await _one_mirror(io, s, "show", args)
    try:
        m = await admin.mirror_info(ref.id)
        states = await admin.family_states([ref.id])
    except Exception as e:
        raise _fatal(io, f"show error: {_rpc(e)}") from None
    io.out(format_show(m) + format_family_states(
        (st.protocol, st.family, st.state, st.reason, st.checked) for st in states))
    return 0


async def _status(io: CliIO, s: Session, args: Sequence[str], enable: bool) -> int:
    name = "enable" if enable else "disable"
    p, admin, ref = await _one_mirror(io, s, name, args)
    try:
        await admin.change_status(ref.id, enable)
    except Exception as e:
        raise _fatal(io, f"Couldn't {name} mirror '{ref.name}': {_rpc(e)}") from None
    io.out(f"Mirror '{ref.name}' {name}d successfully\n")
    return 0


async def cmd_enable(io: CliIO, s: Session, args: Sequence[str]) -> int:
    return await _status(io, s, args, True)


async def cmd_disable(io: CliIO, s: Session, args: Sequence[str]) -> int:
    return await _status(io, s, args, False)


async def cmd_export(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p = _parse(io, "export", args)
    if len(p.args) != 1:
        raise _usage(io, "export")
    formatter = {"mirmon": format_mirmon, "json": format_export_json, "csv": format_export_csv}.get(p.args[0])
    if formatter is None:
        io.err("Unsupported format\n")
        raise _usage(io, "export")
    admin = await s.admin("export")
    try:
        mirrors = await admin.list_mirrors()
    except Exception as e:
        raise _fatal(io, f"export error: {_rpc(e)}") from None
    io.out(formatter(mirrors, ExportOptions.from_flags(p.values)))
    return 0


async def _stats_housekeeping(io: CliIO, s: Session, word: str, args: Sequence[str]) -> int:
    """``stats prune [-dry-run]``, ``stats usage``, ``stats export -format csv|json [-from -to]``."""
    parsed = usage.stats_subcommand_flagset(word).parse(list(args))
    if not parsed.ok:
        io.err(parsed.stderr)
        raise CliExit(0 if parsed.status.value == "help" else EXIT_USAGE)
    if parsed.args:
        io.err(usage.stats_subcommand_flagset(word).usage_text())
        raise CliExit(EXIT_USAGE)
    admin = await s.admin("stats")
    if word == "prune":
        try:
            report = await admin.stats_prune(parsed.get_bool("dry-run"))
        except Exception as e:
            raise _fatal(io, f"stats prune error: {_rpc(e)}") from None
        io.out(format_prune(report))
        return 0
    if word == "usage":
        try:
            families = await admin.stats_usage()
        except Exception as e:
            raise _fatal(io, f"stats usage error: {_rpc(e)}") from None
        io.out(format_usage(families))
        return 0
    formatter = {"csv": export_csv, "json": export_json}.get(parsed.get_str("format"))
    if formatter is None:
        io.err(f"Unsupported format {parsed.get_str('format')!r}: csv or json\n")
        raise CliExit(EXIT_USAGE)
    first, last = parsed.get_str("from"), parsed.get_str("to")
    period: list[datetime | None] = [None, None]
    if first or last:
        try:
            period[0] = parse_stats_date_strict(first) if first else None
            period[1] = parse_stats_date_strict(last) if last else datetime.now(UTC)
        except ValueError as e:
            io.err(f"{e}\n")
            raise CliExit(EXIT_USAGE) from None
        if period[0] is None:
            io.err("-to needs -from\n")
            raise CliExit(EXIT_USAGE)
    try:
        data = await admin.stats_export(period[0], period[1])
    except Exception as e:
        raise _fatal(io, f"stats export error: {_rpc(e)}") from None
    io.out(formatter(data))
    return 0


async def cmd_stats(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p = _parse(io, "stats", args)
    if p.args and p.args[0] in usage.STATS_SUBCOMMANDS:
        return await _stats_housekeeping(io, s, p.args[0], p.args[1:])
    if len(p.args) != 2 or p.args[0] not in ("mirror", "file"):
        raise _usage(io, "stats")
    now = datetime.now(UTC)
    dates = []
    for flag in ("start-date", "end-date"):
        text = p.get_str(flag)
        if not text:
            dates.append(now)
            continue
        try:
            dates.append(parse_stats_date_strict(text))
        except ValueError:
            # Deviation: Go silently counted "today" for a date it could not parse.
            io.err(f"invalid value \"{text}\" for flag -{flag}: expected YYYY-MM-DD\n")
            raise _usage(io, "stats") from None
    start, end = dates
    admin = await s.admin("stats")
    if p.args[0] == "file":
        try:
            files = await admin.stats_file(p.args[1], start, end)
        except Exception as e:
            raise _fatal(io, f"file stats error: {_rpc(e)}") from None
        io.out(format_stats_file(files))
        return 0
    ref = await _resolve(io, admin, p.args[1])
    try:
        r = await admin.stats_mirror(ref.id, start, end)
    except Exception as e:
        raise _fatal(io, f"mirror stats error: {_rpc(e)}") from None
    io.out(format_stats_mirror(ref.name, r.mirror, r.requests, r.bytes, human=p.get_bool("h")))
    return 0


async def cmd_logs(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p, admin, ref = await _one_mirror(io, s, "logs", args)
    try:
        lines = await admin.mirror_logs(ref.id, p.get_int("l"))
    except Exception as e:
        raise _fatal(io, f"logs error: {_rpc(e)}") from None
    io.out(format_logs(ref.name, lines))
    return 0


async def _signal_command(io: CliIO, s: Session, args: Sequence[str], name: str,
                          operation: Callable[[AdminAPI], Awaitable[None]]) -> int:
    p = _parse(io, name, args)
    if p.args:
        raise _usage(io, name)
    admin = await s.admin(name)
    try:
        await operation(admin)
    except Exception as e:
        raise _fatal(io, f"{name} error: {_rpc(e)}") from None
    return 0


async def cmd_reload(io: CliIO, s: Session, args: Sequence[str]) -> int:
    return await _signal_command(io, s, args, "reload", lambda admin: admin.reload())


async def cmd_upgrade(io: CliIO, s: Session, args: Sequence[str]) -> int:
    return await _signal_command(io, s, args, "upgrade", lambda admin: admin.upgrade())


async def cmd_version(io: CliIO, s: Session, args: Sequence[str]) -> int:
    p = _parse(io, "version", args)
    if p.args:
        raise _usage(io, "version")
    io.out("Client:\n" + format_version_block(version_info()) + "\n")
    admin = await s.admin("version")
    try:
        server = await admin.version()
    except AdminError as e:
        io.err(f"version error: {e.message}\n")
        return 1
    if server.version:
        io.out("Server:\n" + format_version_block(server))
    return 0


COMMAND_FUNCTIONS = {
    "add": cmd_add, "disable": cmd_disable, "edit": cmd_edit, "enable": cmd_enable, "export": cmd_export,
    "geoupdate": cmd_geoupdate, "list": cmd_list, "logs": cmd_logs, "refresh": cmd_refresh,
    "reload": cmd_reload, "remove": cmd_remove, "scan": cmd_scan, "show": cmd_show, "stats": cmd_stats,
    "upgrade": cmd_upgrade, "version": cmd_version,
}


# ---------------------------------------------------------------------------------------------------
# Entry points


async def run(argv: Sequence[str], io: CliIO, reactor: IDaemonReactor | None = None, argv0: str = "mirrorbits",
              session: Session | None = None) -> int:
    """Run one client command line (everything after the program name); returns the exit status.

    ``session`` lets a caller supply the admin end (the SSH manhole passes its in-process commands).
    """
    if reactor is None:
        reactor = default_reactor()
    parsed = usage.global_flagset(argv0).parse(list(argv))
    if not parsed.ok:
        io.err(parsed.stderr)
        return parsed.exit_code
    d = usage.dispatch(parsed.args)
    if d.kind is usage.DispatchKind.HELP:
        io.err(usage.help_text())
        return 0
    if d.kind is usage.DispatchKind.UNKNOWN or d.command is None:
        io.out(usage.command_not_found_text(d.word))
        io.err(usage.help_text())
        return EXIT_USAGE  # deviation: Go exited 0
    password = parsed.get_str("P")
    if session is None:
        if not password and parsed.get_bool("a"):
            io.out("Password: ")
            try:
                password = await io.read_password()
            except EOFError:
                io.err("EOF\n")
                return 1
            except KeyboardInterrupt:
                io.err("interrupted\n")
                return 1
            except ValueError as e:
                io.err(f"{e}\n")
                return 1
        session = Session(io, parsed.get_str("h"), parsed.get_int("p"), password, reactor)
    try:
        return await COMMAND_FUNCTIONS[d.command.name](io, session, d.args)
    except CliExit as e:
        return e.code
    finally:
        await session.close()
