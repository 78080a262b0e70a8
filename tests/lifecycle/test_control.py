"""``Lifecycle``'s reload and upgrade decisions, in the test process.

The daemon's own service tree (``makeService``) runs here on the real reactor: a real Redis, an HTTP
listener on 127.0.0.1, the admin RPC port. The tests call ``reload()`` and ``upgrade()`` as SIGHUP,
SIGUSR2 and the admin channel do, and look at the sockets: which address accepts, which refuses.
The upgraded "program" is a real child process; what it does is chosen through ``sys.orig_argv``,
which is what the daemon re-executes.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from twisted.internet import endpoints, error, protocol, reactor
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.web.client import Agent, readBody

from mirrorbits.lifecycle.control import Lifecycle
from mirrorbits.lifecycle.listener import HTTPListener
from mirrorbits.lifecycle.upgrade import UpgradeError
from mirrorbits.service import DaemonOptions, MirrorbitsService, makeService
from tests.fixtures.servers import free_port
from tests.fixtures.trial import RedisClassTestCase, eventually
from tests.lifecycle.helpers import FILE, REDIRECT_TO, seed_world


async def accepts(port: int) -> bool:
    """Whether 127.0.0.1:``port`` accepts a TCP connection now."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    try:
        proto = await endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
    except error.ConnectError:
        return False
    assert proto.transport is not None
    proto.transport.abortConnection()
    return True


async def redirect_of(port: int) -> tuple[int, str]:
    """Status and Location of a GET of the seeded file."""
    agent = Agent(reactor)
    response = await agent.request(b"GET", f"http://127.0.0.1:{port}{FILE}".encode())
    await readBody(response)
    location = response.headers.getRawHeaders(b"location", [b""])[0].decode()
    return response.code, location


class LifecycleTests(RedisClassTestCase):
    timeout = 60

    def setUp(self) -> None:
        super().setUp()
        seed_world(self.server.client())
        self.tmp = Path(tempfile.mkdtemp(prefix="mb-lifecycle-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        (self.tmp / "repo").mkdir()
        (self.tmp / "repo" / FILE.lstrip("/")).write_bytes(b"x" * 48)
        self.rpc_port = free_port()
        self.conf = self.tmp / "mirrorbits.conf"
        self.log_events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.log_events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.log_events.append)

    def logged(self, text: str) -> list[str]:
        return [line for line in map(formatEvent, self.log_events) if line and text in line]

    def write_config(self, listen: str, extra: str = "") -> None:
        self.conf.write_text(
            f"Repository: {self.tmp / 'repo'}\nRedisAddress: {self.server.address}\n"
            f"DataDir: {self.tmp / 'data'}\nListenAddress: {listen}\n"
            f"RPCListenAddress: 127.0.0.1:{self.rpc_port}\nGeoipDatabasePath: {self.tmp / 'nogeoip'}\n"
            f"{extra}")

    async def start(self, listen: str = "127.0.0.1:0") -> tuple[MirrorbitsService, Lifecycle, HTTPListener]:
        """The daemon's service tree, started; stopped at cleanup."""
        self.write_config(listen)
        root = makeService(DaemonOptions(config=str(self.conf), monitor=False), reactor)
        lifecycle = root.getServiceNamed("lifecycle")
        http = root.getServiceNamed("http")
        assert isinstance(lifecycle, Lifecycle) and isinstance(http, HTTPListener)
        root.startService()
        self.addCleanup(root.stopService)
        await lifecycle.serving
        await eventually(lambda: accepts(self.rpc_port), timeout=20)
        await eventually(lambda: self._serves(http), timeout=20)
        return root, lifecycle, http

    async def _serves(self, http: HTTPListener) -> bool:
        return await redirect_of(self.http_port(http)) == (302, REDIRECT_TO)

    @staticmethod
    def http_port(http: HTTPListener) -> int:
        return int(http.port.getHost().port)

    # -- reload ----------------------------------------------------------------------------------

    async def test_unchanged_config_keeps_the_socket(self) -> None:
        _, lifecycle, http = await self.start()
        port, config = http.port, lifecycle.app.config_holder.current
        self.assertTrue(await lifecycle.reload())  # taken (the same values)
        self.assertEqual(lifecycle.app.config_holder.current, config)
        self.assertIs(http.port, port)

    async def test_other_keys_changed_keep_the_socket(self) -> None:
        _, lifecycle, http = await self.start()
        port = http.port
        self.write_config("127.0.0.1:0", extra="ScanInterval: 7\n")
        self.assertTrue(await lifecycle.reload())
        self.assertEqual(lifecycle.app.config_holder.current.ScanInterval, 7)
        self.assertIs(http.port, port)
        self.assertTrue(await self._serves(http))

    async def test_changed_listen_address_rebinds(self) -> None:
        _, lifecycle, http = await self.start()
        old = self.http_port(http)
        new = free_port()
        self.write_config(f"127.0.0.1:{new}")
        self.assertTrue(await lifecycle.reload())
        self.assertEqual(self.http_port(http), new)
        self.assertEqual(http.bound_address, f"127.0.0.1:{new}")
        self.assertTrue(await self._serves(http))
        self.assertFalse(await accepts(old))

    async def test_listen_override_wins_over_a_changed_listen_address(self) -> None:
        _, lifecycle, http = await self.start()
        port = http.port
        lifecycle.listen_override = http.bound_address  # as ``--listen`` sets it
        self.write_config(f"127.0.0.1:{free_port()}")
        self.assertTrue(await lifecycle.reload())
        self.assertIs(http.port, port)

    async def test_unusable_listen_address_keeps_the_old_socket(self) -> None:
        _, lifecycle, http = await self.start()
        port = http.port
        self.write_config("127.0.0.1:99999")
        await lifecycle.reload()
        self.assertIs(http.port, port)
        self.assertTrue(await self._serves(http))

    async def test_unreadable_config_keeps_the_old_one(self) -> None:
        _, lifecycle, http = await self.start()
        port, config = http.port, lifecycle.app.config_holder.current
        for broken in ("ListenAddress: [unclosed\n", "RedisDB: many\n", None):
            if broken is None:
                self.conf.unlink()  # a config file that vanished
            else:
                self.conf.write_text(broken)
            self.assertFalse(await lifecycle.reload(), broken)
            self.assertIs(lifecycle.app.config_holder.current, config)
            self.assertIs(http.port, port)
            self.assertTrue(await self._serves(http))

    # -- upgrade ---------------------------------------------------------------------------------

    def successor_program(self, source: str) -> None:
        """What the upgrade starts (the daemon re-executes ``sys.orig_argv``)."""
        self.patch(sys, "orig_argv", [sys.executable, "-c", source])

    async def test_child_that_exits_restores_the_admin_channel(self) -> None:
        _, lifecycle, http = await self.start()
        failed: list[bool] = []
        lifecycle.on_upgrade(failed=lambda: failed.append(True))
        self.successor_program("import sys; sys.exit(3)")
        pid = await lifecycle.upgrade()
        self.assertGreater(pid, 0)
        # The admin port was released for the child; the child died before taking over.
        await eventually(lambda: failed == [True], timeout=20)
        self.assertEqual(self.logged("Relaunch failed"), [
            f"Relaunch failed: child {pid} exited with status 3 before taking over; still serving"])
        self.assertIsNone(lifecycle.successor)
        self.assertTrue(await accepts(self.rpc_port))
        self.assertFalse(lifecycle.handing_over)
        self.assertTrue(await self._serves(http))

    async def test_child_that_never_takes_over_is_stopped(self) -> None:
        _, lifecycle, http = await self.start()
        lifecycle.upgrade_timeout = 1.0
        self.successor_program("import time; time.sleep(60)")
        await lifecycle.upgrade()
        child = lifecycle.successor
        assert child is not None
        self.assertFalse(await accepts(self.rpc_port))  # released for the child
        self.assertTrue(await self._serves(http))  # still serving meanwhile
        await child.ended
        self.assertEqual(self.logged("Relaunch failed"), [
            f"Relaunch failed: child {child.pid} did not take over in 1.0s; stopping it",
            f"Relaunch failed: child {child.pid} exited with status -15 before taking over; still serving"])
        self.assertIsNone(lifecycle.successor)
        await eventually(lambda: accepts(self.rpc_port), timeout=10)
        self.assertTrue(await self._serves(http))

    async def test_one_upgrade_at_a_time(self) -> None:
        _, lifecycle, _ = await self.start()
        self.successor_program("import time; time.sleep(60)")
        await lifecycle.upgrade()
        child = lifecycle.successor
        assert child is not None
        with self.assertRaises(UpgradeError):
            await lifecycle.upgrade()
        self.assertIs(lifecycle.successor, child)
        child.terminate()
        await child.ended
        await eventually(lambda: accepts(self.rpc_port), timeout=10)

    async def test_no_upgrade_once_stopping(self) -> None:
        _, lifecycle, _ = await self.start()
        lifecycle.stopping = True  # as the reactor's "before shutdown" trigger sets it
        self.successor_program("import sys; sys.exit(0)")
        with self.assertRaises(UpgradeError):
            await lifecycle.upgrade()
        self.assertIsNone(lifecycle.successor)
        self.assertTrue(await accepts(self.rpc_port))
        lifecycle.stopping = False

    async def test_no_listening_socket_no_upgrade(self) -> None:
        _, lifecycle, http = await self.start()
        await http.stop_accepting()
        self.successor_program("import sys; sys.exit(0)")
        with self.assertRaises(UpgradeError):
            await lifecycle.upgrade()
        self.assertTrue(await accepts(self.rpc_port))  # nothing was released

