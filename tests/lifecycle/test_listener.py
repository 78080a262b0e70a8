"""Listen addresses, binding, inherited fds and the systemd protocols, on real sockets."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from mirrorbits.lifecycle import systemd
from mirrorbits.lifecycle.listener import (
    bind_socket,
    parse_listen_address,
    refuse_new_connections,
    socket_from_fd,
    socket_name,
)
from mirrorbits.lifecycle.pidfile import remove_pidfile, write_pidfile
from mirrorbits.lifecycle.upgrade import inherited_from_upgrade


@pytest.mark.parametrize("text,family,host,port", [
    ("127.0.0.1:8080", socket.AF_INET, "127.0.0.1", 8080),
    ("[::1]:8081", socket.AF_INET6, "::1", 8081),
    ("localhost:80", socket.AF_INET, "localhost", 80),
    ("tcp:8082:interface=127.0.0.1", socket.AF_INET, "127.0.0.1", 8082),
    ("tcp6:8083:interface=\\:\\:1", socket.AF_INET6, "::1", 8083),
    ("tcp:port=8084", socket.AF_INET, "0.0.0.0", 8084),
])
def test_parse_tcp_addresses(text: str, family: int, host: str, port: int) -> None:
    spec = parse_listen_address(text)
    assert (spec.family, spec.host, spec.port) == (family, host, port)


def test_parse_other_forms() -> None:
    assert parse_listen_address("unix:/run/mb.sock").path == "/run/mb.sock"
    assert parse_listen_address("systemd:domain=INET:index=2").systemd_index == 2
    ssl = parse_listen_address("ssl:443:privateKey=k.pem")
    assert ssl.description == "ssl:443:privateKey=k.pem" and ssl.family == 0
    any_port = parse_listen_address(":8080")
    assert any_port.port == 8080 and any_port.host in ("::", "0.0.0.0")
    for bad in ("", "8080", "host:99999", "unix:", "tcp:notaport"):
        with pytest.raises(ValueError):
            parse_listen_address(bad)


def test_bind_tcp_is_listening_nonblocking_reusable() -> None:
    sock = bind_socket(parse_listen_address("127.0.0.1:0"))
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getblocking() is False
        assert not os.get_inheritable(sock.fileno())  # only an upgrade passes it on, explicitly
        port = sock.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert socket_name(sock) == f"127.0.0.1:{port}"
    finally:
        sock.close()


def test_bind_dual_stack_accepts_ipv4_and_ipv6() -> None:
    spec = parse_listen_address(":0")
    if spec.family != socket.AF_INET6:
        print("no IPv6 on this host: ':port' binds IPv4 only, nothing dual-stack to check")
        assert spec.host == "0.0.0.0"
        return
    sock = bind_socket(spec)
    try:
        port = sock.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        socket.create_connection(("::1", port), timeout=2).close()
        assert socket_name(sock) == f"[::]:{port}"
    finally:
        sock.close()


def test_bind_unix_replaces_only_a_dead_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "http.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # file left behind, nobody listening
    sock = bind_socket(parse_listen_address(f"unix:{path}"))
    try:
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.close()
        with pytest.raises(OSError):  # a live listener is never taken over
            bind_socket(parse_listen_address(f"unix:{path}"))
    finally:
        sock.close()
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(OSError):
        bind_socket(parse_listen_address(f"unix:{regular}"))
    assert regular.read_text() == "x"


def test_socket_from_fd_only_takes_listening_stream_sockets(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        fd = os.dup(f.fileno())
        with pytest.raises(OSError):
            socket_from_fd(fd)
        os.close(fd)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unlistened = socket.socket()
    try:
        for s in (udp, unlistened):
            fd = os.dup(s.fileno())
            with pytest.raises(ValueError):
                socket_from_fd(fd)
            os.close(fd)  # still open: a refused fd is left alone
    finally:
        udp.close()
        unlistened.close()
    listening = bind_socket(parse_listen_address("127.0.0.1:0"))
    fd = os.dup(listening.fileno())
    adopted = socket_from_fd(fd)
    assert adopted.fileno() == fd and adopted.getsockname() == listening.getsockname()
    adopted.close()
    listening.close()


def test_inherited_from_upgrade_reads_and_clears_the_go_variables() -> None:
    listening = bind_socket(parse_listen_address("127.0.0.1:0"))
    fd = os.dup(listening.fileno())
    env = {"OLD_FD": str(fd), "OLD_NAME": "tcp:127.0.0.1:1->", "OLD_PPID": "4242", "X": "y"}
    inherited = inherited_from_upgrade(env)
    assert inherited is not None
    assert inherited.parent_pid == 4242 and inherited.sock.fileno() == fd
    assert env == {"X": "y"}  # our children must not see them
    inherited.sock.close()
    listening.close()
    # a stale OLD_FD that is not a socket is ignored (the daemon binds ListenAddress)
    r, w = os.pipe()
    assert inherited_from_upgrade({"OLD_FD": str(r), "OLD_PPID": "1"}) is None
    assert inherited_from_upgrade({"OLD_FD": "x"}) is None
    os.close(r)
    os.close(w)


def test_sd_notify_datagrams() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.settimeout(2)
        try:
            assert systemd.notify("READY=1", {"NOTIFY_SOCKET": path})
            assert server.recv(4096) == b"READY=1"
            assert not systemd.notify("READY=1", {})  # no systemd: nothing sent, no error
            os.environ["NOTIFY_SOCKET"] = path
            try:
                systemd.reloading()
                msg = server.recv(4096).decode()
                assert msg.startswith("RELOADING=1\nMONOTONIC_USEC=") and msg.split("=")[-1].isdigit()
                systemd.ready()
                assert server.recv(4096).decode() == f"READY=1\nMAINPID={os.getpid()}"
            finally:
                del os.environ["NOTIFY_SOCKET"]
        finally:
            server.close()
        # a socket that went away is logged, never raised
        assert not systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": path + ".gone"})


def test_listen_fds_needs_our_pid() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    assert systemd.listen_fds(env) == []
    assert env == {"LISTEN_PID": "1", "LISTEN_FDS": "1"}  # not ours: left alone
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""}
    assert systemd.listen_fds(env) == []
    assert env == {}


def test_pidfile_go_format_and_removal(tmp_path: Path) -> None:
    path = tmp_path / "run" / "mirrorbits.pid"
    assert write_pidfile(str(path))
    assert path.read_text() == str(os.getpid())  # no newline
    assert (path.stat().st_mode & 0o777) == 0o644
    path.write_text("1")  # an upgraded child's pid: not ours to remove
    remove_pidfile(str(path))
    assert path.exists()
    path.write_text(str(os.getpid()))
    remove_pidfile(str(path))
    assert not path.exists()


def test_refuse_new_connections_freezes_the_accept_queue() -> None:
    """The last process closing a shared socket first stops the queue growing (new SYNs dropped),
    empties it, then closes: the late client is refused, never reset after its request."""
    sock = bind_socket(parse_listen_address("127.0.0.1:0"))
    port = sock.getsockname()[1]
    early = socket.create_connection(("127.0.0.1", port), timeout=2)
    early.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert refuse_new_connections(sock)
    late = socket.socket()
    late.settimeout(0.3)
    with pytest.raises(TimeoutError):  # SYN dropped: not queued
        late.connect(("127.0.0.1", port))
    conn, _ = sock.accept()
    assert conn.recv(100).startswith(b"GET / ")  # the queued one is intact
    with pytest.raises(BlockingIOError):
        sock.accept()
    sock.close()
    again = socket.socket()
    again.settimeout(3)
    with pytest.raises(ConnectionRefusedError):
        again.connect(("127.0.0.1", port))
    for s in (early, late, conn, again):
        s.close()
    unix = socket.socket(socket.AF_UNIX)
    assert not refuse_new_connections(unix)
    unix.close()
