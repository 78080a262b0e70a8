"""The pure parts of ``SelectByIPFamily``: client families, the stored states, the verdicts selection
derives from them (with the fallback to any family), the resolvers' literal answers, the log text."""

from __future__ import annotations

import random

from twisted.trial import unittest

from mirrorbits.config import config_from_mapping, parse_yaml
from mirrorbits.ipfamily import (
    Family,
    address_family,
    client_family,
    family_cells,
    read_family_health,
    requested_family,
)
from mirrorbits.model import Mirror, render_mirror_log
from mirrorbits.monitor.resolve import HostAddresses, StaticResolver, literal_addresses
from mirrorbits.selection import Candidate, ClientLocation, MirrorFile, Secure, plan_file, select_mirrors

NS = 1_700_000_000 * 10**9


def cand(mid: int, url: str, **fields: str) -> Candidate:
    h = {"ID": str(mid), "name": f"m{mid}", "http": url, "enabled": "1", "httpUp": "1", "httpsUp": "1"}
    h.update(fields)
    return Candidate(Mirror.from_redis(h), families=read_family_health(h))


class ClientFamily(unittest.SynchronousTestCase):
    def test_address_family(self) -> None:
        self.assertEqual(address_family("89.160.20.115"), Family.IPV4)
        self.assertEqual(address_family("2001:218::5"), Family.IPV6)
        self.assertEqual(address_family("[2001:218::5]"), Family.IPV6)
        self.assertEqual(address_family("::ffff:89.160.20.115"), Family.IPV4)
        self.assertEqual(address_family("fe80::1%eth0"), Family.IPV6)
        self.assertEqual(address_family("unknown"), Family.ANY)
        self.assertEqual(address_family(""), Family.ANY)

    def test_forced_family_any_case(self) -> None:
        self.assertEqual(requested_family({"IPv6": [""]}), Family.IPV6)
        self.assertEqual(requested_family({"ipv4": ["1"], "ipv6": [""]}), Family.IPV4)
        self.assertIsNone(requested_family({"mirrorlist": [""]}))
        self.assertEqual(client_family("89.160.20.115", {"IPV6": [""]}), Family.IPV6)
        self.assertEqual(client_family("2001:218::5", {}), Family.IPV6)


class States(unittest.SynchronousTestCase):
    def test_read_family_health(self) -> None:
        states = read_family_health({"httpUpIPv4": "1", "httpUpIPv6": "0", "httpDownReasonIPv6": "Unreachable",
                                     "httpCheckedIPv6": "17", "httpsUpIPv6": "none", "httpsUpIPv4": "bogus"})
        self.assertEqual(sorted((p, f.label, h.state, h.reason, h.checked) for (p, f), h in states.items()),
                         [(1, "IPv4", "1", "", None), (1, "IPv6", "0", "Unreachable", 17),
                          (2, "IPv6", "none", "", None)])
        self.assertEqual(read_family_health({"httpUp": "1"}), {})

    def test_cells(self) -> None:
        self.assertEqual(family_cells([]), ("-", "-"))
        self.assertEqual(family_cells([("IPv4", "down"), ("IPv4", "up"), ("IPv6", "none")]), ("up", "none"))
        self.assertEqual(family_cells([("IPv6", "none"), ("IPv6", "down")]), ("-", "down"))

    def test_config_key(self) -> None:
        self.assertFalse(config_from_mapping(parse_yaml("Repository: /srv\n", "t")).SelectByIPFamily)
        self.assertTrue(config_from_mapping(parse_yaml("Repository: /srv\nSelectByIPFamily: true\n", "t")).SelectByIPFamily)


class Verdicts(unittest.SynchronousTestCase):
    def select(self, cands: list[Candidate], family: Family, secure: Secure = Secure.UNDEFINED) -> tuple[
            list[str], dict[str, str], Family]:
        pairs = [(c, MirrorFile(10, NS)) for c in cands]
        sel = select_mirrors("/f", 10, NS, pairs, ClientLocation(), secure=secure, family=family,
                             for_mirrorlist=True, rng=random.Random(1))
        return (sorted(ch.candidate.name for ch in sel.selected),
                {ex.candidate.name: ex.reason for ex in sel.excluded}, sel.family_fallback)

    def test_exclusion_by_family(self) -> None:
        v4 = cand(1, "http://a/", httpUpIPv4="1", httpUpIPv6="none")
        v6 = cand(2, "https://b/", httpsUpIPv4="0", httpsDownReasonIPv4="Unreachable", httpsUpIPv6="1")
        never = cand(3, "c/")  # never probed per family: reachable
        down = cand(4, "http://d/", httpUp="0", httpDownReason="Got status code 500", httpUpIPv6="0")
        both = cand(5, "e/", httpUpIPv6="0", httpsUpIPv6="1")
        cands = [v4, v6, never, down, both]
        self.assertEqual(self.select(cands, Family.IPV6),
                         (["m2", "m3", "m5"], {"m1": "Not reachable over IPv6",
                                               "m4": "Got status code 500 / Not HTTPS"}, Family.ANY))
        self.assertEqual(self.select(cands, Family.IPV4),
                         (["m1", "m3", "m5"], {"m2": "Not reachable over IPv4",
                                               "m4": "Got status code 500 / Not HTTPS"}, Family.ANY))
        # Without HTTPS, the scheme-less mirror is only reachable over IPv6 by HTTPS.
        self.assertEqual(self.select(cands, Family.IPV6, Secure.WITHOUT_TLS)[1]["m5"],
                         "Not reachable over IPv6")
        # ANY: Go's choice, whatever is stored.
        self.assertEqual(self.select(cands, Family.ANY)[0], ["m1", "m2", "m3", "m5"])

    def test_no_mirror_over_the_family_falls_back_to_any(self) -> None:
        v4 = cand(1, "http://a/", httpUpIPv4="1", httpUpIPv6="none")
        self.assertEqual(self.select([v4], Family.IPV6), (["m1"], {}, Family.IPV6))
        pairs = [(v4, MirrorFile(10, NS))]
        plan = plan_file("/f", 10, NS, pairs, family=Family.IPV6)
        self.assertEqual((list(plan.eligible), plan.family_fallback), ([v4], Family.IPV6))
        self.assertEqual(plan_file("/f", 10, NS, pairs, family=Family.IPV4).family_fallback, Family.ANY)

    def test_disabled_stays_disabled(self) -> None:
        off = cand(1, "http://a/", enabled="0", httpUpIPv6="1")
        self.assertEqual(off.verdicts, (("", "Disabled"),) * 9)


class Resolvers(unittest.SynchronousTestCase):
    def test_literals_answer_themselves(self) -> None:
        self.assertEqual(literal_addresses("[::1]"), HostAddresses(ipv6=("::1",)))
        self.assertEqual(literal_addresses("127.0.0.1"), HostAddresses(ipv4=("127.0.0.1",)))
        self.assertEqual(literal_addresses("::ffff:127.0.0.1"), HostAddresses(ipv4=("127.0.0.1",)))
        self.assertIsNone(literal_addresses("mirror.example"))

    def test_static_resolver(self) -> None:
        r = StaticResolver({"Both.test": ["127.0.0.1", "::1"]})
        self.assertEqual(self.successResultOf(r.resolve("both.TEST")), HostAddresses(("127.0.0.1",), ("::1",)))
        self.assertEqual(self.successResultOf(r.resolve("other.test")), HostAddresses())


class LogText(unittest.SynchronousTestCase):
    def test_family_entries(self) -> None:
        base = '{"Type":6,"MirrorID":1,"Timestamp":"2026-12-06T00:00:00Z","Proto":1,'
        self.assertEqual(render_mirror_log(base + '"Up":false,"Reason":"Unreachable","Family":"IPv6"}'),
                         "2026-12-06 00:00:00 UTC: HTTP mirror over IPv6 is down: Unreachable")
        self.assertEqual(render_mirror_log(base + '"Up":true,"Reason":"","Family":"IPv4"}'),
                         "2026-12-06 00:00:00 UTC: HTTP mirror over IPv4 is up")
        self.assertEqual(render_mirror_log(base + '"Up":false,"Reason":"No IPv6 address","Family":"IPv6",'
                                           '"NoAddress":true}'),
                         "2026-12-06 00:00:00 UTC: HTTP mirror has no IPv6 address")
        self.assertEqual(render_mirror_log(base + '"Up":true,"Reason":""}'),
                         "2026-12-06 00:00:00 UTC: HTTP mirror is up")


class AdminChannel(unittest.SynchronousTestCase):
    def test_family_states_cross_the_admin_channel(self) -> None:
        import json

        from mirrorbits.admin import rpc
        from mirrorbits.admin.interface import FamilyState

        states = [FamilyState(1, "HTTP", "IPv6", "down", "Unreachable", 17), FamilyState(1, "HTTPS", "IPv4", "up")]
        self.assertEqual(rpc.decode_value(json.loads(json.dumps(rpc.encode_value(states)))), states)
