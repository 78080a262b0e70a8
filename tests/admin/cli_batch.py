"""Run many ``mirrorbits`` client command lines in one process (tests only: one interpreter start
instead of one per command, on a loaded 2-core machine).

Input on stdin: a JSON list of ``{"argv": [...], "stdin": "...", "env": {...}}``.  Each command runs
through :func:`mirrorbits.admin.cli.run` exactly as the console script does, except that its streams
are captured; output on stdout: a JSON list of ``{"code", "out", "err"}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, task, threads

from mirrorbits.admin import cli


class CaptureIO:
    def __init__(self, stdin: str, env: Mapping[str, str]) -> None:
        self.env = env
        self._lines = stdin.splitlines(keepends=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    def out(self, text: str) -> None:
        self.stdout.append(text)

    def err(self, text: str) -> None:
        self.stderr.append(text)

    async def readline(self) -> str | None:
        if not self._lines:
            return None
        return self._lines.pop(0).rstrip("\r\n")

    async def read_password(self) -> str:
        if not self._lines:
            raise EOFError("EOF")
        line = self._lines.pop(0).rstrip("\r\n")
        self.out("*" * len(line.encode()))
        return line

    async def run_editor(self, editor: str, path: str) -> int:
        env = dict(self.env)

        def call() -> int:
            return subprocess.call([editor, path], env=env)

        return await threads.deferToThread(call)


async def run_all(reactor: Any, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for c in commands:
        env = dict(os.environ)
        env.pop(cli.CONFIG_ENV, None)
        env.update(c.get("env") or {})
        io = CaptureIO(c.get("stdin", ""), env)
        code = await cli.run(c["argv"], io, reactor)
        results.append({"code": code, "out": "".join(io.stdout), "err": "".join(io.stderr)})
    return results


def main() -> None:
    """``--serve``: answer one JSON batch per input line until EOF (one interpreter for a whole test
    session); otherwise run the single batch read from stdin."""
    serve = "--serve" in sys.argv[1:]
    out: list[Any] = []

    async def go(reactor: Any) -> None:
        if not serve:
            out.extend(await run_all(reactor, json.load(sys.stdin)))
            return
        while True:
            line = await threads.deferToThread(sys.stdin.readline)
            if not line:
                return
            results = await run_all(reactor, json.loads(line))
            sys.stdout.write(json.dumps(results) + "\n")
            sys.stdout.flush()

    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(go(r)))
    except SystemExit:
        pass
    if not serve:
        sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
