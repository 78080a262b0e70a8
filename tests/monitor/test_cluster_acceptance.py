"""The cluster end to end: three REAL daemon processes and a simulated Go node on one Redis.

Each mirror must be health-checked by exactly one node, split as Go's formula says (the Go node's
share checked by nobody here), and when one daemon is SIGKILLed its share must be checked by the
survivors within 10 s.  Which process made a check is learnt from the kernel: the HTTP server
looks up which daemon owns the client end of the connection (psutil), so nothing in the daemon
is instrumented.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from mirrorbits.monitor.cluster import is_handled
from mirrorbits.redis import schema
from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
MIRRORS = list(range(1, 9))  # 8 mirrors: 2 per node with 4 nodes, 3/3/2 with 3
FILE = "/pub/file.txt"
TAKEOVER_LIMIT = 10.0


class CheckLog:
    """What the mirrors' HTTP server saw: (monotonic time, daemon pid or None, mirror id)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.lock = threading.Lock()
        self.checks: list[tuple[float, int | None, int]] = []

    def owner(self, server_port: int, peer_port: int) -> int | None:
        """The daemon (or its child) holding the client end 127.0.0.1:peer_port -> server_port."""
        for pid in list(self.pids):
            try:
                proc = psutil.Process(pid)
                family = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
            for p in family:
                try:
                    conns = p.net_connections("tcp")
                except psutil.Error:
                    continue
                for c in conns:
                    if c.laddr and c.laddr.port == peer_port and c.raddr and c.raddr.port == server_port:
                        return pid
        return None

    def add(self, pid: int | None, mirror_id: int) -> None:
        with self.lock:
            self.checks.append((time.monotonic(), pid, mirror_id))

    def since(self, t: float) -> list[tuple[int | None, int]]:
        with self.lock:
            return [(pid, m) for when, pid, m in self.checks if when >= t]


def make_handler(log: CheckLog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:  # noqa: N802
            # The connection is still open: find its owner before answering.
            pid = log.owner(self.server.server_address[1], self.client_address[1])
            try:
                mirror_id = int(self.path.split("/")[1].removeprefix("m"))
            except ValueError:
                mirror_id = -1
            log.add(pid, mirror_id)
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.send_header("Connection", "close")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class Announces:
    """Every ``HELLO0 <node>`` seen on ``_mirrorbits_cluster``: node -> monotonic time last heard."""

    def __init__(self, server: RedisServer) -> None:
        self.last: dict[str, float] = {}
        self.pubsub = server.client().pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(**{schema.CHANNEL_CLUSTER: self._on})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.05, daemon=True)

    def _on(self, msg: dict[str, Any]) -> None:
        data = msg["data"]
        if isinstance(data, str) and data.startswith("HELLO0 "):
            self.last[data[len("HELLO0 "):]] = time.monotonic()

    def alive(self, within: float = 1.6) -> set[str]:
        now = time.monotonic()
        return {n for n, t in list(self.last.items()) if now - t <= within}

    def stop(self) -> None:
        self.thread.stop()
        self.thread.join(2)
        self.pubsub.close()


def split(ids: list[int], nodes: list[str]) -> dict[str, set[int]]:
    """Go's split of ``ids`` between ``nodes`` (sorted byte-wise, as every node sorts them)."""
    order = sorted(nodes, key=lambda n: n.encode())
    return {n: {m for m in ids if is_handled(ids, m, i, len(order))} for i, n in enumerate(order)}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        processes.kill(p)


def wait_until(check: Any, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


@pytest.mark.timeout(90)
def test_three_daemons_and_a_go_node_split_and_take_over(
        tmp_path: Path, redis_server: RedisServer, procs: list[subprocess.Popen[bytes]]) -> None:
    r = redis_server.client()
    repo = tmp_path / "repo"
    (repo / "pub").mkdir(parents=True)
    (repo / "pub" / "file.txt").write_text("hello")

    daemon_pids: list[int] = []
    checks = CheckLog(daemon_pids)
    web = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(checks))
    web.daemon_threads = True
    threading.Thread(target=web.serve_forever, daemon=True).start()
    web_port = web.server_address[1]
    try:
        r.set("MIRRORBITS_DB_VERSION", "2")  # else MIRRORS without a version reads as schema v0
        # Mirrors exist (so every node indexes them all from the start) but are disabled until
        # the cluster has formed: a node that starts alone would otherwise check them all.
        for m in MIRRORS:
            r.hset(schema.MIRRORS, str(m), f"m{m}")
            r.hset(schema.mirror_key(m), mapping={
                "ID": str(m), "name": f"m{m}", "http": f"http://127.0.0.1:{web_port}/m{m}/",
                "enabled": "0"})
            r.sadd(schema.handled_files_key(m), FILE)

        hello = Announces(redis_server)
        try:
            _run(tmp_path, repo, redis_server, r, procs, daemon_pids, checks, hello)
        finally:
            hello.stop()
    finally:
        web.shutdown()
        web.server_close()


def _run(tmp: Path, repo: Path, server: RedisServer, r: Any, procs: list[subprocess.Popen[bytes]],
         daemon_pids: list[int], checks: CheckLog, hello: Announces) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    go_id = f"{socket.gethostname() or 'unknown'}-16000"
    procs.append(processes.spawn([sys.executable, str(Path(__file__).with_name("fake_go_node.py")),
                                  server.address, "0", go_id]))
    daemons: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    for n in range(3):
        d = tmp / f"node{n}"
        d.mkdir()
        port = free_port()
        conf = d / "mirrorbits.conf"
        conf.write_text(
            f"Repository: {repo}\nRedisAddress: {server.address}\nDataDir: {d / 'data'}\n"
            f"ListenAddress: 127.0.0.1:{port}\nRPCListenAddress: 127.0.0.1:{free_port()}\n"
            f"GeoipDatabasePath: {d / 'nogeoip'}\nCheckInterval: 1\nScanInterval: 30\n")
        out = open(d / "daemon.log", "ab")  # noqa: SIM115
        p = processes.spawn([sys.executable, "-m", "mirrorbits", "daemon", "-config",
                              str(conf), "-p", str(d / "mirrorbits.pid")],
                             cwd=d, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        procs.append(p)
        daemon_pids.append(p.pid)
        daemons.append((p, port, d))

    def logs() -> str:
        return "\n".join(f"--- node{n}\n" + (d / "daemon.log").read_text(errors="replace")[-3000:]
                         for n, (_, _, d) in enumerate(daemons))

    for p, port, _ in daemons:
        def listening(p: subprocess.Popen[bytes] = p, port: int = port) -> bool:
            assert p.poll() is None, logs()
            try:
                wait_for_port("127.0.0.1", port, timeout=0.2)
            except TimeoutError:
                return False
            return True

        wait_until(listening, 40, "a daemon's HTTP listener")
    # The cluster has formed once four nodes announce; give every node a second and a half more
    # to have heard all of them (and to be past its own settling delay).
    try:
        wait_until(lambda: len(hello.alive()) == 4, 30, "four announcing nodes")
    except AssertionError:
        raise AssertionError(f"nodes heard: {sorted(hello.last)}\n{logs()}") from None
    time.sleep(1.6)
    nodes = sorted(hello.alive())
    assert go_id in nodes and len(nodes) == 4
    assert checks.since(0) == [], "no mirror is enabled yet: nothing may be checked"

    # Enable every mirror at once (what `mirrorbits enable` writes: the field, then MIRROR_UPDATE).
    t_enable = time.monotonic()
    pipe = r.pipeline(transaction=False)
    for m in MIRRORS:
        pipe.hset(schema.mirror_key(m), "enabled", "1")
        pipe.publish(schema.CHANNEL_MIRROR_UPDATE, str(m))
    pipe.execute()

    shares = split(MIRRORS, nodes)
    assert all(len(s) == 2 for s in shares.values())  # R = int(8/4 + 0.5) = 2
    daemon_mirrors = set(MIRRORS) - shares[go_id]
    wait_until(lambda: {m for _, m in checks.since(t_enable)} >= daemon_mirrors, 15,
               "the daemons' first checks")
    time.sleep(1.5)  # room for any duplicate check to show up
    first = checks.since(t_enable)
    assert all(pid is not None for pid, _ in first), first
    # Each mirror checked by exactly one node, and exactly once (CheckInterval is a minute).
    assert sorted(m for _, m in first) == sorted(daemon_mirrors), first
    by_pid: dict[int, set[int]] = {}
    for pid, m in first:
        assert pid is not None
        by_pid.setdefault(pid, set()).add(m)
    # The daemons' shares are exactly the formula's, position by position; the Go node's share
    # (counted in the split, but not a Python process) is left to it.
    node_of: dict[int, str] = {}
    for pid, got in by_pid.items():
        owners = [n for n, s in shares.items() if s == got and n != go_id]
        assert len(owners) == 1, (pid, got, shares)
        node_of[pid] = owners[0]
    assert sorted(node_of.values()) == sorted(n for n in nodes if n != go_id)

    # SIGKILL one daemon: no goodbye, its announces just stop.
    victim_proc = daemons[1][0]
    victim = node_of[victim_proc.pid]
    t_kill = time.monotonic()
    victim_proc.send_signal(signal.SIGKILL)
    victim_proc.wait()
    survivors = [n for n in nodes if n != victim]
    new_shares = split(MIRRORS, survivors)
    expected = {(pid, m) for pid, n in node_of.items() if n != victim for m in new_shares[n]}
    already = set(first)
    due = expected - already  # newly handled by a survivor: never checked by it yet
    assert due, (shares, new_shares)  # the victim's mirrors must go somewhere

    def taken_over() -> bool:
        return due <= set(checks.since(t_kill))

    try:
        wait_until(taken_over, TAKEOVER_LIMIT, "the survivors to take over")
    except AssertionError:
        raise AssertionError(f"due {sorted(due)}, seen {checks.since(t_kill)}\n{logs()}") from None
    elapsed = time.monotonic() - t_kill
    assert elapsed < TAKEOVER_LIMIT
    time.sleep(0.5)
    after = checks.since(t_kill)
    # Nothing outside the new split, nothing twice, nothing for the Go node's new share.
    assert set(after) <= expected, (after, expected)
    assert len(after) == len(set(after)), after
    assert not any(m in new_shares[go_id] for _, m in after)
    assert victim not in hello.alive()
    print(f"takeover of {sorted(m for _, m in due)} by the survivors after {elapsed:.1f} s")
    for p, _, _ in daemons:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p, _, _ in daemons:
        assert p.wait(30) in (0, -signal.SIGKILL), logs()
