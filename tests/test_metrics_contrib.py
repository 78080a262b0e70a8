"""The operator's side of the metrics: the alert rules pass ``promtool``'s own unit tests, and the
rules, the Grafana dashboard and the daemon's registry all name exactly the metrics that
docs/metrics.md lists."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.core import Metric
from prometheus_client.registry import REGISTRY

import mirrorbits.app  # noqa: F401 - imports every module that declares metrics
from mirrorbits.cache import MirrorView, ViewCollector, mirror_state_families
from mirrorbits.model import Mirror
from mirrorbits.monitor.cluster import Cluster, ClusterCollector
from mirrorbits.redis.connection import RedisClient, RedisSettings
from mirrorbits.web.resource import RedirectCounts
from mirrorbits.web.site import RequestMetrics
from mirrorbits.web.stats import DownloadStats, DownloadStatsCollector

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "contrib" / "prometheus"
DASHBOARD = ROOT / "contrib" / "grafana" / "mirrorbits-dashboard.json"
DOC = ROOT / "docs" / "metrics.md"

_NAME = re.compile(r"\b((?:mirrorbits|process)_[a-z_]+)\b")
_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def documented() -> set[str]:
    return set(re.findall(r"^\| `(mirrorbits_[a-z_]+)` \|", DOC.read_text(), re.M))


def family_of(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exposed_name(metric: Metric) -> str:
    return metric.name + "_total" if metric.type == "counter" else metric.name


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    check = subprocess.run(["promtool", "check", "rules", "mirrorbits-alerts.yml"], cwd=RULES,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "7 rules found" in check.stdout
    test = subprocess.run(["promtool", "test", "rules", "mirrorbits-alerts.test.yml"], cwd=RULES,
                          capture_output=True, text=True, timeout=120)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_rules_and_dashboard_use_only_documented_metrics() -> None:
    docs = documented()
    rules = (RULES / "mirrorbits-alerts.yml").read_text()
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    used = {family_of(n) for n in _NAME.findall(rules + "\n".join(exprs))}
    # process_* comes from the library's own collectors (listed as a group in the doc).
    unknown = {n for n in used if n.startswith("mirrorbits_")} - docs
    assert not unknown, f"not in docs/metrics.md: {sorted(unknown)}"
    assert {n for n in used if n.startswith("process_")} <= {"process_cpu_seconds_total",
                                                             "process_resident_memory_bytes"}
    assert len(exprs) >= 20


def test_every_metric_of_the_daemon_is_documented_and_every_documented_one_exists() -> None:
    declared = {exposed_name(m) for m in REGISTRY.collect() if m.name.startswith("mirrorbits_")}
    # The collectors that read the parts' state, on parts that were never started.
    redis = RedisClient(lambda: RedisSettings("127.0.0.1:1"))
    view = MirrorView(redis)
    view.warm_seconds = 1.0
    collectors = [ViewCollector(view, lambda: 0.0), ClusterCollector(Cluster(redis, 0)),
                  DownloadStatsCollector(DownloadStats(redis, lambda: None)),  # type: ignore[arg-type]
                  RequestMetrics(), RedirectCounts()]
    for c in collectors:
        declared |= {exposed_name(m) for m in c.collect()}
    declared |= {exposed_name(m) for m in mirror_state_families([Mirror(id=1, name="m")], 0.0)}
    assert declared == documented()


def test_mirror_state_families_have_one_up_series_per_mirror_and_protocol() -> None:
    mirrors = [Mirror(id=1, name="a", http_up=True, https_up=False, enabled=True, continent_code="EU",
                      country_codes="FR BE", last_successful_sync=1000),
               Mirror(id=2, name="b", http_up=False, https_up=True, enabled=False)]
    families = {m.name: m for m in mirror_state_families(mirrors, 1600.0)}
    up = {(s.labels["mirror"], s.labels["protocol"]): s.value for s in families["mirrorbits_mirror_up"].samples}
    assert up == {("a", "http"): 1, ("a", "https"): 0, ("b", "http"): 0, ("b", "https"): 1}
    info = families["mirrorbits_mirror_info"].samples[0].labels
    assert info == {"mirror": "a", "continent": "EU", "country": "FR"}
    age = families["mirrorbits_mirror_last_successful_sync_age_seconds"].samples
    assert [(s.labels["mirror"], s.value) for s in age] == [("a", 600.0)]  # b never synced
    enabled = {s.labels["mirror"]: s.value for s in families["mirrorbits_mirror_enabled"].samples}
    assert enabled == {"a": 1, "b": 0}
