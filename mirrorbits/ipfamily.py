"""Address families of clients and mirrors (``SelectByIPFamily``).

Why: a mirror reachable only over IPv4 is useless to an IPv6-only client, and a mirror whose AAAA
record points at a dead address breaks dual-stack clients; the Go original checks one address per
mirror and ignores the client's family.  With the key on, the monitor probes each family of each
protocol and stores the result in the mirror's hash (:func:`mirrorbits.redis.schema.family_fields`);
selection reads it back through :func:`read_family_health` and excludes the mirrors a client cannot
reach over its own family.

Pure values and parsers, no I/O: the monitor, the view, selection, the pages and the admin
commands all read the same fields the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

from mirrorbits.model import PROTO_HTTP, PROTO_HTTPS
from mirrorbits.redis import schema

__all__ = [
    "FAMILIES",
    "PROTOCOLS",
    "Family",
    "FamilyHealth",
    "FamilyStates",
    "address_family",
    "client_family",
    "family_cells",
    "family_states",
    "health_cells",
    "health_fields",
    "read_family_health",
    "requested_family",
    "unreachable_reason",
]


class Family(IntEnum):
    """A client's address family as selection uses it; ``ANY`` is Go's choice (feature off, or no
    mirror reachable over the client's family)."""

    ANY = 0
    IPV4 = 1
    IPV6 = 2

    @property
    def label(self) -> str:
        """``IPv4`` / ``IPv6`` (``any`` for ANY): the spelling of the field names and the texts."""
        return {Family.IPV4: "IPv4", Family.IPV6: "IPv6"}.get(self, "any")


FAMILIES = (Family.IPV4, Family.IPV6)
#: The protocols checked per family, with their field-name spelling.
PROTOCOLS = ((PROTO_HTTP, "http"), (PROTO_HTTPS, "https"))


def unreachable_reason(family: Family) -> str:
    """The exclusion reason of a mirror that does not answer over ``family`` (Go's style)."""
    return f"Not reachable over {family.label}"


@lru_cache(maxsize=16384)
def address_family(ip: str) -> Family:
    """The family of a client address; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is IPv4,
    and text that is not an address (a unix socket peer, garbage in X-Forwarded-For) is ANY.

    Memoised (a pure function of the text): parsing an address costs ~3.5 us, about 4% of a
    redirect, and clients repeat."""
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # an IPv6 zone
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return Family.ANY
    if isinstance(addr, ipaddress.IPv6Address):
        return Family.IPV4 if addr.ipv4_mapped is not None else Family.IPV6
    return Family.IPV4


def requested_family(query: Mapping[str, list[str]]) -> Family | None:
    """``?ipv4`` / ``?ipv6`` (any case, any value): the family a dual-stack client or a tester
    forces; the first of them in the query wins."""
    for key in query:
        lower = key.lower()
        if lower == "ipv4":
            return Family.IPV4
        if lower == "ipv6":
            return Family.IPV6
    return None


def client_family(ip: str, query: Mapping[str, list[str]]) -> Family:
    """The family selection uses for a request: the forced one, else the address's."""
    forced = requested_family(query) if query else None
    return forced if forced is not None else address_family(ip)


@dataclass(frozen=True, slots=True)
class FamilyHealth:
    """The last probe of one protocol of a mirror over one family.  ``state`` is
    :data:`~mirrorbits.redis.schema.FAMILY_UP`, ``FAMILY_DOWN`` or ``FAMILY_NO_ADDRESS`` (the host
    has no address of that family: "no IPv6", not down).  ``checked`` (Unix seconds) is left out
    of comparisons: a new check that finds the same state is not a change."""

    state: str
    reason: str = ""
    checked: int | None = field(default=None, compare=False)

    @property
    def reachable(self) -> bool:
        return self.state == schema.FAMILY_UP

    def describe(self) -> str:
        """``up``, ``down: <reason>`` or ``no address``."""
        if self.state == schema.FAMILY_UP:
            return "up"
        if self.state == schema.FAMILY_NO_ADDRESS:
            return "no address"
        return f"down: {self.reason}" if self.reason else "down"


#: (protocol, family) -> the last probe; a pair never probed is absent.
FamilyStates = dict[tuple[int, Family], FamilyHealth]


def health_fields(proto: int, family: Family) -> tuple[str, str, str]:
    """The (state, reason, last check) fields of one protocol over one family."""
    return schema.family_fields("https" if proto == PROTO_HTTPS else "http", family.label)


def _text(v: str | bytes) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v


def read_family_health(h: Mapping[str, str] | Mapping[bytes, bytes] | Mapping[str | bytes, str | bytes]
                       ) -> FamilyStates:
    """The per-family states stored in an ``HGETALL MIRROR_<id>`` reply (empty when the mirror was
    never probed per family).  An unknown state value is ignored, as if never probed."""
    texts = {_text(k): _text(v) for k, v in h.items()}
    out: FamilyStates = {}
    for proto, _ in PROTOCOLS:
        for family in FAMILIES:
            state_f, reason_f, checked_f = health_fields(proto, family)
            state = texts.get(state_f)
            if state not in (schema.FAMILY_UP, schema.FAMILY_DOWN, schema.FAMILY_NO_ADDRESS):
                continue
            try:
                checked: int | None = int(texts.get(checked_f, ""))
            except ValueError:
                checked = None
            out[(proto, family)] = FamilyHealth(state, texts.get(reason_f, ""), checked)
    return out


#: The words of the admin commands and the pages for the stored states.
_WORDS = {schema.FAMILY_UP: "up", schema.FAMILY_DOWN: "down", schema.FAMILY_NO_ADDRESS: "none"}


def family_states(h: Mapping[str, str]) -> list[tuple[str, str, str, str, int]]:
    """The stored states of a mirror hash as (``HTTP``/``HTTPS``, ``IPv4``/``IPv6``, ``up``/``down``/
    ``none``, reason, last check or 0), for the admin commands and the pages."""
    return [("HTTPS" if proto == PROTO_HTTPS else "HTTP", family.label, _WORDS[h.state], h.reason,
             h.checked or 0) for (proto, family), h in read_family_health(h).items()]


def health_cells(states: FamilyStates) -> tuple[str, str]:
    """:func:`family_cells` of parsed states (a selection candidate's)."""
    return family_cells((family.label, _WORDS[h.state]) for (_, family), h in states.items())


def family_cells(states: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """A mirror's (IPv4, IPv6) cells of ``list -families`` and the stats page, from its
    (family, ``up``/``down``/``none``) states: ``up`` when a protocol answers over the family,
    ``none`` when the host has no such address, ``down`` otherwise, ``-`` when never checked."""
    seen = list(states)

    def cell(label: str) -> str:
        mine = [state for family, state in seen if family == label]
        if not mine:
            return "-"
        if "up" in mine:
            return "up"
        return "none" if all(s == "none" for s in mine) else "down"

    return cell(Family.IPV4.label), cell(Family.IPV6.label)
