"""CPU cost of the HTTP layer alone: the lean channel with its whole-head parser against the same
channel with twisted's line parser, around a leaf resource that only answers a 302.

Why: the redirector's own work swings with the world and the load; this isolates what the parser
and the request bookkeeping cost per request (one request per read, keep-alive, in-memory
transport), alternating the two parsers in one process so that both see the same machine load.

    python bench/http_channel.py [--requests 20000] [--rounds 12]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000, help="per round")
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
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
