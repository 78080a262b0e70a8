"""GeoIP lookups for the redirector and the admin commands.

Two MaxMind databases are read from ``GeoipDatabasePath``: ``GeoLite2-City.mmdb`` and
``GeoLite2-ASN.mmdb``, each replaced by ``<name>.updated`` when that file exists. They are opened with
the maxminddb C extension in mmap mode, so opening is cheap and lookups never touch Python-level I/O.

Hot path: :meth:`GeoIP.lookup` answers from a bounded LRU keyed by the IP *string*; the cache is
replaced (not mutated) whenever a database is swapped, so a reload is seen by the very next lookup.

Reload: :meth:`GeoIP.reload` (SIGHUP, admin ``reload``) and :meth:`GeoIP.check_for_update` (called
every ~30 s by :class:`GeoIPService`) re-open a database whose file changed. Go only re-reads on
SIGHUP and keeps the old data until then (upstream issue #93); and Go replaces a database only when
its build epoch differs, which leaves it reading a file modified in place. We swap whenever the file
identity (path, device, inode, size, mtime) changed, and keep the old reader when the new file
fails to open. Replace files atomically (write + rename, as ``geoipupdate`` does): an mmap'ed file
that is truncated in place can crash any mmap reader, Go's included.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

import maxminddb
from maxminddb.errors import InvalidDatabaseError
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mirrorbits.gocompat import f32

__all__ = [
    "ASN_DB",
    "CITY_DB",
    "EMPTY_RECORD",
    "GeoIP",
    "GeoIPLoadError",
    "GeoIPService",
    "GeoRecord",
    "HOW_TO_GET",
    "UPDATED_EXT",
    "missing_databases_text",
    "parse_ip",
]

CITY_DB = "GeoLite2-City.mmdb"
ASN_DB = "GeoLite2-ASN.mmdb"
UPDATED_EXT = ".updated"
DEFAULT_CACHE_SIZE = 16384
DEFAULT_CHECK_INTERVAL = 30.0
_EXPECTED_TYPES = {CITY_DB: ("City", "Enterprise"), ASN_DB: ("ASN", "ISP")}

_intern = sys.intern


_f32 = f32


@dataclass(frozen=True, slots=True)
class GeoRecord:
    """Go ``GeoIPRecord``: what the City and ASN databases say about one client address."""

    country_code: str = ""
    continent_code: str = ""
    city: str = ""
    country: str = ""
    latitude: float = 0.0  # float32 value
    longitude: float = 0.0  # float32 value
    as_name: str = ""
    as_num: int = 0

    @property
    def valid(self) -> bool:
        """Go ``IsValid``: a country code is known (a continent alone is not enough)."""
        return bool(self.country_code)

    def go_fields(self) -> dict[str, str | float | int]:
        """The ``ClientInfo`` JSON object's keys and values, in Go's order."""
        return {
            "CountryCode": self.country_code,
            "ContinentCode": self.continent_code,
            "City": self.city,
            "Country": self.country,
            "Latitude": self.latitude,
            "Longitude": self.longitude,
            "ASName": self.as_name,
            "ASNum": self.as_num,
        }


EMPTY_RECORD = GeoRecord()


#: Where a newcomer gets the two files; named in every "GeoIP data missing" message.
HOW_TO_GET = (
    "Get them with MaxMind's geoipupdate and a free GeoLite2 account "
    "(https://www.maxmind.com/en/geolite2/signup), or use a compatible free database that needs no "
    "account, such as DB-IP Lite (https://db-ip.com/db/lite.php: the City and ASN files in MMDB "
    "format), saved under those two names."
)


def missing_databases_text(directory: str, missing: Sequence[str], errors: Sequence[str] = ()) -> str:
    """What is missing, where it was looked for, under which config key, and how to get it.

    A newcomer who has never installed GeoIP data must be able to fix the problem from this text
    alone, whether it is read in the daemon log or in a ``mirrorbits add``/``geoupdate`` error.
    """
    where = directory or "."
    if not os.path.isabs(where):
        where = f"{where} (that is {os.path.abspath(where)})"
    text = (f"GeoIP data missing: {' and '.join(missing)} not loaded from the directory {where} "
            f"(configuration key GeoipDatabasePath). The daemon expects {CITY_DB} and {ASN_DB} there. "
            + HOW_TO_GET)
    if errors:
        text += " Cause: " + "; ".join(errors) + "."
    return text


class GeoIPLoadError(Exception):
    """Raised by :meth:`GeoIP.require_all` when a database is not loaded; the message says which,
    where it was looked for and how to get it."""

    def __init__(self, directory: str, missing: tuple[str, ...], errors: tuple[str, ...] = ()) -> None:
        super().__init__(missing_databases_text(directory, missing, errors))
        self.directory = directory
        self.missing = missing
        self.errors = errors


class CacheStats(NamedTuple):
    """``functools.lru_cache`` statistics of the lookup cache."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


class _BadData(Exception):
    """A database entry whose shape does not fit the Go struct it is decoded into."""


def parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go ``net.ParseIP``: an IPv4/IPv6 literal, else ``None`` (no zone, brackets or port).

    IPv4-mapped IPv6 (``::ffff:a.b.c.d``) comes back as IPv4, as Go's maxminddb reader looks it up.
    """
    if not ip or "%" in ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version == 6:
        mapped = addr.ipv4_mapped  # type: ignore[union-attr]
        if mapped is not None:
            return mapped
    return addr


def _str(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadData(f"expected a string, got {type(value).__name__}")
    return _intern(value)


def _map(value: object) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadData(f"expected a map, got {type(value).__name__}")
    return value


def _float(value: object) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, float):  # Go decodes only double/float into a float64 field
        raise _BadData(f"expected a float, got {type(value).__name__}")
    return _f32(value)


def _uint(value: object) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _BadData(f"expected an unsigned integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class _Database:
    """One opened database file and the identity of the file it was opened from."""

    path: str
    signature: tuple[int, int, int, int]
    reader: maxminddb.Reader
    build_epoch: int
    database_type: str


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _go_time(epoch: int) -> str:
    """Go ``time.Time.String()`` of ``time.Unix(epoch, 0)`` in local time (for the log line)."""
    dt = datetime.fromtimestamp(epoch).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S %z ") + (dt.strftime("%Z") or dt.strftime("%z"))


class GeoIP:
    """The City + ASN databases of one directory, with a cached ``lookup``.

    Loading never raises: a database that cannot be opened is reported in :attr:`errors` and simply
    contributes nothing to lookups (degraded mode). The service decides what to do when
    both are missing (:meth:`startup_report`).
    """

    log = Logger()

    def __init__(self, directory: str, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._directory = directory
        self._cache_size = cache_size
        self._city: _Database | None = None
        self._asn: _Database | None = None
        # (path, signature) of the last file that failed to open, so a broken file is not
        # re-opened (and re-logged) on every periodic check.
        self._failed: dict[str, tuple[str, tuple[int, int, int, int] | None]] = {}
        self._errors: dict[str, str] = {}
        #: Incremented whenever a database is swapped: whoever keeps lookups of their own (the
        #: redirector's client locations) drops them when it changes.
        self.generation = 0
        self._cached: Callable[[str], GeoRecord] = self._new_cache()
        self._load(force_retry=True)

    # -- configuration -------------------------------------------------------------------------

    @property
    def directory(self) -> str:
        return self._directory

    def set_directory(self, directory: str) -> bool:
        """Point at another ``GeoipDatabasePath`` (config reload) and load from it."""
        if directory == self._directory:
            return False
        self._directory = directory
        self._failed.clear()
        return self.reload()

    def path_for(self, name: str) -> str:
        """File actually used for ``name``: ``<name>.updated`` when it exists (as in Go)."""
        base = os.path.join(self._directory, name) if self._directory else name
        updated = base + UPDATED_EXT
        try:
            os.stat(updated)
        except FileNotFoundError:
            return base
        except (OSError, ValueError):
            return updated  # Go: any Stat result other than "not exist" selects .updated
        return updated

    # -- state ---------------------------------------------------------------------------------

    @property
    def city_loaded(self) -> bool:
        return self._city is not None

    @property
    def asn_loaded(self) -> bool:
        return self._asn is not None

    @property
    def errors(self) -> tuple[str, ...]:
        """Latest open failure per database, City first (a loaded database has one when its
        replacement file failed to open and the old data is still served)."""
        return tuple(self._errors[n] for n in (CITY_DB, ASN_DB) if n in self._errors)

    @property
    def all_failed(self) -> bool:
        """Neither database is loaded (Go ``GeoIPError.IsFatal``)."""
        return self._city is None and self._asn is None

    def build_epochs(self) -> dict[str, int]:
        """Build epoch of each loaded database, by file name."""
        out = {}
        for name, db in ((CITY_DB, self._city), (ASN_DB, self._asn)):
            if db is not None:
                out[name] = db.build_epoch
        return out

    @property
    def missing(self) -> tuple[str, ...]:
        """File names of the databases not loaded, City first."""
        return tuple(name for name, db in ((CITY_DB, self._city), (ASN_DB, self._asn)) if db is None)

    @property
    def unusable(self) -> tuple[str, ...]:
        """File names of the databases not loaded, or whose file in the directory fails to open
        (an older copy may still be served), City first."""
        return tuple(name for name in (CITY_DB, ASN_DB) if name in self._errors or self._current(name) is None)

    def missing_text(self, names: Sequence[str] | None = None) -> str:
        """:func:`missing_databases_text` for this directory (``names``: :attr:`missing` by default)."""
        return missing_databases_text(self._directory, self.missing if names is None else names,
                                      self.errors)

    def require_all(self) -> None:
        """Raise :class:`GeoIPLoadError` unless both databases are loaded."""
        if self._city is None or self._asn is None:
            raise GeoIPLoadError(self._directory, self.missing, self.errors)

    def startup_report(self, has_fallbacks: bool) -> bool:
        """Log Go's startup messages; return False when the process must exit (no DB, no fallback)."""
        # The open errors were logged when the files were opened; the help repeats their causes.
        if self.missing:
            self.log.critical("{help}", help=self.missing_text())
        if self.all_failed:
            if not has_fallbacks:
                self.log.critical(
                    "Can't load the GeoIP databases, please set a valid path in the mirrorbits configuration"
                )
                return False
            # Go says "all requests will be served by the fallback mirrors", which is not what
            # happens (in Go or here): the mirrors are still chosen, at random, since no client has
            # a valid location. A newcomer reading that would think their mirrors unused.
            self.log.critical(
                "Can't load the GeoIP databases: clients and mirrors have no location, so mirrors are"
                " chosen at random (the fallbacks serve only what no mirror can)"
            )
        elif self._city is None or self._asn is None:
            self.log.critical(
                "One or more GeoIP database could not be loaded, service will run in degraded mode"
            )
        return True

    # -- loading -------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-open each database whose file changed; keep the old one on failure.

        Returns True when a database was swapped (and the lookup cache therefore dropped).  An
        operator who reloads after a configuration change learns at once what is still missing.
        """
        self.log.debug("Reloading the GeoIP databases from {directory!r}", directory=self._directory)
        changed = self._load(force_retry=True)
        if self.unusable:
            self.log.error("{help}", help=self.missing_text(self.unusable))
        return changed

    def check_for_update(self) -> bool:
        """Cheap periodic check (4 ``stat`` calls): reload what changed on disk since last time."""
        return self._load(force_retry=False)

    def _load(self, *, force_retry: bool) -> bool:
        changed = False
        for name in (CITY_DB, ASN_DB):
            if self._reload_one(name, force_retry=force_retry):
                changed = True
        if changed:
            self._cached = self._new_cache()
            self.generation += 1
        return changed

    def _current(self, name: str) -> _Database | None:
        return self._city if name == CITY_DB else self._asn

    def _reload_one(self, name: str, *, force_retry: bool) -> bool:
        path = self.path_for(name)
        try:
            sig: tuple[int, int, int, int] | None = _signature(os.stat(path))
        except (OSError, ValueError):
            sig = None
        current = self._current(name)
        if current is not None and current.path == path and current.signature == sig:
            self._errors.pop(name, None)
            return False
        if not force_retry and self._failed.get(name) == (path, sig):
            return False
        try:
            db = self._open(path)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old database
            message = _open_error(path, exc)
            self._failed[name] = (path, sig)
            self._errors[name] = message
            if current is not None:
                self.log.error(
                    "{error} (keeping the database loaded from {old})", error=message, old=current.path
                )
            else:
                self.log.error("{error}", error=message)
            return False
        self._failed.pop(name, None)
        self._errors.pop(name, None)
        if name == CITY_DB:
            self._city = db
        else:
            self._asn = db
        # Old readers are not closed explicitly: a lookup running in another thread may still hold
        # one; the C extension unmaps the file when the last reference goes.
        if not any(kind in db.database_type for kind in _EXPECTED_TYPES[name]):
            # Go reads it anyway (the fields it wants are then simply absent); so do we, loudly.
            self.log.warn(
                "{path} is a {dbtype} database, not a {expected} one",
                path=path,
                dbtype=db.database_type,
                expected=_EXPECTED_TYPES[name][0],
            )
        self.log.info("Loading {path} database (built on {built})", path=name, built=_go_time(db.build_epoch))
        return True

    @staticmethod
    def _open(path: str) -> _Database:
        # Stat first, then open: if the file is replaced in between, the signature is older than the
        # data, so the next check re-opens it (never the reverse).
        sig = _signature(os.stat(path))
        reader = maxminddb.open_database(path, maxminddb.MODE_MMAP_EXT)
        meta = reader.metadata()
        return _Database(path, sig, reader, int(meta.build_epoch), str(meta.database_type))

    # -- lookups -------------------------------------------------------------------------------

    def _new_cache(self) -> Callable[[str], GeoRecord]:
        return lru_cache(maxsize=self._cache_size)(self._lookup_uncached)

    def lookup(self, ip: str) -> GeoRecord:
        """GeoIP record for an IP string; :data:`EMPTY_RECORD` when it does not parse or on error."""
        return self._cached(ip)

    def _lookup_uncached(self, ip: str) -> GeoRecord:
        addr = parse_ip(ip)
        if addr is None:
            return EMPTY_RECORD
        city_db, asn_db = self._city, self._asn
        country_code = continent_code = city = country = as_name = ""
        latitude = longitude = 0.0
        as_num = 0
        try:
            if city_db is not None:
                rec = city_db.reader.get(addr)
                if rec is not None:
                    rec = _map(rec)
                    country_map = _map(rec.get("country"))
                    country_code = _str(country_map.get("iso_code"))
                    country = _str(_map(country_map.get("names")).get("en"))
                    continent_code = _str(_map(rec.get("continent")).get("code"))
                    city = _str(_map(_map(rec.get("city")).get("names")).get("en"))
                    location = _map(rec.get("location"))
                    latitude = _float(location.get("latitude"))
                    longitude = _float(location.get("longitude"))
            if asn_db is not None:
                rec = asn_db.reader.get(addr)
                if rec is not None:
                    rec = _map(rec)
                    as_num = _uint(rec.get("autonomous_system_number"))
                    as_name = _str(rec.get("autonomous_system_organization"))
        except (_BadData, InvalidDatabaseError, ValueError, TypeError, OverflowError) as exc:
            # Go: a lookup error in either database empties the whole record.
            self.log.debug("GeoIP lookup of {ip} failed: {error}", ip=ip, error=exc)
            return EMPTY_RECORD
        if not (country_code or continent_code or city or country or as_name or as_num) and (
            latitude == 0.0 and longitude == 0.0
        ):
            return EMPTY_RECORD
        return GeoRecord(country_code, continent_code, city, country, latitude, longitude, as_name, as_num)

    def cache_info(self) -> CacheStats:
        """Statistics of the current lookup cache (for tests and the manhole)."""
        return CacheStats(*self._cached.cache_info())  # type: ignore[attr-defined]


def _open_error(path: str, exc: Exception) -> str:
    """Go-like error text: ``open <path>: no such file or directory``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"open {path}: {exc.strerror[:1].lower()}{exc.strerror[1:]}"
    return f"{path}: {exc}"


class GeoIPService(Service):
    """Calls :meth:`GeoIP.check_for_update` every ``interval`` seconds while running.

    The checks are a few ``stat`` calls and, when a file changed, an mmap open: cheap enough for
    the reactor thread, and it keeps the reader swap single-threaded.
    """

    log = Logger()

    def __init__(
        self,
        geoip: GeoIP,
        interval: float = DEFAULT_CHECK_INTERVAL,
        clock: IReactorTime | None = None,
    ) -> None:
        """``clock`` is an ``IReactorTime`` provider (the global reactor when ``None``)."""
        self.geoip = geoip
        self.interval = interval
        self._clock = clock
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        loop = LoopingCall(self._check)
        if self._clock is not None:
            loop.clock = self._clock
        self._loop = loop
        d = loop.start(self.interval, now=False)
        d.addErrback(lambda f: self.log.failure("GeoIP update checks stopped", f))

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        super().stopService()

    def _check(self) -> None:
        try:
            self.geoip.check_for_update()
        except Exception:  # noqa: BLE001 - never let the loop die
            self.log.failure("GeoIP update check failed")
