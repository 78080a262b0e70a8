"""The configuration: the Go original's YAML keys, types, defaults and validation, as a frozen object.

A config is never changed in place: :func:`load_config` builds a new :class:`Config`, and
:class:`ConfigHolder` swaps it atomically on reload (keeping the old one when the new file is bad),
then tells the parts that care.  Keys keep their Go names (``ListenAddress``...) so that the Go
documentation, the sample config and the code read the same.

Differences from the Go original (also listed in the README):

* an unknown key is reported as a warning (Go ignores it silently);
* ``RedisAddress: embedded`` asks for a private redis-server started by the daemon, with its data under
  ``DataDir``; a config without ``RedisAddress`` keeps the Go meaning, ``127.0.0.1:6379``;
* a few keys of our own (``DataDir``, ``Workers``, ``ManholeListenAddress``,
  ``ManholeAuthorizedKeys``, ``CheckTLSCAFile``, ``StatsRetention``, ``MetricsListenAddress``,
  ``MetalinkMaxURLs``, ``Torrent``, ``SelectByIPFamily``, ``RedisLoadTimeout``), all optional, listed in
  :data:`EXTENSION_KEYS`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import yaml
from twisted.logger import Logger

log = Logger(namespace="mirrorbits.config")

DEFAULT_CONFIG_PATH = "/etc/mirrorbits.conf"
#: ``RedisAddress`` value that selects the embedded Redis.
EMBEDDED = "embedded"

_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSE = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_NULL = {"", "~", "null", "Null", "NULL"}
_INT_RE = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")


class ConfigError(Exception):
    """A configuration that cannot be used.  The message names the file, the key and the value."""


def default_templates_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def default_data_dir() -> str:
    """Where the embedded Redis keeps its data: ``$XDG_DATA_HOME/mirrorbits`` or ``~/.local/share``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mirrorbits")


@dataclass(frozen=True)
class Hashes:
    SHA1: bool = False
    SHA256: bool = True
    MD5: bool = False


@dataclass(frozen=True)
class OutdatedFilesRule:
    Prefix: str = ""
    Minutes: int = 0


@dataclass(frozen=True)
class Fallback:
    URL: str = ""
    CountryCode: str = ""
    ContinentCode: str = ""


@dataclass(frozen=True)
class TorrentConfig:
    """The ``Torrent`` block: BitTorrent files, magnets and info-hashes of the indexed files (off by
    default; turning it on makes the local scan compute piece hashes)."""

    Enabled: bool = False
    #: Bytes per piece, a power of two (16 KiB at least); 0 picks one per file by its size.
    PieceLength: int = 0
    #: Announce URLs: each item a URL (a tier of its own) or a list of URLs (one tier).
    Trackers: tuple[tuple[str, ...], ...] = ()
    #: DHT bootstrap nodes, ``host:port``.
    DHTNodes: tuple[str, ...] = ()
    #: Most mirrors listed as web seeds (``url-list``) or ``ws=`` of a magnet.
    MaxWebSeeds: int = 10


@dataclass(frozen=True)
class SentinelHost:
    Host: str = ""


@dataclass(frozen=True)
class StatsRetention:
    """How long the dated statistics keys are kept; 0 keeps them forever (the Go original's way).

    Yearly and all-time keys are never pruned, so totals stay exact whatever is set here."""

    #: Per-day keys (``STATS_*_YYYY_MM_DD``) older than this many days are deleted.
    DailyDays: int = 0
    #: Per-month keys (``STATS_*_YYYY_MM``) older than this many months are deleted.
    MonthlyMonths: int = 0
    #: Per-day per-file keys (``STATS_FILE_YYYY_MM_DD``, the big ones); 0 = as ``DailyDays``.
    FileDays: int = 0

    @property
    def file_days(self) -> int:
        """The window of the per-day per-file keys (``FileDays``, else ``DailyDays``)."""
        return self.FileDays or self.DailyDays

    @property
    def enabled(self) -> bool:
        return bool(self.DailyDays or self.MonthlyMonths or self.FileDays)


@dataclass(frozen=True)
class Config:
    """Every key of the Go original with its default."""

    Repository: str = ""
    Templates: str = field(default_factory=default_templates_path)
    LocalJSPath: str = ""
    OutputMode: str = "auto"
    ListenAddress: str = ":8080"
    Gzip: bool = False
    AllowHTTPToHTTPSRedirects: bool = True
    SameDownloadInterval: int = 600
    RedisAddress: str = "127.0.0.1:6379"
    RedisPassword: str = ""
    RedisDB: int = 0
    LogDir: str = ""
    TraceFileLocation: str = ""
    GeoipDatabasePath: str = "/usr/share/GeoIP/"
    ConcurrentSync: int = 5
    ScanInterval: int = 30
    CheckInterval: int = 1
    RepositoryScanInterval: int = 5
    MaxLinkHeaders: int = 10
    FixTimezoneOffsets: bool = False
    Hashes: Hashes = field(default_factory=Hashes)
    DisallowRedirects: bool = False
    WeightDistributionRange: float = 1.5
    DisableOnMissingFile: bool = False
    AllowOutdatedFiles: tuple[OutdatedFilesRule, ...] = ()
    Fallbacks: tuple[Fallback, ...] = ()
    RedisSentinelMasterName: str = ""
    RedisSentinels: tuple[SentinelHost, ...] = ()
    RPCListenAddress: str = "localhost:3390"
    RPCPassword: str = ""
    # -- our own keys (not in the Go original) --
    #: Data directory of the embedded Redis (``RedisAddress: embedded``).
    DataDir: str = field(default_factory=default_data_dir)
    #: Number of HTTP worker processes sharing the listening socket (1 = serve in the main process).
    Workers: int = 1
    #: SSH manhole endpoint (a Twisted endpoint string or ``host:port``); empty = no manhole.
    ManholeListenAddress: str = ""
    #: authorized_keys file of the manhole (keys only, no passwords).
    ManholeAuthorizedKeys: str = ""
    #: Extra CA certificates (PEM) that health checks and trace fetches trust besides the system roots.
    CheckTLSCAFile: str = ""
    #: How long the dated download statistics are kept (default: forever).
    StatsRetention: StatsRetention = field(default_factory=StatsRetention)
    #: Listen address of the Prometheus ``/metrics``, ``/healthz`` and ``/readyz`` endpoints (its own
    #: listener, never the redirector's); empty = nothing listens.  Bound at start and at an upgrade.
    MetricsListenAddress: str = ""
    #: Most mirror URLs a Metalink document lists (``X-Metalink-Limit`` may lower it per request).
    MetalinkMaxURLs: int = 10
    #: Torrents, magnets and info-hashes (see :class:`TorrentConfig`).
    Torrent: TorrentConfig = field(default_factory=TorrentConfig)
    #: Probe each mirror over IPv4 and IPv6 and send a client only to mirrors reachable over its
    #: address family (off: the Go behaviour, nothing per family is probed, stored or used).
    SelectByIPFamily: bool = False
    #: Seconds a request for a file not in the in-memory view waits for Redis (a dial included)
    #: before it is answered with the fallbacks.
    RedisLoadTimeout: float = 2.0
    # -- not keys: where the config came from, and what was odd about it --
    source: str = field(default="<defaults>", compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def embedded_redis(self) -> bool:
        return self.RedisAddress == EMBEDDED

    def replace(self, **changes: object) -> Config:
        """A copy with some keys changed (tests, and the reload path); an unknown key raises
        TypeError.  ``dataclasses.replace(config, ...)`` is the statically checked spelling."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


GO_KEYS = (
    "Repository", "Templates", "LocalJSPath", "OutputMode", "ListenAddress", "Gzip",
    "AllowHTTPToHTTPSRedirects", "SameDownloadInterval", "RedisAddress", "RedisPassword", "RedisDB",
    "LogDir", "TraceFileLocation", "GeoipDatabasePath", "ConcurrentSync", "ScanInterval",
    "CheckInterval", "RepositoryScanInterval", "MaxLinkHeaders", "FixTimezoneOffsets", "Hashes",
    "DisallowRedirects", "WeightDistributionRange", "DisableOnMissingFile", "AllowOutdatedFiles",
    "Fallbacks", "RedisSentinelMasterName", "RedisSentinels", "RPCListenAddress", "RPCPassword",
)
EXTENSION_KEYS = ("DataDir", "Workers", "ManholeListenAddress", "ManholeAuthorizedKeys", "CheckTLSCAFile",
                  "StatsRetention", "MetricsListenAddress", "MetalinkMaxURLs", "Torrent", "SelectByIPFamily",
                  "RedisLoadTimeout")


_R = TypeVar("_R")
#: A value read from the YAML document: a key's scalar, or a tuple of records.
_Value = (str | bool | int | float | Hashes | StatsRetention | TorrentConfig
          | tuple[OutdatedFilesRule | Fallback | SentinelHost, ...])


class _Reader:
    """Typed reading of raw YAML scalars (all strings, from ``yaml.BaseLoader``) the way yaml.v2 does."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def fail(self, key: str, value: object, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {why} (value {value!r})")

    def scalar(self, key: str, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, (dict, list)):
            raise self.fail(key, value, "expected a single value")
        return str(value)

    def string(self, key: str, value: object) -> str:
        s = self.scalar(key, value)
        return "" if s is None or s in _NULL else s

    def boolean(self, key: str, value: object) -> bool:
        s = self.scalar(key, value)
        if s is None or s in _NULL:
            return False
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise self.fail(key, s, "expected a boolean (true/false, On/Off, yes/no)")

    def integer(self, key: str, value: object) -> int:
        s = self.scalar(key, value)
        if s is None or s in _NULL:
            return 0
        text = s.strip()
        try:
            if _INT_RE.match(text):
                return int(text.replace("_", ""))
            if re.match(r"^[-+]?0x[0-9a-fA-F_]+$", text):
                return int(text.replace("_", ""), 16)
            if re.match(r"^[-+]?0o?[0-7_]+$", text):
                return int(text.replace("_", "").replace("0o", "0"), 8)
        except ValueError:
            pass
        raise self.fail(key, s, "expected an integer")

    def number(self, key: str, value: object) -> float:
        s = self.scalar(key, value)
        if s is None or s in _NULL:
            return 0.0
        try:
            return float(s.replace("_", ""))
        except ValueError:
            raise self.fail(key, s, "expected a number") from None

    def mapping(self, key: str, value: object) -> dict[str, object]:
        if value is None or value == "":
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, value, "expected a mapping")
        return value

    def sequence(self, key: str, value: object) -> list[object]:
        if value is None or value == "":
            return []
        if not isinstance(value, list):
            raise self.fail(key, value, "expected a list")
        return value

    def string_list(self, key: str, value: object) -> tuple[str, ...]:
        return tuple(self.string(f"{key}[{i}]", v) for i, v in enumerate(self.sequence(key, value)))

    def tiers(self, key: str, value: object) -> tuple[tuple[str, ...], ...]:
        """A list whose items are a URL (a tier of one) or a list of URLs (a tier)."""
        out = []
        for i, item in enumerate(self.sequence(key, value)):
            tier = self.string_list(f"{key}[{i}]", item) if isinstance(item, list) else (
                self.string(f"{key}[{i}]", item),)
            tier = tuple(u for u in tier if u)
            if tier:
                out.append(tier)
        return tuple(out)

    def record(self, key: str, value: object, cls: type[_R], types: dict[str, str]) -> _R:
        item = self.mapping(key, value)
        kwargs: dict[str, object] = {}
        for k, v in item.items():
            if k not in types:
                self.warnings.append(f"{self.source}: unknown key {key}.{k} ignored")
                continue
            kwargs[k] = getattr(self, types[k])(f"{key}.{k}", v)
        return cls(**kwargs)


_TYPES: dict[str, str] = {
    "Repository": "string", "Templates": "string", "LocalJSPath": "string", "OutputMode": "string",
    "ListenAddress": "string", "Gzip": "boolean", "AllowHTTPToHTTPSRedirects": "boolean",
    "SameDownloadInterval": "integer", "RedisAddress": "string", "RedisPassword": "string",
    "RedisDB": "integer", "LogDir": "string", "TraceFileLocation": "string",
    "GeoipDatabasePath": "string", "ConcurrentSync": "integer", "ScanInterval": "integer",
    "CheckInterval": "integer", "RepositoryScanInterval": "integer", "MaxLinkHeaders": "integer",
    "FixTimezoneOffsets": "boolean", "DisallowRedirects": "boolean", "WeightDistributionRange": "number",
    "DisableOnMissingFile": "boolean", "RedisSentinelMasterName": "string", "RPCListenAddress": "string",
    "RPCPassword": "string", "DataDir": "string", "Workers": "integer",
    "ManholeListenAddress": "string", "ManholeAuthorizedKeys": "string", "CheckTLSCAFile": "string",
    "MetricsListenAddress": "string",
    "MetalinkMaxURLs": "integer", "SelectByIPFamily": "boolean", "RedisLoadTimeout": "number",
}


def config_from_mapping(raw: object, source: str = "<config>", base_dir: str | None = None) -> Config:
    """Build and validate a :class:`Config` from parsed YAML (scalars as strings, BaseLoader style)."""
    reader = _Reader(source)
    if raw is None or raw == "":
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the configuration must be a YAML mapping of keys to values")
    values: dict[str, _Value] = {}
    for key, value in raw.items():
        if key in _TYPES:
            values[key] = getattr(reader, _TYPES[key])(key, value)
        elif key == "Hashes":
            values[key] = reader.record(key, value, Hashes,
                                        {"SHA1": "boolean", "SHA256": "boolean", "MD5": "boolean"})
            # Sub-keys not given keep their defaults (SHA256 stays on), as in the Go original.
        elif key == "StatsRetention":
            values[key] = reader.record(key, value, StatsRetention, {
                "DailyDays": "integer", "MonthlyMonths": "integer", "FileDays": "integer"})
        elif key == "AllowOutdatedFiles":
            values[key] = tuple(reader.record(f"{key}[{i}]", v, OutdatedFilesRule,
                                              {"Prefix": "string", "Minutes": "integer"})
                                for i, v in enumerate(reader.sequence(key, value)))
        elif key == "Fallbacks":
            values[key] = tuple(reader.record(f"{key}[{i}]", v, Fallback,
                                              {"URL": "string", "CountryCode": "string",
                                               "ContinentCode": "string"})
                                for i, v in enumerate(reader.sequence(key, value)))
        elif key == "Torrent":
            values[key] = reader.record(key, value, TorrentConfig, {
                "Enabled": "boolean", "PieceLength": "integer", "Trackers": "tiers",
                "DHTNodes": "string_list", "MaxWebSeeds": "integer"})
        elif key == "RedisSentinels":
            values[key] = tuple(reader.record(f"{key}[{i}]", v, SentinelHost, {"Host": "string"})
                                for i, v in enumerate(reader.sequence(key, value)))
        else:
            reader.warnings.append(f"{source}: unknown key {key!r} ignored")
    # Each value has its key's type (the reader named in _TYPES, or the record built above).
    cfg = Config(**values, source=source)  # type: ignore[arg-type]
    return _validate(cfg, reader, base_dir)


def _validate(cfg: Config, reader: _Reader, base_dir: str | None) -> Config:
    """The Go original's validation rules, errors naming key and value; paths made absolute."""
    source = cfg.source
    if cfg.WeightDistributionRange <= 0:
        raise reader.fail("WeightDistributionRange", cfg.WeightDistributionRange, "must be > 0")
    if cfg.OutputMode not in ("auto", "json", "redirect"):
        raise reader.fail("OutputMode", cfg.OutputMode, "must be one of auto, json, redirect")
    repo = cfg.Repository
    if not repo:
        raise ConfigError(f"{source}: Repository: the path to the local repository is required")
    if not os.path.isabs(repo):
        repo = os.path.join(base_dir or os.getcwd(), repo)
    for i, rule in enumerate(cfg.AllowOutdatedFiles):
        if rule.Prefix and not rule.Prefix.startswith("/"):
            raise reader.fail(f"AllowOutdatedFiles[{i}].Prefix", rule.Prefix, "must be empty or start with /")
        if rule.Minutes < 0:
            raise reader.fail(f"AllowOutdatedFiles[{i}].Minutes", rule.Minutes, "must be >= 0")
    if cfg.Workers < 1:
        raise reader.fail("Workers", cfg.Workers, "must be >= 1")
    if cfg.MetalinkMaxURLs < 1:
        raise reader.fail("MetalinkMaxURLs", cfg.MetalinkMaxURLs, "must be >= 1")
    if not 0 < cfg.RedisLoadTimeout <= 3600:
        raise reader.fail("RedisLoadTimeout", cfg.RedisLoadTimeout, "must be > 0 and <= 3600 (seconds)")
    plen = cfg.Torrent.PieceLength
    if plen and (plen < 16384 or plen & (plen - 1)):
        raise reader.fail("Torrent.PieceLength", plen, "must be 0 (automatic) or a power of two >= 16384")
    if cfg.Torrent.MaxWebSeeds < 0:
        raise reader.fail("Torrent.MaxWebSeeds", cfg.Torrent.MaxWebSeeds, "must be >= 0")
    for node in cfg.Torrent.DHTNodes:
        host, sep, port = node.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise reader.fail("Torrent.DHTNodes", node, "expected host:port")
    if cfg.RedisDB < 0:
        raise reader.fail("RedisDB", cfg.RedisDB, "must be >= 0")
    sr = cfg.StatsRetention
    for name, days in (("DailyDays", sr.DailyDays), ("MonthlyMonths", sr.MonthlyMonths), ("FileDays", sr.FileDays)):
        if days < 0:
            raise reader.fail(f"StatsRetention.{name}", days, "must be >= 0 (0 = forever)")
    data_dir = cfg.DataDir
    if data_dir and not os.path.isabs(data_dir):
        data_dir = os.path.normpath(os.path.join(base_dir or os.getcwd(), data_dir))
    return dataclasses.replace(
        cfg,
        # Made absolute and cleaned, symlinks NOT resolved (Go filepath.Abs).
        Repository=os.path.normpath(repo),
        RepositoryScanInterval=max(cfg.RepositoryScanInterval, 0),
        Fallbacks=tuple(dataclasses.replace(f, URL=f.URL if not f.URL or f.URL.endswith("/") else f.URL + "/")
                        for f in cfg.Fallbacks),
        DataDir=data_dir,
        warnings=tuple(reader.warnings),
    )


def parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str/list/dict
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None


def load_config(path: str) -> Config:
    """Read, parse and validate a config file.  Relative paths are taken from the current directory,
    as the Go original does."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"Configuration could not be found: {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    if os.environ.get("DEBUG"):
        print(f"Reading configuration from {path}")
    return config_from_mapping(parse_yaml(text, path), source=path)


def find_config_path(given: str | None) -> str | None:
    """``-config`` wins; else ``/etc/mirrorbits.conf`` when it exists."""
    if given:
        return given
    if os.path.exists(DEFAULT_CONFIG_PATH):
        return DEFAULT_CONFIG_PATH
    return None


class ConfigHolder:
    """Holds the current :class:`Config`; :meth:`reload` swaps in a new one or keeps the old one."""

    def __init__(self, config: Config, path: str | None = None) -> None:
        self._config = config
        self.path = path
        self._listeners: list[Callable[[Config, Config], None]] = []

    @property
    def current(self) -> Config:
        return self._config

    def __call__(self) -> Config:
        return self._config

    def subscribe(self, listener: Callable[[Config, Config], None]) -> None:
        """``listener(old, new)`` runs after each successful reload."""
        self._listeners.append(listener)

    def swap(self, new: Config) -> None:
        old, self._config = self._config, new
        for warning in new.warnings:
            log.warn("{warning}", warning=warning)
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                log.failure("config listener failed")

    def reload(self) -> bool:
        """Re-read the file.  On error log it and keep the old config; returns whether it changed."""
        if self.path is None:
            return False
        try:
            new = load_config(self.path)
        except ConfigError as e:
            log.error("SIGHUP Received: {error}", error=str(e))
            return False
        log.info("SIGHUP Received: Reloading configuration...")
        self.swap(new)
        return True
