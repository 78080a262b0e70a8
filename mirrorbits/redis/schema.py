"""The one place that knows Redis key names and pub/sub channels (schema version 2).

Go and Python nodes share one database, so every name here is fixed by the Go original.  Nothing else in the package builds a key by concatenation.
Value encodings live in :mod:`mirrorbits.gocompat` and :mod:`mirrorbits.model`.
"""

from __future__ import annotations

DB_VERSION = 2
DB_VERSION_KEY = "MIRRORBITS_DB_VERSION"

MIRRORS = "MIRRORS"
LAST_MID = "LAST_MID"
FILES = "FILES"
FILES_TMP = "FILES_TMP"
STATS_TOTAL = "STATS_TOTAL"
SOURCE_REPO_SYNC = "SOURCE_REPO_SYNC"

# Pub/sub channels: global to the Redis server, not scoped to a DB index.
CHANNEL_CLUSTER = "_mirrorbits_cluster"
CHANNEL_FILE_UPDATE = "_mirrorbits_file_update"
CHANNEL_MIRROR_UPDATE = "_mirrorbits_mirror_update"
CHANNEL_MIRROR_FILE_UPDATE = "_mirrorbits_mirror_file_update"
#: Never sent to Redis: raised locally after the subscriber re-subscribed.
CHANNEL_PUBSUB_RECONNECTED = "_mirrorbits_pubsub_reconnected"
CHANNELS = (CHANNEL_CLUSTER, CHANNEL_FILE_UPDATE, CHANNEL_MIRROR_UPDATE, CHANNEL_MIRROR_FILE_UPDATE)

#: Fields read by the HTTP cache, in this order: ``HMGET FILE_<path> size modTime sha1 sha256 md5``.
FILE_FIELDS = ("size", "modTime", "sha1", "sha256", "md5")


def file_key(path: str) -> str:
    """``FILE_<path>``: the local file's size, modTime and digests."""
    return "FILE_" + path


def file_pieces_key(path: str) -> str:
    """``FILEPIECES_<path>`` (not a Go key; Go nodes never read it): the piece hashes of the local
    file, fields ``size`` and ``modTime`` (as in ``FILE_<path>`` when they were computed),
    ``length`` (bytes per piece), ``sha1`` and ``sha256`` (the pieces' lowercase hex digests, one
    after the other)."""
    return "FILEPIECES_" + path


def file_mirrors_key(path: str) -> str:
    """``FILEMIRRORS_<path>``: ids of the mirrors that carry ``path``."""
    return "FILEMIRRORS_" + path


def mirror_key(mirror_id: int | str) -> str:
    return f"MIRROR_{mirror_id}"


#: Values of a per-family state field (see :func:`family_fields`).
FAMILY_UP = "1"
FAMILY_DOWN = "0"
FAMILY_NO_ADDRESS = "none"


def family_fields(proto: str, family: str) -> tuple[str, str, str]:
    """The fields of ``MIRROR_<id>`` holding the health of one protocol (``http``/``https``) over
    one address family (``IPv4``/``IPv6``), written only with ``SelectByIPFamily`` on:
    ``<proto>Up<family>`` (:data:`FAMILY_UP`, :data:`FAMILY_DOWN` or :data:`FAMILY_NO_ADDRESS`),
    ``<proto>DownReason<family>`` and ``<proto>Checked<family>`` (Unix seconds of the last check).

    Fields of the mirror's own hash because Go nodes ignore unknown fields when they read it, Go's
    ``add``/``edit`` (an ``HMSET`` of the configuration fields) leave them alone, and ``remove``
    (a ``DEL`` of the hash) takes them away with the mirror; and the redirector's view reloads them
    with the mirror on the same MIRROR_UPDATE message."""
    return f"{proto}Up{family}", f"{proto}DownReason{family}", f"{proto}Checked{family}"


def mirror_files_key(mirror_id: int | str) -> str:
    return f"MIRRORFILES_{mirror_id}"


def mirror_files_tmp_key(mirror_id: int | str) -> str:
    return f"MIRRORFILESTMP_{mirror_id}"


def mirror_scan_digest_key(mirror_id: int | str) -> str:
    """``MIRRORSCANDIGEST_<id>``: the proof that the mirror's index matches its last listing
    (``scan.unchanged``; not a Go key, Go never reads it)."""
    return f"MIRRORSCANDIGEST_{mirror_id}"


def handled_files_key(mirror_id: int | str) -> str:
    return f"HANDLEDFILES_{mirror_id}"


def file_info_key(mirror_id: int | str, path: str) -> str:
    """``FILEINFO_<id>_<path>``: size and modTime of ``path`` as seen on a mirror."""
    return f"FILEINFO_{mirror_id}_{path}"


def mirror_logs_key(mirror_id: int | str) -> str:
    return f"MIRRORLOGS_{mirror_id}"


def scanning_key(mirror_id: int | str) -> str:
    """Cluster lock held while a mirror is being scanned."""
    return f"SCANNING_{mirror_id}"


def lock_key(name: str) -> str:
    """Generic lock (only ``LOCK_upgrade`` is used)."""
    if not name:
        raise ValueError("lock name cannot be empty")
    return "LOCK_" + name


def downloaded_key(digest_hex: str, path: str) -> str:
    """Range-request de-duplication marker (``DOWNLOADED_<sha256(ip/ua)>_<path>``)."""
    return f"DOWNLOADED_{digest_hex}_{path}"


def _date_suffix(year: int | None, month: int | None, day: int | None) -> str:
    if year is None:
        return ""
    if month is None:
        return f"_{year:04d}"
    if day is None:
        return f"_{year:04d}_{month:02d}"
    return f"_{year:04d}_{month:02d}_{day:02d}"


def stats_file_key(year: int | None = None, month: int | None = None, day: int | None = None) -> str:
    """``STATS_FILE[_YYYY[_MM[_DD]]]``: hash path -> downloads."""
    return "STATS_FILE" + _date_suffix(year, month, day)


def stats_mirror_key(year: int | None = None, month: int | None = None, day: int | None = None) -> str:
    """``STATS_MIRROR[_YYYY[_MM[_DD]]]``: hash mirror id -> redirects."""
    return "STATS_MIRROR" + _date_suffix(year, month, day)


def stats_mirror_bytes_key(year: int | None = None, month: int | None = None,
                           day: int | None = None) -> str:
    """``STATS_MIRROR_BYTES[_YYYY[_MM[_DD]]]``: hash mirror id -> bytes."""
    return "STATS_MIRROR_BYTES" + _date_suffix(year, month, day)


def cluster_hello(redis_db: int, node_id: str) -> str:
    """The 1 s cluster announce: ``HELLO<db> <node>``."""
    return f"HELLO{redis_db} {node_id}"


# Temporary keys of the upgraders and the legacy v0 layout.
def upgrade_tmp_key(version: int, key: str) -> str:
    return f"V{version}_{key}"


def v0_mirror_key(name: str) -> str:
    return f"MIRROR_{name}"


def v0_mirror_files_key(name: str) -> str:
    return f"MIRROR_{name}_FILES"


def v0_file_info_key(name: str, path: str) -> str:
    return f"FILEINFO_{name}_{path}"


def v0_handled_files_key(name: str) -> str:
    return f"HANDLEDFILES_{name}"
