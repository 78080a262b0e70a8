"""CPU cost of the HTTP layer alone: the lean channel with its whole-head parser against the same
channel with twisted's line parser, around a leaf resource that only answers a 302.

Why: the redirector's own work swings with the world and the load; this isolates what the parser
and the request bookkeeping cost per request (one request per read, keep-alive, in-memory
transport), alternating the two parsers in one process so that both see the same machine load.

    python bench/http_channel.py [--requests 20000] [--rounds 12]
    python bench/http_channel.py --sockets [--compare /path/to/other/tree] [--runs 4]

``--sockets``: the same 302 leaf on the lean site behind the daemon's connection tracker, served
by a process of its own on loopback, loaded with ``wrk -t1 -c16`` (keep-alive); the figure is the
server process's CPU time per request, so the kernel's socket work and the reactor's are in it.
With ``--compare TREE`` the server runs from TREE's code and this tree's in turn (A B B A ...).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.argv[1:2] != ["--serve"]:  # a server runs the code of the tree in its PYTHONPATH
    sys.path.insert(0, ROOT)

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.web import http, resource, server  # noqa: E402

from mirrorbits.twistedcompat import header_table  # noqa: E402
from mirrorbits.web.site import LeanChannel, LeanSite  # noqa: E402

REQUEST = (b"GET /pub/releases/1.0/file-123.iso HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
           b"User-Agent: wrk\r\nX-Forwarded-For: 81.2.69.160\r\n\r\n")


class Redirect(resource.Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        header_table(request.responseHeaders)[b"Location"] = [b"http://mirror.example.net/f"]
        request.setResponseCode(302)
        return b""


def serve(port: int) -> None:
    """The leaf on the lean site, behind the daemon's connection tracker, on 127.0.0.1:port."""
    from twisted.internet import reactor

    from mirrorbits.lifecycle.listener import ConnectionTracker

    reactor.listenTCP(port, ConnectionTracker(LeanSite(Redirect()), reactor),  # type: ignore[attr-defined]
                      interface="127.0.0.1", backlog=1024)
    reactor.run()  # type: ignore[attr-defined]


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def through_sockets(tree: str, seconds: int) -> float:
    """CPU microseconds per request of a server process running ``tree``'s code."""
    from tests.fixtures.servers import free_port, wait_for_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port)],
                            cwd=tree, env=dict(os.environ, PYTHONPATH=tree))
    try:
        wait_for_port("127.0.0.1", port, 30)
        url = f"http://127.0.0.1:{port}/pub/file.iso"
        subprocess.run(["wrk", "-t1", "-c16", "-d2s", url], capture_output=True, check=True)
        t0 = cpu_ticks(proc.pid)
        out = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", url], capture_output=True,
                             text=True, check=True).stdout
        ticks = cpu_ticks(proc.pid) - t0
    finally:
        proc.terminate()
        proc.wait(10)
    requests = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    return ticks / os.sysconf("SC_CLK_TCK") * 1e6 / requests


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000, help="per round")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--sockets", action="store_true", help="through loopback sockets and wrk")
    ap.add_argument("--compare", metavar="TREE", help="with --sockets: TREE's code against this tree's")
    ap.add_argument("--runs", type=int, default=4, help="with --sockets: runs per tree")
    ap.add_argument("--seconds", type=int, default=8, help="with --sockets: wrk's duration")
    args = ap.parse_args()
    if args.sockets:
        trees = [os.path.abspath(args.compare), ROOT] if args.compare else [ROOT]
        figures: dict[str, list[float]] = {tree: [] for tree in trees}
        for run in range(args.runs):
            for tree in (trees if run % 2 == 0 else trees[::-1]):
                figures[tree].append(through_sockets(tree, args.seconds))
        for tree, values in figures.items():
            values.sort()
            print(f"{tree}: {', '.join(f'{v:.1f}' for v in values)} us CPU per request "
                  f"(server process, wrk -t1 -c16 keep-alive)")
        return
    site = LeanSite(Redirect())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert channel is not None
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    channel.makeConnection(transport)
    parsers = {"whole head": LeanChannel.dataReceived, "twisted lines": http.HTTPChannel.dataReceived}
    per_request: dict[str, list[float]] = {name: [] for name in parsers}
    try:
        for r in range(args.rounds):
            for name in (list(parsers) if r % 2 else list(reversed(parsers))):
                LeanChannel.dataReceived = parsers[name]  # type: ignore[method-assign]
                t0 = time.process_time()
                for _ in range(args.requests):
                    channel.dataReceived(REQUEST)
                per_request[name].append((time.process_time() - t0) * 1e6 / args.requests)
                assert transport.value().startswith(b"HTTP/1.1 302 Found\r\n")
                transport.clear()
    finally:
        LeanChannel.dataReceived = parsers["whole head"]  # type: ignore[method-assign]
    for name, values in per_request.items():
        values.sort()
        print(f"{name}: min {values[0]:.2f}, median {values[len(values) // 2]:.2f} us CPU per "
              f"request ({args.rounds} rounds of {args.requests})")


if __name__ == "__main__":
    main()
