"""A stand-in for a Go mirrorbits node: publishes ``HELLO<db> <id>`` every second until killed.

Usage: python fake_go_node.py <host:port> <db> <node id>
"""

import socket
import sys
import time


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    message = f"HELLO{sys.argv[2]} {sys.argv[3]}".encode()
    sock = socket.create_connection((host, int(port)))
    channel = b"_mirrorbits_cluster"
    while True:
        parts = [b"PUBLISH", channel, message]
        cmd = b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        sock.sendall(cmd)
        sock.recv(64)
        time.sleep(1.0)


if __name__ == "__main__":
    main()
