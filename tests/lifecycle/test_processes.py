"""Lifecycle of real daemon processes: failed upgrades, reloads, ListenAddress changes, systemd,
the Go hand-over protocol and the twistd path."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port, wait_for_port
from tests.lifecycle.helpers import (
    Daemon,
    LoadClient,
    env,
    go_style,
    kill_all,
    redirects,
    subreaper,
    twistd,
    wait_exit,
    write_config,
)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def test_failed_upgrade_bad_reloads_and_listen_address_change(tmp_path: Path,
                                                               redis: RedisServer) -> None:
    port, new_port = free_port(), free_port()
    conf = write_config(tmp_path, port, redis)
    good = conf.read_text()
    rpc_port = int(good.split("RPCListenAddress: 127.0.0.1:")[1].split()[0])
    pidfile = tmp_path / "mirrorbits.pid"
    pids: list[int] = []
    with subreaper():
        d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
        pids.append(d.proc.pid)
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            assert redirects(port)
            pid = d.proc.pid
            assert d.current_pid() == pid

            # a bad file keeps the old config, and says why
            conf.write_text(good + "OutputMode: fast\n")
            os.kill(pid, signal.SIGHUP)
            d.wait_log("SIGHUP Received: ")
            assert "OutputMode" in d.output().split("SIGHUP Received: ")[1].splitlines()[0]
            assert redirects(port)
            # a vanished file too (Go exits here)
            conf.rename(tmp_path / "moved.conf")
            os.kill(pid, signal.SIGHUP)
            d.wait_log("SIGHUP Received: ", count=2)
            time.sleep(0.3)
            assert d.proc.poll() is None and redirects(port)

            # the new program cannot start: the old one keeps serving, RPC port re-opened
            (tmp_path / "moved.conf").rename(conf)
            conf.write_text(good + "OutputMode: fast\n")
            os.kill(pid, signal.SIGUSR2)
            d.wait_log("Relaunch failed: child")
            assert "exited with status 1 before taking over; still serving" in d.output()
            d.wait_log("Re-opened rpc after the failed upgrade")
            assert not refused(rpc_port)
            assert d.current_pid() == pid and redirects(port)

            # ListenAddress changed: the new socket listens, the old one is closed
            conf.write_text(good.replace(f"127.0.0.1:{port}\n", f"127.0.0.1:{new_port}\n"))
            os.kill(pid, signal.SIGHUP)
            d.wait_log(f"Service listening on 127.0.0.1:{new_port}")
            assert redirects(new_port)
            assert refused(port)
            assert d.proc.poll() is None

            # and the rebound socket is the one an upgrade hands over
            os.kill(pid, signal.SIGUSR2)
            child = d.wait_pid_change(pid)
            pids.append(child)
            assert d.proc.wait(20) == 0
            assert redirects(new_port)
            os.kill(child, signal.SIGQUIT)
            assert wait_exit(child) == 0
            assert not pidfile.exists()
        finally:
            kill_all(pids)


LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="http")
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""


def test_systemd_socket_activation_notify_and_log_reopen(tmp_path: Path, redis: RedisServer) -> None:
    config_port = free_port()  # what the config says: must stay unused under socket activation
    conf = write_config(tmp_path, config_port, redis)
    activated = socket.socket()
    activated.bind(("127.0.0.1", 0))
    activated.listen(128)
    port = activated.getsockname()[1]
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    logfile = tmp_path / "mirrorbits.log"
    pidfile = tmp_path / "mirrorbits.pid"
    fd = activated.fileno()
    args = [sys.executable, "-c", LAUNCHER, str(fd), "-m", "mirrorbits", "daemon",
            "-config", str(conf), "-p", str(pidfile), "-monitor=false", "-log", str(logfile)]
    pids: list[int] = []
    with subreaper():
        d = Daemon(args, tmp_path, pidfile=pidfile, extra_env={"NOTIFY_SOCKET": notify_path},
                   pass_fds=(fd,))
        pids.append(d.proc.pid)
        activated.close()  # the daemon has it now
        try:
            assert notify.recv(4096).decode() == f"READY=1\nMAINPID={d.proc.pid}"
            assert redirects(port)
            assert refused(config_port)

            # logrotate: move the file away, SIGUSR1, the daemon writes to a new file
            logfile.rename(tmp_path / "mirrorbits.log.1")
            os.kill(d.proc.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while not logfile.exists():
                assert time.monotonic() < deadline, "log not re-opened"
                time.sleep(0.05)
            assert "SIGUSR1 Received: Re-opening logs..." in (tmp_path / "mirrorbits.log.1").read_text()

            os.kill(d.proc.pid, signal.SIGHUP)
            assert notify.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert notify.recv(4096).decode() == f"READY=1\nMAINPID={d.proc.pid}"
            assert "SIGHUP Received: Reloading configuration..." in logfile.read_text()

            # an upgrade of a socket-activated daemon: the child becomes systemd's main pid
            os.kill(d.proc.pid, signal.SIGUSR2)
            child_ready = notify.recv(4096).decode()
            child = int(child_ready.split("MAINPID=")[1])
            pids.append(child)
            assert child_ready == f"READY=1\nMAINPID={child}" and child != d.proc.pid
            assert notify.recv(4096).decode() == f"MAINPID={child}"  # from the parent, handing over
            assert d.proc.wait(20) == 0
            assert redirects(port)
            os.kill(child, signal.SIGTERM)
            assert notify.recv(4096).decode() == "STOPPING=1"
            assert wait_exit(child) == 0
            assert refused(config_port)
        finally:
            notify.close()
            kill_all(pids)


FAKE_GO_PARENT = r"""
import os, select, signal, socket, subprocess, sys, threading
port, log = int(sys.argv[1]), sys.argv[2]
argv = sys.argv[3:]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(1024)
FD = 7                                  # Go passes whatever number dup() gave it
os.dup2(s.fileno(), FD)
os.set_inheritable(FD, True)
quit, spawn = threading.Event(), threading.Event()
signal.signal(signal.SIGQUIT, lambda *a: quit.set())
signal.signal(signal.SIGUSR2, lambda *a: spawn.set())
def serve():
    while not quit.is_set():
        r, _, _ = select.select([s], [], [], 0.05)
        if not r or quit.is_set():
            continue
        try:
            c, _ = s.accept()
        except BlockingIOError:
            continue
        c.setblocking(True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\ngo-parent")
        c.close()
s.setblocking(False)
threads = [threading.Thread(target=serve) for _ in range(4)]
for t in threads: t.start()
print("fake go parent serving", flush=True)
while not spawn.wait(0.05):
    pass
env = dict(os.environ, OLD_FD=str(FD), OLD_NAME=f"tcp:127.0.0.1:{port}->", OLD_PPID=str(os.getpid()))
with open(log, "ab") as out:
    child = subprocess.Popen(argv, env=env, pass_fds=(FD,), stdout=out, stderr=out)
print(f"Spawned child {child.pid}", flush=True)
while not quit.wait(0.05):
    pass
for t in threads: t.join()
print("fake go parent: quit", flush=True)
os._exit(0)   # no close/shutdown of the shared socket beyond process exit, as Go
"""


def test_hand_over_from_a_go_style_parent_under_load(tmp_path: Path, redis: RedisServer) -> None:
    """The Go protocol (OLD_FD at an arbitrary number, OLD_NAME, OLD_PPID, SIGQUIT back) spoken by
    a non-Twisted parent, so the Go-to-Python migration path is exercised without a Go toolchain."""
    port = free_port()
    conf = write_config(tmp_path, port, redis)
    pidfile = tmp_path / "mirrorbits.pid"
    script = tmp_path / "fake_go_parent.py"
    script.write_text(FAKE_GO_PARENT)
    parent_args = [sys.executable, str(script), str(port), str(tmp_path / "daemon.log"),
                   *go_style(conf, pidfile)]
    pids: list[int] = []
    with subreaper():
        parent = subprocess.Popen(parent_args, cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                                  text=True)
        pids.append(parent.pid)
        try:
            assert parent.stdout is not None
            assert parent.stdout.readline().strip() == "fake go parent serving"
            load = LoadClient(port, rate=300, keepalive=4, fresh=4).start()
            time.sleep(0.5)
            parent.send_signal(signal.SIGUSR2)
            assert parent.stdout.readline().startswith("Spawned child")
            assert parent.wait(30) == 0  # it got SIGQUIT from the Python daemon and drained
            assert parent.stdout.read().strip() == "fake go parent: quit"
            time.sleep(1.0)
            results = load.stop()
            child = int(pidfile.read_text())
            pids.append(child)
            log = (tmp_path / "daemon.log").read_text()
            assert "Recovered listener tcp:127.0.0.1:" in log and "Asking parent to quit" in log
            print(f"hand-over: {dict(results.statuses)} errors {dict(results.errors)}")
            assert not results.errors, results.examples
            assert results.statuses[200] > 0 and results.statuses[302] > 0
            assert set(results.bodies) == {"go-parent"}
            os.kill(child, signal.SIGTERM)
            assert wait_exit(child) == 0
        finally:
            kill_all(pids)


GEOIP_TEST_DATA = Path(__file__).resolve().parents[1] / "data" / "geoip"


def go_binary() -> str | None:
    path = os.environ.get("MIRRORBITS_GO_BINARY") or shutil.which("mirrorbits-go")
    if not path or not os.access(path, os.X_OK):
        return None
    with open(path, "rb") as f:
        return path if f.read(4) == b"\x7fELF" else None


def test_go_daemon_upgraded_in_place_to_python(tmp_path: Path, redis: RedisServer) -> None:
    binary = go_binary()
    if binary is None:
        print("SKIPPED: no Go Mirrorbits binary (set MIRRORBITS_GO_BINARY to a built "
              "etix/mirrorbits daemon to run the real Go-to-Python hand-over)")
        pytest.skip("no Go Mirrorbits binary: set MIRRORBITS_GO_BINARY")
    port = free_port()
    # The Go daemon will not start without GeoIP data or a fallback ("Can't load the GeoIP
    # databases"): give it both, the test databases under the names it looks for.
    geoip = tmp_path / "geoip"
    geoip.mkdir()
    shutil.copy(GEOIP_TEST_DATA / "GeoLite2-City-Test.mmdb", geoip / "GeoLite2-City.mmdb")
    shutil.copy(GEOIP_TEST_DATA / "GeoLite2-ASN-Test.mmdb", geoip / "GeoLite2-ASN.mmdb")
    conf = write_config(tmp_path, port, redis, extra=(
        "Fallbacks:\n    - URL: http://127.0.0.1:9/fallback/\n"
        "      CountryCode: fr\n      ContinentCode: eu\n"))
    conf.write_text(conf.read_text().replace(f"GeoipDatabasePath: {tmp_path / 'nogeoip'}",
                                             f"GeoipDatabasePath: {geoip}"))
    pidfile = tmp_path / "mirrorbits.pid"
    exe = tmp_path / "bin" / "mirrorbits"
    exe.parent.mkdir()
    shutil.copy(binary, exe)
    pids: list[int] = []
    with subreaper():
        go = subprocess.Popen([str(exe), "daemon", "-config", str(conf), "-p", str(pidfile),
                               "-monitor=false"], cwd=tmp_path, env=env(),
                              stdout=open(tmp_path / "daemon.log", "ab"), stderr=subprocess.STDOUT)
        pids.append(go.pid)
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            # A keep-alive connection that the Go parent closes while idle during its shutdown is
            # retried on a new connection, as HTTP clients do, and counted apart; a refused
            # connection or a request lost once our side serves is still a failure.
            load = LoadClient(port, rate=300, retry_idle_close=True).start()
            time.sleep(1)
            # the operator installs the new program at the same path, then asks for an upgrade
            exe.unlink()
            exe.write_text(f"#!/bin/sh\nexport PYTHONPATH={Path(__file__).resolve().parents[2]}\n"
                           f"exec {sys.executable} -m mirrorbits \"$@\"\n")
            exe.chmod(0o755)
            go.send_signal(signal.SIGUSR2)
            assert go.wait(30) == 0
            go_gone = time.monotonic()
            time.sleep(1)
            results = load.stop()
            child = int(pidfile.read_text())
            pids.append(child)
            print(f"Go to Python: {dict(results.statuses)} errors {dict(results.errors)}, "
                  f"{len(results.idle_closes)} idle keep-alive connections closed by the Go parent")
            assert not results.errors, results.examples
            assert results.statuses[302] > 0
            # every idle close came from the Go parent's shutdown, none from our side after it
            assert all(t <= go_gone + 0.2 for t in results.idle_closes), (results.idle_closes, go_gone)
            os.kill(child, signal.SIGTERM)
            assert wait_exit(child) == 0
        finally:
            kill_all(pids)


def test_twistd_reload_and_upgrade(tmp_path: Path, redis: RedisServer) -> None:
    """Under ``twistd -n`` the same handlers are installed once the reactor runs."""
    port = free_port()
    conf = write_config(tmp_path, port, redis)
    pids: list[int] = []
    with subreaper():
        d = Daemon(twistd(conf), tmp_path)
        pids.append(d.proc.pid)
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            assert redirects(port)
            os.kill(d.proc.pid, signal.SIGHUP)
            d.wait_log("SIGHUP Received: Reloading configuration...")
            os.kill(d.proc.pid, signal.SIGUSR2)
            d.wait_log("Spawned child ")
            child = int(d.output().split("Spawned child ")[1].split()[0])
            pids.append(child)
            assert d.proc.wait(30) == 0, d.output()[-3000:]
            assert redirects(port)
            os.kill(child, signal.SIGTERM)
            assert wait_exit(child) in (0, -signal.SIGTERM)  # twistd re-raises SIGTERM
            assert refused(port)
        finally:
            kill_all(pids)


def unix_get(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"HEAD /testy.tgz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def test_unix_socket_survives_upgrade_and_goes_with_the_last_process(tmp_path: Path,
                                                                     redis: RedisServer) -> None:
    sock_path = str(tmp_path / "http.sock")
    conf = write_config(tmp_path, 0, redis)
    conf.write_text(conf.read_text().replace("ListenAddress: 127.0.0.1:0", f"ListenAddress: unix:{sock_path}"))
    pidfile = tmp_path / "mirrorbits.pid"
    pids: list[int] = []
    with subreaper():
        d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
        pids.append(d.proc.pid)
        try:
            d.wait_log(f"Service listening on {sock_path}")
            deadline = time.monotonic() + 10
            while b" 302 " not in unix_get(sock_path).split(b"\r\n")[0] + b" ":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            os.kill(d.proc.pid, signal.SIGUSR2)
            child = d.wait_pid_change(d.proc.pid)
            pids.append(child)
            assert d.proc.wait(20) == 0
            # Twisted's unix port would unlink the path when the old process stops listening
            assert os.path.exists(sock_path)
            assert unix_get(sock_path).startswith(b"HTTP/1.1 302 ")
            os.kill(child, signal.SIGTERM)
            assert wait_exit(child) == 0
            assert not os.path.exists(sock_path)  # the last process cleans up
        finally:
            kill_all(pids)
