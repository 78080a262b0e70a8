"""``Workers: 2`` on real processes: upgrades and reloads under load, SIGTERM mid-burst, parent death.

Every request is a GET of a file one mirror carries, so each answer is a 302 that the process that
served it counts; each worker flushes its own counters, so ``STATS_TOTAL`` must equal the 302s the
clients received, whichever process answered them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from pathlib import Path

from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port, wait_for_port
from tests.lifecycle.helpers import (
    Daemon,
    LoadClient,
    burst,
    check_load_results,
    go_style,
    kill_all,
    redirects,
    stats_total,
    subreaper,
    wait_exit,
    write_config,
)

WORKER_MODULE = "mirrorbits.worker"


def children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def worker_pids(parent: int, want: int = 1, timeout: float = 20.0) -> list[int]:
    """The HTTP worker processes of ``parent`` (waiting until there are ``want`` of them)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = []
        for child in children(parent):
            with contextlib.suppress(OSError):
                if WORKER_MODULE in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
                    pids.append(child)
        if len(pids) >= want or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running (not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def served_by_workers(out: str) -> dict[int, int]:
    """Connections each worker process says it served, from its exit line."""
    return {int(pid): int(n) for pid, n in
            re.findall(r"HTTP worker \d+ \(pid (\d+)\) stopped after (\d+) connection", out)}


def test_workers_three_upgrades_and_three_reloads_under_load(tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    conf = write_config(tmp_path, port, redis, "Workers: 2\n")
    pidfile = tmp_path / "mirrorbits.pid"
    pids: list[int] = []
    workers: list[int] = []
    with subreaper():
        d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
        pids.append(d.proc.pid)
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            workers += worker_pids(d.proc.pid)
            d.wait_log("HTTP worker 1 serving")
            assert redirects(port)
            load = LoadClient(port, rate=650, keepalive=16, fresh=16).start()
            t0 = time.monotonic()
            time.sleep(2)
            exits = []
            for i in range(3):
                old = d.current_pid()
                os.kill(old, signal.SIGUSR2)
                new = d.wait_pid_change(old)
                pids.append(new)
                workers += worker_pids(new)
                exits.append(wait_exit(old))
                time.sleep(0.5)
                conf.write_text(conf.read_text() + f"MaxLinkHeaders: {5 + i}\n")
                os.kill(new, signal.SIGHUP)
                # the parent and its worker both take the new config
                d.wait_log("SIGHUP Received: Reloading configuration...", count=2 * (i + 1))
                time.sleep(1.0)
            time.sleep(max(0.0, 20.0 - (time.monotonic() - t0)))
            results = load.stop()
            final = d.current_pid()
            os.kill(final, signal.SIGTERM)
            exits.append(wait_exit(final))
            time.sleep(0.2)
            left = [w for w in workers if alive(w)]
        finally:
            kill_all(pids + workers)
    out = d.output()
    print(f"{results.total} requests in {results.ended - results.started:.1f}s "
          f"({results.rate:.0f}/s): {dict(results.statuses)} errors {dict(results.errors)}; "
          f"per second {sorted(results.per_second.items())}")
    served = served_by_workers(out)
    print(f"connections served by the workers: {served}")
    assert len(set(pids)) == 4, out[-3000:]
    assert exits == [0, 0, 0, 0], out[-3000:]
    assert len(set(workers)) == 4, workers  # one worker per generation
    assert not left, (left, out[-3000:])
    # every generation's worker took its share of the connections, then stopped gracefully
    assert set(served) == set(workers), (served, workers, out[-3000:])
    assert all(n > 0 for n in served.values()), served
    assert out.count("Asking parent to quit") == 3
    check_load_results(results, redis, out)


def test_workers_sigterm_mid_burst_loses_no_download(tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    conf = write_config(tmp_path, port, redis, "Workers: 2\n")
    pidfile = tmp_path / "mirrorbits.pid"
    d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
    workers: list[int] = []
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        workers = worker_pids(d.proc.pid)
        d.wait_log("HTTP worker 1 serving")
        assert redirects(port)
        sent = False

        def progress(done: int) -> None:
            nonlocal sent
            if done >= 400 and not sent:
                sent = True
                d.proc.send_signal(signal.SIGTERM)

        results = burst(port, 1200, concurrency=40, on_progress=progress)
        assert d.proc.wait(30) == 0, d.output()[-3000:]
        left = [w for w in workers if alive(w)]
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        kill_all(workers)
    out = d.output()
    print(f"burst: {dict(results.statuses)} errors {dict(results.errors)}; "
          f"workers served {served_by_workers(out)}")
    assert len(workers) == 1 and not left, (workers, left)
    # Accepted connections were all answered (none reset in an accept queue); later ones refused.
    assert set(results.errors) <= {"refused"}, results.examples
    assert results.statuses[302] >= 400
    assert stats_total(redis) == results.statuses[302], out[-3000:]
    assert out.count("Saving stats") == 2  # the parent's and the worker's own counters
    assert set(served_by_workers(out)) == set(workers)


def test_worker_exits_when_its_parent_dies(tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    conf = write_config(tmp_path, port, redis, "Workers: 3\n")
    pidfile = tmp_path / "mirrorbits.pid"
    with subreaper():
        d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
        workers: list[int] = []
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            workers = worker_pids(d.proc.pid, want=2)
            assert len(workers) == 2, workers
            d.wait_log("HTTP worker 2 serving")
            d.proc.kill()  # SIGKILL: no chance to stop its workers
            d.proc.wait(10)
            codes = [wait_exit(w, timeout=15) for w in workers]
        finally:
            kill_all(workers)
    assert codes == [0, 0], d.output()[-3000:]
    assert "parent is gone" in d.output()


def unix_head(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"HEAD /testy.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data.split(b"\r\n", 1)[0]


def test_workers_on_a_unix_socket_leave_it_to_the_next_generation(tmp_path: Path,
                                                                   redis: RedisServer) -> None:
    """A stopping worker must neither shutdown() the shared socket nor unlink its path."""
    sock_path = str(tmp_path / "http.sock")
    conf = write_config(tmp_path, 0, redis, "Workers: 2\n")
    conf.write_text(conf.read_text().replace("ListenAddress: 127.0.0.1:0", f"ListenAddress: unix:{sock_path}"))
    pidfile = tmp_path / "mirrorbits.pid"
    pids: list[int] = []
    workers: list[int] = []
    with subreaper():
        d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
        pids.append(d.proc.pid)
        try:
            workers += worker_pids(d.proc.pid)
            d.wait_log("HTTP worker 1 serving")
            assert unix_head(sock_path) == b"HTTP/1.1 302 Found"
            os.kill(d.proc.pid, signal.SIGUSR2)
            child = d.wait_pid_change(d.proc.pid)
            pids.append(child)
            workers += worker_pids(child)
            assert d.proc.wait(20) == 0
            d.wait_log("HTTP worker 1 serving", count=2)
            assert not alive(workers[0])
            assert os.path.exists(sock_path)
            answers = [unix_head(sock_path) for _ in range(40)]
            os.kill(child, signal.SIGTERM)
            assert wait_exit(child) == 0
            left = [w for w in workers if alive(w)]
        finally:
            kill_all(pids + workers)
    out = d.output()
    assert set(answers) == {b"HTTP/1.1 302 Found"}, (answers, out[-3000:])
    assert len(set(workers)) == 2 and not left, (workers, left)
    assert set(served_by_workers(out)) == set(workers), out[-3000:]
    assert not os.path.exists(sock_path)  # the last process cleans up


def test_a_worker_that_dies_is_started_again(tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    conf = write_config(tmp_path, port, redis, "Workers: 2\n")
    pidfile = tmp_path / "mirrorbits.pid"
    d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
    workers: list[int] = []
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        workers += worker_pids(d.proc.pid)
        d.wait_log("HTTP worker 1 serving")
        os.kill(workers[0], signal.SIGKILL)
        d.wait_log("HTTP worker 1 serving", count=2)
        workers += [w for w in worker_pids(d.proc.pid) if w not in workers]
        assert redirects(port)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
        left = [w for w in workers if alive(w)]
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        kill_all(workers)
    out = d.output()
    assert len(workers) == 2 and not left, (workers, left, out[-3000:])
    assert "HTTP worker 1 died (-9); starting it again" in out
    assert set(served_by_workers(out)) == {workers[1]}, out[-3000:]
