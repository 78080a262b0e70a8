"""The ``mirrorbits`` console script: ``daemon`` starts the server, every other word is a CLI command.

Argument handling follows the Go original (cli-and-admin §1): global flags, then ``daemon`` or a
command, matched case-insensitively.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from mirrorbits.admin import usage

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "daemon":
        from mirrorbits.lifecycle.daemon import run_daemon

        return run_daemon(args[1:])
    parsed = usage.global_flagset("mirrorbits").parse(args)
    if not parsed.ok:
        sys.stderr.write(parsed.stderr)
        return parsed.exit_code
    words = list(parsed.args)
    if not words or words[0].lower() == "help":
        sys.stderr.write(usage.help_text())
        return 0
    command = usage.lookup_command(words[0])
    if command is None:
        sys.stdout.write(f"Error: Command not found: {words[0]}\n")
        sys.stderr.write(usage.help_text())
        return 1
    sys.stderr.write(f"mirrorbits {command.name}: the admin channel is not available in this build yet\n")
    return 1


def entry_point() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry_point()
