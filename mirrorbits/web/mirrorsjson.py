"""``?mirrors``: a JSON list of every mirror with its state (upstream request #47).

URL: any path with the ``mirrors`` query parameter, e.g. ``GET /?mirrors`` (``/?mirrors&pretty``
for indented output).  A query parameter, like ``?mirrorstats``, cannot clash with a file of the
repository, whatever its name.  It is dispatched after the Go types (mirrorlist, stats,
mirrorstats, checksums), so ``?mirrors&mirrorstats`` is still the stats page.  A Go node answers
the same URL as a download of ``/``.

Body: a JSON array sorted by mirror ID.  Each object has the Go JSON field names and encodings of
the mirror record (as in the JSON renderer's answer) minus the per-request fields (Distance, ComputedScore,
AbsoluteURL, ExcludeReason) and minus the admin contact (AdminName, AdminEmail: this list is
public and complete), plus ``HttpUp``, ``HttpsUp``, ``TZOffset`` (ms) and ``State``: ``up``,
``down``, ``degraded`` (the two protocols disagree on a scheme-less URL), ``disabled``, or
``unknown`` when the ``MIRROR_<id>`` hash cannot be read (then only ``ID``, ``Name`` and ``State``
are present).  A mirror checked per address family (``SelectByIPFamily``) also has ``IPFamilies``:
one object per protocol and family with ``Protocol`` (``HTTP``/``HTTPS``), ``Family``
(``IPv4``/``IPv6``), ``State`` (``up``, ``down``, ``none``: no address of that family), ``Reason``
and ``Checked``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from twisted.web.server import Request

from mirrorbits.gocompat import ZERO_RFC3339, Float32, format_rfc3339nano, go_json_dumps
from mirrorbits.ipfamily import family_states
from mirrorbits.model import Mirror
from mirrorbits.redis import schema
from mirrorbits.redis.replies import hash_dict
from mirrorbits.web.render import plain_error

if TYPE_CHECKING:
    from mirrorbits.redis.connection import RedisClient

__all__ = ["PARAM", "fetch_mirror_hashes", "fetch_mirrors", "mirror_entry", "mirror_state", "render_mirrors_json"]

log = Logger(namespace="mirrorbits.mirrorsjson")

#: The query parameter that selects this answer.
PARAM = "mirrors"


def mirror_state(m: Mirror) -> str:
    """``disabled``, ``up``, ``down`` or ``degraded``: the marker rule of the Go mirrorstats page."""
    if not m.enabled:
        return "disabled"
    if m.http_up == m.https_up:
        return "up" if m.http_up else "down"
    url = m.http_url.lower()
    if url.startswith("http://"):
        return "up" if m.http_up else "down"
    if url.startswith("https://"):
        return "up" if m.https_up else "down"
    return "degraded"


async def fetch_mirrors(redis: RedisClient) -> list[tuple[int, str, Mirror | None]]:
    """Every mirror of ``MIRRORS`` as (id, name, record or None when it cannot be loaded), by id.

    Raises when ``HGETALL MIRRORS`` fails.
    """
    return [(i, name, record) for i, name, record, _ in await fetch_mirror_hashes(redis)]


async def fetch_mirror_hashes(redis: RedisClient
                              ) -> list[tuple[int, str, Mirror | None, dict[str, str]]]:
    """:func:`fetch_mirrors` with each mirror's hash as read (empty when it could not be)."""
    names = await redis.hgetall(schema.MIRRORS)
    ids: list[tuple[int, str]] = []
    for k, name in names.items():
        try:
            ids.append((int(k), name))
        except ValueError:
            log.warn("MIRRORS: ignoring non-numeric id {k!r}", k=k)
    ids.sort()
    replies = await redis.pipeline([("HGETALL", schema.mirror_key(i)) for i, _ in ids]) if ids else []
    out: list[tuple[int, str, Mirror | None, dict[str, str]]] = []
    for (i, name), reply in zip(ids, replies, strict=False):
        record: Mirror | None = None
        fields: dict[str, str] = {}
        if not isinstance(reply, Exception):
            try:
                fields = hash_dict(reply)
                record = Mirror.from_redis(fields)
            except ValueError as e:
                log.debug("mirror {id}: {err}", id=i, err=e)
        out.append((i, name, record, fields))
    return out


def _time(secs: int | None) -> str:
    return ZERO_RFC3339 if secs is None else format_rfc3339nano(secs * 1_000_000_000, "local")


def mirror_entry(mirror_id: int, name: str, m: Mirror | None,
                 fields: dict[str, str] | None = None) -> dict[str, object]:
    """One element of the list, keys in a fixed order (``fields``: the hash, for the per-family
    states)."""
    if m is None:
        return {"ID": mirror_id, "Name": name, "State": "unknown"}
    entry: dict[str, object] = {
        "ID": m.id, "Name": m.name, "HttpURL": m.http_url, "RsyncURL": m.rsync_url,
        "FtpURL": m.ftp_url, "SponsorName": m.sponsor_name, "SponsorURL": m.sponsor_url,
        "SponsorLogoURL": m.sponsor_logo_url, "CustomData": m.custom_data,
        "ContinentOnly": m.continent_only, "CountryOnly": m.country_only, "ASOnly": m.as_only,
        "Score": m.score, "Latitude": Float32(m.latitude), "Longitude": Float32(m.longitude),
        "ContinentCode": m.continent_code, "CountryCodes": m.country_codes,
        "ExcludedCountryCodes": m.excluded_country_codes, "Asnum": m.asnum, "Comment": m.comment,
        "Enabled": m.enabled, "HttpUp": m.http_up, "HttpsUp": m.https_up,
        "HttpDownReason": m.http_down_reason, "HttpsDownReason": m.https_down_reason,
        "State": mirror_state(m), "StateSince": _time(m.state_since),
        "AllowRedirects": m.allow_redirects, "TZOffset": m.tz_offset,
        "LastSync": _time(m.last_sync), "LastSuccessfulSync": _time(m.last_successful_sync),
        "LastSuccessfulSyncProtocol": m.last_successful_sync_protocol,
        "LastSuccessfulSyncPrecision": m.last_successful_sync_precision,
        "LastModTime": _time(m.last_mod_time),
    }
    states = family_states(fields) if fields else []
    if states:
        entry["IPFamilies"] = [{"Protocol": protocol, "Family": family, "State": state,
                                "Reason": reason, "Checked": _time(checked or None)}
                               for protocol, family, state, reason, checked in states]
    return entry


async def render_mirrors_json(request: Request, redis: RedisClient,
                              query: dict[str, list[str]]) -> bytes:
    """Answer ``?mirrors``: 200 JSON, or 500 ``Cannot fetch the list of mirrors``."""
    try:
        mirrors = await fetch_mirror_hashes(redis)
    except Exception as e:
        log.debug("?mirrors: {err}", err=e)
        return plain_error(request, 500, "Cannot fetch the list of mirrors")
    pretty = "pretty" in query
    body = go_json_dumps([mirror_entry(i, n, m, f) for i, n, m, f in mirrors], pretty=pretty)
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"private, no-cache")
    return body.encode("utf-8", "surrogateescape")
