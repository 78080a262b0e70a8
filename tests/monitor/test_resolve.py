"""The daemon's resolver for the per-family checks: the reactor's (getaddrinfo in a thread), asked
for both families at once; IP literals answer themselves.  Only names of /etc/hosts are asked."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial import unittest

from mirrorbits.monitor.resolve import HostAddresses, ReactorResolver


class ReactorResolverTests(unittest.TestCase):
    async def test_hosts_file_name_and_literals(self) -> None:
        resolver = ReactorResolver(reactor)
        found = await resolver.resolve("localhost")
        self.assertIn("127.0.0.1", found.ipv4)
        self.assertEqual(await resolver.resolve("[::1]"), HostAddresses(ipv6=("::1",)))
        self.assertEqual(await resolver.resolve("127.0.0.1"), HostAddresses(ipv4=("127.0.0.1",)))
