"""The admin surface under attack: password guessing on the admin channel is backed off per address
(on a ``task.Clock``, over a real loopback connection), a non-loopback admin channel without a password
ends the daemon at start, and the SSH manhole refuses password authentication and unlisted keys
(driven by OpenSSH's ``ssh``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.interfaces import IListeningPort
from twisted.protocols import amp
from twisted.trial import unittest

from mirrorbits.admin.backoff import FailureBackoff
from mirrorbits.admin.interface import AdminAPI, AdminError
from mirrorbits.admin.rpc import AdminProtocol, RemoteAdmin, is_loopback
from mirrorbits.config import Config
from tests.admin.conftest import AdminDaemon
from tests.admin.test_manhole import ssh_args
from tests.fixtures.servers import free_port
from tests.lifecycle.test_startup_failures import quickstart_config, run_to_exit


class Pong(AdminAPI):
    """An admin whose ping answers: enough to tell an accepted password from a refused one."""

    async def ping(self) -> None:
        return None


class BackoffTable(unittest.TestCase):
    def test_threshold_growth_reset_and_bound(self) -> None:
        clock = task.Clock()
        b = FailureBackoff(clock, threshold=5, window=60, first_delay=2, max_delay=8, max_addresses=3)
        for _ in range(4):
            b.failure("10.0.0.1")
            clock.advance(10)
        self.assertEqual(b.refused_for("10.0.0.1"), 0)
        clock.advance(20)  # the first failure (60 s ago) left the window: still 4 within it
        b.failure("10.0.0.1")
        self.assertEqual(b.refused_for("10.0.0.1"), 0)
        b.failure("10.0.0.1")  # the fifth within 60 s
        self.assertEqual(b.refused_for("10.0.0.1"), 2)
        delays = []
        for _ in range(3):  # each new episode doubles the delay, up to max_delay
            clock.advance(b.refused_for("10.0.0.1"))
            for _ in range(5):
                b.failure("10.0.0.1")
            delays.append(b.refused_for("10.0.0.1"))
        self.assertEqual(delays, [4, 8, 8])
        b.success("10.0.0.1")
        self.assertEqual(b.refused_for("10.0.0.1"), 0)
        for i in range(10):
            b.failure(f"10.0.1.{i}")
        self.assertEqual(len(b), 3)

    def test_loopback_addresses(self) -> None:
        for address in ("localhost:3390", "127.0.0.1:3390", "127.5.6.7:1", "[::1]:3390", "unix:/run/mb.sock",
                        "tcp:3390:interface=127.0.0.1", "tcp6:3390:interface=\\:\\:1"):
            self.assertTrue(is_loopback(address), address)
        for address in (":3390", "0.0.0.0:3390", "[::]:3390", "192.0.2.1:3390", "example.org:3390",
                        "tcp:3390", "tcp6:3390:interface=\\:\\:", "systemd:domain=INET:index=0"):
            self.assertFalse(is_loopback(address), address)


class ChannelBackoff(unittest.TestCase):
    """Wrong passwords over a real AMP connection, the delay on an injected clock."""

    timeout = 30

    async def connect(self, clock: task.Clock) -> tuple[RemoteAdmin, RemoteAdmin]:
        config = Config().replace(RPCPassword="sekret")
        backoff = FailureBackoff(clock)

        def build() -> AdminProtocol:
            return AdminProtocol(Pong(), lambda: config, backoff)

        port: IListeningPort = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(build))
        self.addCleanup(port.stopListening)
        clients = []
        for password in ("wrong", "sekret"):
            proto = await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
                protocol.Factory.forProtocol(amp.AMP))
            admin = RemoteAdmin(proto, password, clock)
            self.addCleanup(admin.close)
            clients.append(admin)
        return clients[0], clients[1]

    async def refused(self, admin: RemoteAdmin) -> str:
        with self.assertRaises(AdminError) as caught:
            await admin.ping()
        return str(caught.exception)

    def test_backoff_after_five_failures_reset_on_success(self) -> defer.Deferred[None]:
        async def run() -> None:
            clock = task.Clock()
            wrong, right = await self.connect(clock)
            for _ in range(5):
                self.assertEqual(await self.refused(wrong), "access denied")
            # the address is refused now, whatever the password, without it being checked
            self.assertEqual(await self.refused(right), "too many wrong passwords: try again in 2 s")
            clock.advance(1.9)
            self.assertEqual(await self.refused(right), "too many wrong passwords: try again in 1 s")
            clock.advance(0.1)
            await right.ping()  # the delay is over and the right password resets the address
            for _ in range(5):
                self.assertEqual(await self.refused(wrong), "access denied")
            self.assertEqual(await self.refused(right), "too many wrong passwords: try again in 2 s")
            clock.advance(2)
            for _ in range(5):  # a second episode without a success in between: the delay doubles
                await self.refused(wrong)
            self.assertEqual(await self.refused(right), "too many wrong passwords: try again in 4 s")

        return defer.Deferred.fromCoroutine(run())

    def test_one_log_line_per_episode(self) -> defer.Deferred[None]:
        from twisted.logger import globalLogPublisher

        seen: list[str] = []

        def observer(event: dict[str, object]) -> None:
            if event.get("log_namespace") == "mirrorbits.admin.backoff":
                seen.append(str(event.get("address")))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        async def run() -> None:
            clock = task.Clock()
            wrong, _ = await self.connect(clock)
            for _ in range(3):
                for _ in range(5):
                    await self.refused(wrong)
                clock.advance(300)
            self.assertEqual(seen, ["127.0.0.1"])

        return defer.Deferred.fromCoroutine(run())


class EmptiedPassword(unittest.TestCase):
    """A reload that empties RPCPassword on a non-loopback channel (bound with one) opens nothing."""

    timeout = 30

    def test_refused(self) -> defer.Deferred[None]:
        async def run() -> None:
            config = Config()
            self.assertEqual(config.RPCPassword, "")
            servers = {}
            for public in (True, False):
                port: IListeningPort = await endpoints.TCP4ServerEndpoint(
                    reactor, 0, interface="127.0.0.1").listen(protocol.Factory.forProtocol(
                        lambda public=public: AdminProtocol(Pong(), lambda: config, public=public)))
                self.addCleanup(port.stopListening)
                proto = await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
                    protocol.Factory.forProtocol(amp.AMP))
                servers[public] = RemoteAdmin(proto, "", task.Clock())
                self.addCleanup(servers[public].close)
            with self.assertRaises(AdminError) as caught:
                await servers[True].ping()
            self.assertEqual(str(caught.exception), "RPCPassword is empty on a non-loopback admin channel")
            await servers[False].ping()  # loopback: no password needed, as in Go

        return defer.Deferred.fromCoroutine(run())


def test_non_loopback_admin_channel_without_password_is_refused(tmp_path: Path) -> None:
    address = f"0.0.0.0:{free_port()}"
    conf = quickstart_config(tmp_path, {"ListenAddress": f"127.0.0.1:{free_port()}",
                                        "RPCListenAddress": address})
    status, output = run_to_exit(tmp_path, "mirrorbits daemon", conf)
    assert status == 1, output[-4000:]
    message = (f"RPCListenAddress {address} is not a loopback address and RPCPassword is empty: "
               "set RPCPassword (or listen on localhost or a unix: socket)")
    assert output.count(message) == 1, output[-4000:]


def test_the_daemon_answers_a_refused_address_without_checking(daemon: AdminDaemon) -> None:
    """The real daemon: five wrong passwords, then the right one is refused too; the raw answer."""
    results = daemon.cli(*[["list"]] * 5, ["list"], password="wrong")
    assert [r.err for r in results[:5]] == ["Password refused\n"] * 5
    assert results[5].code == 1
    refused = daemon.one("list")
    assert refused.code == 1 and re.fullmatch(r"mirrorbits: too many wrong passwords: try again in [12] s\n",
                                              refused.err), refused
    assert daemon.output().count("5 wrong passwords from 127.0.0.1 within 60 s") == 1
    time.sleep(2.1)  # the delay is over: the right password is accepted and resets the address
    assert daemon.one("list").code == 0


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client (ssh) installed")
def test_manhole_offers_no_password_authentication(daemon: AdminDaemon, tmp_path: Path) -> None:
    """ssh, told to try passwords and keyboard-interactive with a password ready, is offered only
    publickey: the askpass program is never run."""
    marker = tmp_path / "asked"
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\ntouch {marker}\necho sekret\n")
    askpass.chmod(0o700)
    args = ssh_args(daemon, daemon.other_key, "-T", "-o", "PreferredAuthentications=password,"
                    "keyboard-interactive,publickey", "-o", "KbdInteractiveAuthentication=yes",
                    "-o", "NumberOfPasswordPrompts=1")
    args = [a.replace("PasswordAuthentication=no", "PasswordAuthentication=yes")
            .replace("BatchMode=yes", "BatchMode=no") for a in args]
    env = dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    r = subprocess.run([*args, "list"], capture_output=True, text=True, timeout=60, env=env,
                       stdin=subprocess.DEVNULL, start_new_session=True)
    assert r.returncode == 255 and r.stdout == "", r
    assert "Permission denied (publickey)" in r.stderr, r.stderr
    assert not marker.exists()


def test_manhole_refuses_a_key_removed_from_the_file(daemon: AdminDaemon) -> None:
    """The authorized_keys file is read at each login: a key taken out of it is refused at once."""
    keys = daemon.tmp / "authorized_keys"
    original = keys.read_text()
    ok = subprocess.run(ssh_args(daemon, daemon.key, "-T") + ["list"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok
    keys.write_text("# nobody\n")
    try:
        r = subprocess.run(ssh_args(daemon, daemon.key, "-T") + ["list"], capture_output=True, text=True,
                           timeout=60)
    finally:
        keys.write_text(original)
    assert r.returncode == 255 and "Permission denied (publickey)" in r.stderr and r.stdout == "", r
