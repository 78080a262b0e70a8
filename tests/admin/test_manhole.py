"""The SSH manhole of the running daemon, driven by OpenSSH's ``ssh`` client with generated keys."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.admin.conftest import AdminDaemon

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client (ssh) installed")


def ssh_args(daemon: AdminDaemon, key: Path, *extra: str) -> list[str]:
    return ["ssh", "-F", "/dev/null", "-p", str(daemon.ssh_port), "-i", str(key),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
            *extra, "admin@127.0.0.1"]


def run_ssh(daemon: AdminDaemon, *command: str, stdin: str = "", key: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_args(daemon, key or daemon.key, "-T") + list(command), input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_exec_runs_cli_commands_with_output_and_exit_status(daemon: AdminDaemon) -> None:
    assert daemon.one("add", "-http", "http://127.0.0.1/repo", "mirror1").code == 0
    daemon.redis.client().hset("MIRROR_1", mapping={"enabled": "1", "stateSince": "1700000500"})
    down = run_ssh(daemon, "list", "-down")
    assert (down.returncode, down.stderr) == (0, "")
    assert down.stdout == daemon.one("list", "-down").out
    assert down.stdout.splitlines()[1].startswith("mirror1 \tdown \t")
    missing = run_ssh(daemon, "mirrorbits", "show", "nothing")
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "No match for 'nothing'\n")
    usage = run_ssh(daemon, "logs")
    assert usage.returncode == 2 and usage.stderr.startswith("\nUsage: mirrorbits logs [IDENTIFIER]")
    declined = run_ssh(daemon, "remove", "mirror1", stdin="n\n")
    assert (declined.returncode, declined.stdout) == (0, "Removing mirror1, are you sure? [y/N]")
    removed = run_ssh(daemon, "remove", "mirror1", stdin="y\n")
    assert removed.stdout.endswith("Mirror 'mirror1' removed successfully\n") and removed.returncode == 0
    assert daemon.redis.client().exists("MIRROR_1") == 0


def test_unknown_key_is_refused(daemon: AdminDaemon) -> None:
    r = run_ssh(daemon, "list", key=daemon.other_key)
    assert r.returncode == 255 and "Permission denied" in r.stderr and r.stdout == ""


def _read_until(proc: subprocess.Popen[bytes], pattern: str, timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            text = buf.decode(errors="replace")
            if re.search(pattern, text):
                return text
    raise AssertionError(f"{pattern!r} not seen in {buf.decode(errors='replace')!r}")


def test_interactive_prompt_with_the_admin_commands(daemon: AdminDaemon) -> None:
    assert daemon.one("add", "-http", "http://127.0.0.1/repo", "mirror1").code == 0
    proc = subprocess.Popen(ssh_args(daemon, daemon.key, "-tt"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None
    try:
        _read_until(proc, r">>> ")
        proc.stdin.write(b"enable('mirror1')\r")
        proc.stdin.flush()
        _read_until(proc, r"Mirror 'mirror1' enabled successfully")
        assert daemon.redis.client().hget("MIRROR_1", "enabled") == "1"
        proc.stdin.write(b"list()\r")
        proc.stdin.flush()
        _read_until(proc, r"mirror1 \s*down")
        proc.stdin.write(b"type(redis).__name__, config.RPCPassword\r")
        proc.stdin.flush()
        _read_until(proc, r"\('RedisClient', 'sekret'\)")
        proc.stdin.write(b"\x04")  # Ctrl-D on an empty line closes the manhole
        proc.stdin.flush()
        # the manhole closes the channel (no exit-status is sent for a shell, so ssh reports 255)
        assert proc.wait(30) in (0, 255)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


CONCH_CLIENT = r"""
import sys
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.endpoints import SSHCommandClientEndpoint
from twisted.conch.ssh.keys import Key
from twisted.internet import defer, protocol, task
from twisted.python.filepath import FilePath

port, key_path, known_hosts, command = sys.argv[1:5]

class Collect(protocol.Protocol):
    def connectionMade(self):
        self.data = b""
        self.done = defer.Deferred()
    def dataReceived(self, data):
        self.data += data
    def connectionLost(self, reason):
        self.done.callback(reason.value)

async def main(reactor):
    ep = SSHCommandClientEndpoint.newConnection(
        reactor, command.encode(), b"admin", b"127.0.0.1", int(port),
        keys=[Key.fromFile(key_path)], knownHosts=KnownHostsFile.fromPath(FilePath(known_hosts)))
    proto = await ep.connect(protocol.Factory.forProtocol(Collect))
    reason = await proto.done
    code = getattr(reason, "exitCode", 0) or 0
    sys.stdout.write(f"{code}\n" + proto.data.decode())

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""


def test_twisted_conch_client_exec(daemon: AdminDaemon) -> None:
    """Twisted's own SSH client (which crashed when the server wrote from inside execCommand)."""
    import sys

    from mirrorbits.admin.manhole import host_key

    assert daemon.one("add", "-http", "http://127.0.0.1/repo", "mirror1").code == 0
    public = host_key(str(daemon.tmp / "data")).public().toString("openssh").decode()
    known = daemon.tmp / "known_hosts"
    known.write_text(f"127.0.0.1 {public}\n")  # Twisted matches the host without the port
    script = daemon.tmp / "conch_client.py"
    script.write_text(CONCH_CLIENT)
    results = []
    for command in ("list -state=false", "show nothing"):
        proc = subprocess.run([sys.executable, str(script), str(daemon.ssh_port), str(daemon.key), str(known),
                               command], capture_output=True, text=True, timeout=60)
        results.append(proc.stdout)
    assert results[0] == "0\nIdentifier \nmirror1 \n"
    assert results[1] == "1\n"  # stderr goes to the extended-data stream, not this protocol
