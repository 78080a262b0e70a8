"""The observability listener end to end: a real daemon on a real redis-server, scraped by Debian's
``prometheus`` server and checked through Prometheus' HTTP API; its scrape checked by ``promtool
check metrics``; ``/readyz`` while Redis stops and comes back; nothing listening when the key is
unset; with ``Workers: 2``, the series of the worker process carried by the parent's scrape.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import processes
from tests.fixtures.servers import free_port, wait_for_port
from tests.test_daemon import Daemon
from tests.web.test_stats_acceptance import MIRRORS, PATH, request, world  # noqa: F401 - fixture

REDIRECTS = 17


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET on 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def start(world: dict[str, Any], extra: str = "") -> tuple[Daemon, int]:  # noqa: F811
    """The daemon of ``world`` with ``MetricsListenAddress`` on a free port (and ``extra`` keys),
    once it redirects and ``/readyz`` says ready."""
    metrics_port = free_port()
    conf: Path = world["conf"]
    conf.write_text(conf.read_text() + f"MetricsListenAddress: 127.0.0.1:{metrics_port}\n{extra}")
    tmp: Path = world["tmp"]
    d = Daemon([sys.executable, "-m", "mirrorbits", "daemon", "-config", str(conf), "-monitor=false",
                "-p", str(tmp / "mirrorbits.pid")], world["port"], tmp)
    world["daemons"].append(d)
    d.wait_http()
    wait_for_port("127.0.0.1", metrics_port, timeout=30)
    deadline = time.monotonic() + 30
    while get(metrics_port, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, f"never ready:\n{d.output()}"
        time.sleep(0.1)
    return d, metrics_port


def sample(text: str, name: str, labels: dict[str, str]) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``, from a text scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class Prometheus:
    """Debian's prometheus server on loopback, scraping one target every 200 ms."""

    def __init__(self, tmp: Path, target_port: int) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n"
            "scrape_configs:\n  - job_name: mirrorbits\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = processes.spawn(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port, timeout=30)
        deadline = time.monotonic() + 30
        while get(self.port, "/-/ready")[0] != 200:  # 503 while its storage opens
            assert time.monotonic() < deadline, (tmp / "prometheus.log").read_text()
            time.sleep(0.1)

    def query(self, promql: str) -> list[dict[str, Any]]:
        status, _, body = get(self.port, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert status == 200, body
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, promql: str, want: float, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.value(promql)) != want:
            assert time.monotonic() < deadline, f"{promql} = {got}, expected {want}"
            time.sleep(0.2)

    def stop(self) -> None:
        processes.stop(self.proc)
        self.log.close()


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "prom"
    d.mkdir()
    yield d


def test_prometheus_scrapes_exact_redirect_count_and_mirror_states(world: dict[str, Any],  # noqa: F811
                                                                   prometheus_dir: Path) -> None:
    d, metrics_port = start(world)
    prom = Prometheus(prometheus_dir, metrics_port)
    try:
        redirects = 'sum(mirrorbits_http_requests_total{kind="redirect",outcome="redirect"}) or vector(0)'
        # Whatever the start-up probes counted, Prometheus first sees what the daemon says now.
        baseline = sample(get(metrics_port, "/metrics")[2], "mirrorbits_http_requests_total",
                          {"kind": "redirect", "outcome": "redirect"})
        prom.wait_value(redirects, baseline)
        for _ in range(REDIRECTS):
            status, location = request(d.port, "GET")
            assert status == 302 and location in {u + PATH.lstrip("/") for u in MIRRORS.values()}
        prom.wait_value(redirects, baseline + REDIRECTS)
        time.sleep(1.0)  # several scrapes later it has not moved on
        assert prom.value(redirects) == baseline + REDIRECTS
        per_mirror = prom.value("sum(mirrorbits_mirror_redirects_total)")
        assert per_mirror == REDIRECTS  # GETs only: the start-up probes were HEADs

        up = prom.query("mirrorbits_mirror_up")
        series = sorted((s["metric"]["mirror"], s["metric"]["protocol"], s["value"][1]) for s in up)
        assert series == [("m7", "http", "1"), ("m7", "https", "0"),
                          ("m8", "http", "1"), ("m8", "https", "0")]
        assert prom.value('up{job="mirrorbits"}') == 1
    finally:
        prom.stop()
    assert d.stop() == 0


def test_promtool_finds_no_problem_in_a_scrape(world: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    d, metrics_port = start(world)
    for _ in range(3):
        request(d.port, "GET")
    request(d.port, "GET", path="/pub/missing.bin")
    status, ctype, text = get(metrics_port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                           timeout=60)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
        check.stdout.decode() + check.stderr.decode()
    for name in ("mirrorbits_build_info", "mirrorbits_http_request_duration_seconds_bucket",
                 "mirrorbits_view_lookups_total", "mirrorbits_redis_up", "process_cpu_seconds_total",
                 "mirrorbits_reactor_lag_seconds_count"):
        assert f"\n{name}" in text, name
    assert sample(text, "mirrorbits_http_requests_total", {"kind": "redirect", "outcome": "not_found"}) == 1
    # OpenMetrics when the scraper asks for it.
    status, ctype, om = get(metrics_port, "/metrics",
                            {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and ctype.startswith("application/openmetrics-text") and om.endswith("# EOF\n")
    assert get(metrics_port, "/healthz")[:1] == (200,)
    assert d.stop() == 0


def test_readyz_follows_redis_while_the_redirector_keeps_answering(world: dict[str, Any]) -> None:  # noqa: F811
    d, metrics_port = start(world)
    server = world["server"]
    server.stop()
    deadline = time.monotonic() + 10
    while (answer := get(metrics_port, "/readyz"))[0] != 503:
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    assert "Redis" in answer[2]
    assert get(metrics_port, "/healthz")[0] == 200
    # The redirector answers from its view meanwhile.
    assert request(d.port, "GET")[0] == 302
    scrape = get(metrics_port, "/metrics")[2]
    assert sample(scrape, "mirrorbits_redis_up", {}) == 0
    server.start()
    back = time.monotonic()
    while get(metrics_port, "/readyz")[0] != 200:
        assert time.monotonic() - back < 5, "not ready within 5 s of Redis' return"
        time.sleep(0.1)
    assert request(d.port, "GET")[0] == 302
    assert d.stop() == 0


def test_nothing_listens_when_the_key_is_unset(world: dict[str, Any]) -> None:  # noqa: F811
    from tests.web.test_stats_acceptance import start_daemon

    d = start_daemon(world)
    rpc_port = int(world["conf"].read_text().split("RPCListenAddress: 127.0.0.1:")[1].split()[0])
    # The redirector and the admin channel only.
    assert listening_ports(d.proc.pid) == {world["port"], rpc_port}
    assert d.stop() == 0


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (its socket fds matched in /proc/net/tcp and tcp6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_workers_series_reach_the_parents_scrape(world: dict[str, Any]) -> None:  # noqa: F811
    d, metrics_port = start(world, "Workers: 2\n")
    deadline = time.monotonic() + 30
    while True:
        text = get(metrics_port, "/metrics")[2]
        if 'worker="1"' in text:
            break
        assert time.monotonic() < deadline, "no series of the worker in the parent's scrape"
        time.sleep(0.2)
    before = sample(text, "mirrorbits_http_requests_total", {"kind": "redirect", "outcome": "redirect"})
    for _ in range(REDIRECTS):
        assert request(d.port, "GET", headers={"Connection": "close"})[0] == 302
    text = get(metrics_port, "/metrics")[2]
    after = sample(text, "mirrorbits_http_requests_total", {"kind": "redirect", "outcome": "redirect"})
    assert after - before == REDIRECTS
    # One mirror_up series per mirror and protocol: the mirrors' state is the main process's.
    assert sum(1 for line in text.splitlines() if line.startswith("mirrorbits_mirror_up{")) == 4
    assert sample(text, "process_cpu_seconds_total", {"worker": "1"}) > 0
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert d.stop() == 0


def test_the_metrics_listener_follows_a_seamless_upgrade(tmp_path: Path) -> None:
    """SIGUSR2: the old process releases the metrics port before it spawns the new one (as it does
    the admin channel), and the new process serves ``/metrics`` and ``/readyz`` on it."""
    from tests.fixtures.redis import RedisServer
    from tests.lifecycle.helpers import Daemon as Generations
    from tests.lifecycle.helpers import go_style, kill_all, redirects, seed_world, subreaper, wait_exit
    from tests.lifecycle.helpers import write_config as lifecycle_config

    metrics_port = free_port()
    with RedisServer() as redis:
        seed_world(redis.client())
        port = free_port()
        conf = lifecycle_config(tmp_path, port, redis, f"MetricsListenAddress: 127.0.0.1:{metrics_port}\n")
        pidfile = tmp_path / "mirrorbits.pid"
        pids: list[int] = []
        with subreaper():
            d = Generations(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
            pids.append(d.proc.pid)
            try:
                wait_for_port("127.0.0.1", port, timeout=30)
                wait_for_port("127.0.0.1", metrics_port, timeout=30)
                assert redirects(port)
                first = sample(get(metrics_port, "/metrics")[2], "mirrorbits_build_info", {})
                assert first == 1
                os.kill(d.proc.pid, 12)  # SIGUSR2
                child = d.wait_pid_change(d.proc.pid, timeout=30)
                pids.append(child)
                assert d.proc.wait(30) == 0, d.output()[-3000:]
                deadline = time.monotonic() + 20
                while True:
                    try:
                        if get(metrics_port, "/readyz")[0] == 200:
                            break
                    except OSError:
                        pass
                    assert time.monotonic() < deadline, d.output()[-3000:]
                    time.sleep(0.1)
                assert redirects(port)
                text = get(metrics_port, "/metrics")[2]
                assert sample(text, "process_start_time_seconds", {}) > 0
                assert "MetricsListenAddress" not in d.output(), d.output()[-3000:]  # no bind error
                os.kill(child, 15)
                assert wait_exit(child) == 0
            finally:
                kill_all(pids)
