"""Config loading: the Go keys, types, defaults and validation rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mirrorbits.config import (
    Config,
    ConfigError,
    ConfigHolder,
    Fallback,
    Hashes,
    OutdatedFilesRule,
    SentinelHost,
    config_from_mapping,
    load_config,
    parse_yaml,
)

CONFIG_SAMPLES = Path(__file__).resolve().parent / "data" / "config"


def load_text(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "mirrorbits.conf"
    p.write_text(text)
    return load_config(str(p))


def test_defaults_match_go() -> None:
    c = config_from_mapping({"Repository": "/srv/repo"})
    assert c.OutputMode == "auto"
    assert c.ListenAddress == ":8080"
    assert c.Gzip is False
    assert c.AllowHTTPToHTTPSRedirects is True
    assert c.SameDownloadInterval == 600
    assert c.RedisAddress == "127.0.0.1:6379"
    assert c.RedisDB == 0
    assert c.GeoipDatabasePath == "/usr/share/GeoIP/"
    assert (c.ConcurrentSync, c.ScanInterval, c.CheckInterval, c.RepositoryScanInterval) == (5, 30, 1, 5)
    assert c.MaxLinkHeaders == 10
    assert c.Hashes == Hashes(SHA1=False, SHA256=True, MD5=False)
    assert c.WeightDistributionRange == 1.5
    assert c.RPCListenAddress == "localhost:3390"
    assert c.Fallbacks == () and c.AllowOutdatedFiles == () and c.RedisSentinels == ()
    assert c.embedded_redis is False


def test_all_keys_sample_loads() -> None:
    c = load_config(str(CONFIG_SAMPLES / "mirrorbits.all-keys.conf"))
    assert c.Repository == "/srv/repo"
    assert c.Templates == "/usr/share/mirrorbits/"
    assert c.LocalJSPath == ""
    assert c.LogDir == "/var/log/mirrorbits"
    assert c.RPCPassword == ""
    assert c.RedisPassword == "supersecure"
    assert c.RedisSentinelMasterName == "mirrorbits"
    assert c.RedisSentinels == tuple(SentinelHost(f"127.0.0.{i}:26379") for i in (1, 2, 3))
    assert c.TraceFileLocation == "/trace"
    assert c.Hashes == Hashes(SHA1=False, SHA256=True, MD5=False)  # On/Off spellings
    assert c.AllowOutdatedFiles == (OutdatedFilesRule("/dists/", 540),)
    assert c.Fallbacks == (Fallback("https://fallback1.mirror/repo/", "fr", "eu"),
                           Fallback("https://fallback2.mirror/repo/", "us", "na"))
    assert c.warnings == ()


def test_shipped_sample_needs_repository() -> None:
    # Every key is commented out in the shipped sample: the only complaint is the required Repository.
    with pytest.raises(ConfigError, match="Repository"):
        load_config(str(CONFIG_SAMPLES / "mirrorbits.sample.conf"))


@pytest.mark.parametrize("text,key", [
    ("OutputMode: fast", "OutputMode"),
    ("WeightDistributionRange: 0", "WeightDistributionRange"),
    ("WeightDistributionRange: -1.5", "WeightDistributionRange"),
    ("Gzip: maybe", "Gzip"),
    ("ScanInterval: often", "ScanInterval"),
    ("AllowOutdatedFiles:\n  - Prefix: dists/\n    Minutes: 5", "AllowOutdatedFiles[0].Prefix"),
    ("AllowOutdatedFiles:\n  - Prefix: /dists/\n    Minutes: -5", "AllowOutdatedFiles[0].Minutes"),
    ("Fallbacks: http://x/", "Fallbacks"),
    ("Hashes: [1, 2]", "Hashes"),
    ("StatsRetention:\n  DailyDays: -1", "StatsRetention.DailyDays"),
    ("StatsRetention:\n  MonthlyMonths: -2", "StatsRetention.MonthlyMonths"),
    ("StatsRetention:\n  FileDays: -3", "StatsRetention.FileDays"),
    ("RedisLoadTimeout: 0", "RedisLoadTimeout"),
    ("RedisLoadTimeout: soon", "RedisLoadTimeout"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, "Repository: /srv/repo\n" + text + "\n")
    msg = str(e.value)
    assert key in msg
    assert str(tmp_path / "mirrorbits.conf") in msg


def test_yaml_11_booleans_and_normalisation(tmp_path: Path) -> None:
    c = load_text(tmp_path, """
Repository: repo/../repo/
Gzip: On
AllowHTTPToHTTPSRedirects: n
FixTimezoneOffsets: yes
RepositoryScanInterval: -3
Hashes:
  MD5: Y
Fallbacks:
  - URL: http://fb.example/pub
    CountryCode: fr
LogDir:
RedisPassword: 1234
""")
    assert c.Repository == os.path.join(os.getcwd(), "repo")
    assert c.Gzip is True and c.AllowHTTPToHTTPSRedirects is False and c.FixTimezoneOffsets is True
    assert c.RepositoryScanInterval == 0
    assert c.Hashes == Hashes(SHA1=False, SHA256=True, MD5=True)  # SHA256 keeps its default
    assert c.Fallbacks[0].URL == "http://fb.example/pub/"
    assert c.LogDir == ""
    assert c.RedisPassword == "1234"  # a string key keeps the raw text, as yaml.v2 does


def test_unknown_keys_are_warnings(tmp_path: Path) -> None:
    c = load_text(tmp_path, "Repository: /srv\nListenAdress: :80\nHashes:\n  SHA512: On\n")
    assert any("ListenAdress" in w for w in c.warnings)
    assert any("Hashes.SHA512" in w for w in c.warnings)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="could not be found"):
        load_config(str(tmp_path / "nope.conf"))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_text(tmp_path, "Repository: [unclosed\n")
    with pytest.raises(ConfigError, match="mapping"):
        config_from_mapping(parse_yaml("- a\n- b\n", "x"), "x")


def test_config_is_frozen() -> None:
    c = config_from_mapping({"Repository": "/srv"})
    with pytest.raises(AttributeError):
        c.OutputMode = "json"  # type: ignore[misc]


def test_reload_swaps_or_keeps(tmp_path: Path) -> None:
    p = tmp_path / "m.conf"
    p.write_text("Repository: /srv\nOutputMode: json\n")
    holder = ConfigHolder(load_config(str(p)), str(p))
    seen: list[tuple[str, str]] = []
    holder.subscribe(lambda old, new: seen.append((old.OutputMode, new.OutputMode)))
    p.write_text("Repository: /srv\nOutputMode: redirect\n")
    assert holder.reload() is True
    assert holder.current.OutputMode == "redirect"
    assert seen == [("json", "redirect")]
    p.write_text("Repository: /srv\nOutputMode: fast\n")
    assert holder.reload() is False
    assert holder.current.OutputMode == "redirect"
    p.unlink()
    assert holder.reload() is False  # the Go original exits here; we keep serving
    assert holder.current.OutputMode == "redirect"


def test_embedded_marker(tmp_path: Path) -> None:
    c = load_text(tmp_path, "Repository: /srv\nRedisAddress: embedded\nDataDir: data\n")
    assert c.embedded_redis is True
    assert c.DataDir == os.path.join(os.getcwd(), "data")


def test_extension_keys(tmp_path: Path) -> None:
    c = load_text(tmp_path, "Repository: /srv\nCheckTLSCAFile: /etc/ca.pem\nWorkers: 2\n")
    assert c.CheckTLSCAFile == "/etc/ca.pem" and c.Workers == 2 and c.warnings == ()
    with pytest.raises(ConfigError, match="Workers"):
        load_text(tmp_path, "Repository: /srv\nWorkers: 0\n")
    assert Config().RedisLoadTimeout == 2.0
    assert load_text(tmp_path, "Repository: /srv\nRedisLoadTimeout: 0.5\n").RedisLoadTimeout == 0.5


def test_fallback_url_normalisation() -> None:
    """Fallback URLs: a trailing / is added; an empty URL stays empty."""
    c = config_from_mapping({"Repository": "/srv", "Fallbacks": [{"URL": "rsync://test.com"}, {"URL": ""},
                                                                 {"URL": "http://a/b/"}]})
    assert [f.URL for f in c.Fallbacks] == ["rsync://test.com/", "", "http://a/b/"]
