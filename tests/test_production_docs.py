"""docs/production.md cannot rot: its configuration blocks are files, and the files are put to work.

Each block marked ``<!-- snippet: PATH -->`` on the page must equal the file ``PATH`` of the repository.
Every file is then checked by what reads it in production: the Mirrorbits configurations by the
daemon's own loader (a warning about an unknown key fails), nginx and HAProxy configurations by
``nginx -t`` / ``haproxy -c`` and by a real proxy in front of a real daemon, systemd units by
``systemd-analyze verify``, the logrotate file by ``logrotate -d`` and by a real rotation, the Redis
and Sentinel files by real servers, the backup script by a backup and a restore.

Production paths and addresses (``/etc/...``, ``192.0.2.x``, port 80) are replaced where a real run
needs it, each by a pattern that must match, so that a changed snippet cannot silently escape its
check. A system tool that is not installed makes its test skip with the Debian package to install.

``python -m tests.test_production_docs`` copies the files into the page after editing them.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_py
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mirrorbits.config import load_config
from mirrorbits.redis.embedded import find_redis_server
from tests.fixtures.redis import RedisServer, redis_server_binary
from tests.fixtures.servers import free_port, wait_for_port
from tests.lifecycle.helpers import FILE, READY, Daemon, go_style, seed_world

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "production.md"
PRODUCTION = ROOT / "contrib" / "production"
SERVICE = ROOT / "contrib" / "mirrorbits.service"

#: A marked block: the marker line, then a fence whose body is the file, byte for byte.
SNIPPET_RE = re.compile(r"<!-- snippet: (?P<path>\S+) -->\n```(?P<lang>[\w-]*)\n(?P<body>.*?)```\n", re.S)
FENCE_RE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.S | re.M)

#: The client's own address in the proxy tests: not the proxy's, so a forwarded one can be told apart.
CLIENT_IP = "127.0.0.3"
#: What a client claims in its own X-Forwarded-For; the proxy must not pass it on.
SPOOFED_IP = "203.0.113.9"


def tool(name: str, package: str) -> str:
    """Path of a system tool, or skip the test naming the Debian package that provides it."""
    found = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := os.path.join(d, name), os.X_OK)), None)
    if found is None:
        pytest.skip(f"system tool missing: {name} (Debian package {package})")
    return found


def substitute(text: str, pattern: str, replacement: str, count: int = 1) -> str:
    """``re.sub`` that must replace exactly ``count`` occurrences: a snippet that changed shape fails
    here instead of reaching a tool with a production path or address left in it."""
    new, n = re.subn(pattern, replacement, text, flags=re.M)
    assert n == count, f"expected {count} match(es) of {pattern!r} in the snippet, found {n}"
    return new


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def tls_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed key and certificate in one PEM file, which nginx and HAProxy both load."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "download.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    pem = tmp_path_factory.mktemp("tls") / "download.example.org.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + cert.public_bytes(serialization.Encoding.PEM))
    return pem


# -------------------------------------------------------------------------------------------------
# The page and the files


def page_snippets(text: str) -> list[tuple[str, str]]:
    """(path, block body) of each marked block, in page order."""
    return [(m["path"], m["body"]) for m in SNIPPET_RE.finditer(text)]


def synced_page(text: str) -> str:
    """The page with each marked block replaced by its file."""
    def block(m: re.Match[str]) -> str:
        body = (ROOT / m["path"]).read_text()
        return f"<!-- snippet: {m['path']} -->\n```{m['lang']}\n{body}```\n"
    return SNIPPET_RE.sub(block, text)


def test_page_blocks_are_the_files() -> None:
    text = PAGE.read_text()
    snippets = page_snippets(text)
    for path, body in snippets:
        assert not Path(path).is_absolute() and ".." not in Path(path).parts, path
        wanted = (ROOT / path).read_text()
        assert wanted.endswith("\n"), f"{path} must end with a newline"
        assert body == wanted, (f"the block of {path} in docs/production.md differs from the file; "
                                "run: python -m tests.test_production_docs")
    shown = {path for path, _ in snippets}
    files = {str(p.relative_to(ROOT)) for p in PRODUCTION.iterdir() if p.is_file()}
    assert files <= shown, f"files of contrib/production/ not on the page: {sorted(files - shown)}"
    assert str(SERVICE.relative_to(ROOT)) in shown
    # Any other block is a shell command to type, never a configuration that could drift.
    for m in FENCE_RE.finditer(text):
        marked = re.search(r"<!-- snippet: \S+ -->\n\Z", text[:m.start()]) is not None
        assert marked or m["lang"] == "sh", f"a block without a snippet marker:\n{m['body']}"


# -------------------------------------------------------------------------------------------------
# Mirrorbits configurations


def test_mirrorbits_config_loads_without_warnings() -> None:
    config = load_config(str(PRODUCTION / "mirrorbits.conf"))
    assert config.warnings == ()
    assert config.ListenAddress == "127.0.0.1:8080"  # behind a proxy: loopback only
    assert config.RPCPassword
    assert config.LogDir and config.Fallbacks


def test_sentinel_keys_load_with_the_config(tmp_path: Path) -> None:
    combined = tmp_path / "mirrorbits.conf"
    combined.write_text((PRODUCTION / "mirrorbits.conf").read_text()
                        + (PRODUCTION / "mirrorbits-sentinel.conf").read_text())
    config = load_config(str(combined))
    assert config.warnings == ()
    assert config.RedisSentinelMasterName == "mirrorbits"
    assert [s.Host for s in config.RedisSentinels] == [
        "192.0.2.11:26379", "192.0.2.12:26379", "192.0.2.13:26379"]
    # The sentinels watch the master that sentinel.conf names.
    sentinel_conf = (PRODUCTION / "sentinel.conf").read_text()
    assert f"sentinel monitor {config.RedisSentinelMasterName} " in sentinel_conf


# -------------------------------------------------------------------------------------------------
# nginx and HAProxy: the tools' own checks


def nginx_site(cert: Path, *, daemon_port: int | None = None, http_port: int | None = None,
               https_port: int | None = None) -> str:
    """The nginx snippet with the test certificate; with ports, also on loopback and to the daemon."""
    text = (PRODUCTION / "nginx-mirrorbits.conf").read_text()
    text = substitute(text, r"^(\s*ssl_certificate(?:_key)?)\s+\S+;", rf"\1 {cert};", count=2)
    if daemon_port is not None:
        text = substitute(text, r"^(\s*)server 127\.0\.0\.1:8080;", rf"\1server 127.0.0.1:{daemon_port};")
        text = substitute(text, r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{http_port};")
        text = substitute(text, r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{https_port} ssl;")
        text = substitute(text, r"^\s*listen \[::\]:\d+( ssl)?;\n", "", count=2)
    return text


def nginx_main(tmp: Path, site: Path) -> Path:
    """A main nginx.conf that keeps every file nginx writes under ``tmp`` and includes the site."""
    temp_paths = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp / "nginx.conf"
    conf.write_text(f"daemon off;\nmaster_process off;\npid {tmp / 'nginx.pid'};\n"
                    f"error_log {tmp / 'error.log'} notice;\nevents {{ worker_connections 64; }}\n"
                    f"http {{\n    access_log {tmp / 'access.log'};\n{temp_paths}"
                    f"    include {site};\n}}\n")
    return conf


def nginx_args(nginx: str, tmp: Path, conf: Path) -> list[str]:
    return [nginx, "-p", f"{tmp}/", "-e", str(tmp / "error.log"), "-c", str(conf)]


def test_nginx_accepts_the_site(tmp_path: Path, tls_pem: Path) -> None:
    nginx = tool("nginx", "nginx")
    site = tmp_path / "site.conf"
    site.write_text(nginx_site(tls_pem))
    result = run(nginx_args(nginx, tmp_path, nginx_main(tmp_path, site)) + ["-t"])
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "test is successful" in output, output
    assert "[warn]" not in output and "[emerg]" not in output, output


def haproxy_config(cert: Path, *, daemon_port: int | None = None, http_port: int | None = None,
                   https_port: int | None = None) -> str:
    text = (PRODUCTION / "haproxy-mirrorbits.cfg").read_text()
    text = substitute(text, r"^(\s*bind :443 ssl crt) \S+", rf"\1 {cert}")
    if daemon_port is not None:
        text = substitute(text, r"^(\s*server node\d) 192\.0\.2\.\d+:8080", rf"\1 127.0.0.1:{daemon_port}",
                          count=2)
        text = substitute(text, r"^(\s*bind) :80$", rf"\1 127.0.0.1:{http_port}")
        text = substitute(text, r"^(\s*bind) :443 ", rf"\1 127.0.0.1:{https_port} ")
    return text


def test_haproxy_accepts_the_config(tmp_path: Path, tls_pem: Path) -> None:
    haproxy = tool("haproxy", "haproxy")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(tls_pem))
    result = run([haproxy, "-c", "-f", str(cfg)])
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "valid" in output, output
    assert "WARNING" not in output and "ALERT" not in output, output


# -------------------------------------------------------------------------------------------------
# systemd units and logrotate


SYSTEMD_UNITS = [SERVICE, PRODUCTION / "mirrorbits.socket", PRODUCTION / "mirrorbits-geoipupdate.service",
                 PRODUCTION / "mirrorbits-geoipupdate.timer"]


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    # verify also checks that each Exec*= program exists: point the ones this machine lacks (the
    # daemon installed under /usr/bin, geoipupdate) at a program that does.
    stand_in = shutil.which("mirrorbits") or "/bin/true"
    units = []
    for unit in SYSTEMD_UNITS:
        text = unit.read_text()
        for program in re.findall(r"^Exec\w+=-?(/\S+)", text, flags=re.M):
            if not os.access(program, os.X_OK):
                text = text.replace(program, stand_in)
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    result = run([analyze, "verify", "--man=no", *units])
    output = (result.stdout + result.stderr).strip()
    # Unknown keys and sections are only warnings (exit status 0): any output fails.
    assert result.returncode == 0 and output == "", output


def test_logrotate_accepts_the_file(tmp_path: Path) -> None:
    logrotate = tool("logrotate", "logrotate")
    conf = tmp_path / "mirrorbits"
    shutil.copy(PRODUCTION / "logrotate-mirrorbits", conf)
    conf.chmod(0o644)  # logrotate refuses a group- or world-writable file
    result = run([logrotate, "-d", "-s", str(tmp_path / "state"), str(conf)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error:" not in output, output
    assert "rotating pattern: /var/log/mirrorbits/*.log" in output, output


# -------------------------------------------------------------------------------------------------
# Redis: persistence, Sentinel, backups


def redis_cli(port: int, *args: str) -> object:
    return redis_py.Redis(port=port, decode_responses=True).execute_command(*args)


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server started with the persistence snippet, on loopback, its files under tmp_path."""
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), str(PRODUCTION / "redis-persistence.conf"),
                             "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--logfile", str(tmp_path / "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_persistence_settings_apply(persistent_redis: int) -> None:
    port = persistent_redis
    config = redis_py.Redis(port=port, decode_responses=True).config_get("*")
    assert (config["appendonly"], config["appendfsync"], config["save"]) == (
        "yes", "everysec", "900 1 300 10 60 10000")


def test_backup_script_copies_a_snapshot_that_restores(persistent_redis: int, tmp_path: Path) -> None:
    tool("redis-cli", "redis-tools")
    tool("redis-check-rdb", "redis-tools")
    port = persistent_redis
    redis_cli(port, "SET", "STATS_TOTAL", "1234")
    dest = tmp_path / "backups"
    result = run([str(PRODUCTION / "redis-backup.sh"), str(dest), "-h", "127.0.0.1", "-p", str(port)])
    assert result.returncode == 0, result.stdout + result.stderr
    copy = Path(result.stdout.strip())
    assert copy.parent == dest and re.fullmatch(r"dump-\d{8}T\d{6}Z\.rdb", copy.name), copy
    assert list(dest.iterdir()) == [copy]  # no .tmp left behind
    # Restore as the page says: the copy as dump.rdb of a server without AOF.
    restored = RedisServer(extra_args=["--dbfilename", copy.name, "--dir", str(dest)]).start()
    try:
        assert restored.client().get("STATS_TOTAL") == "1234"
    finally:
        restored.cleanup()


@dataclass
class RunningSentinel:
    port: int
    master: RedisServer


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[RunningSentinel]:
    """A redis-sentinel with sentinel.conf, watching a real master; both on loopback."""
    binary = shutil.which("redis-sentinel")
    args = [binary] if binary else [tool("redis-server", "redis-sentinel"), "--sentinel"]
    master = RedisServer().start()
    port = free_port()
    text = (PRODUCTION / "sentinel.conf").read_text()
    text = substitute(text, r"^port 26379$", f"port {port}")
    text = substitute(text, r"^bind .*$", "bind 127.0.0.1")
    text = substitute(text, r"^(sentinel monitor mirrorbits) 192\.0\.2\.11 6379 ",
                      rf"\1 127.0.0.1 {master.port} ")
    conf = tmp_path / "sentinel.conf"  # the sentinel rewrites its file: never the repository's
    conf.write_text(text + f"dir {tmp_path}\nlogfile {tmp_path / 'sentinel.log'}\n")
    proc = subprocess.Popen([args[0], str(conf), *args[1:]], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port)
        yield RunningSentinel(port, master)
    finally:
        stop(proc)
        master.cleanup()


def test_sentinel_runs_with_the_snippet(sentinel: RunningSentinel) -> None:
    deadline = time.monotonic() + 10
    while True:
        state = redis_cli(sentinel.port, "SENTINEL", "MASTER", "mirrorbits")
        fields = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else state
        assert isinstance(fields, dict)
        if fields.get("flags") == "master" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert fields["flags"] == "master", fields  # watched and seen up
    assert fields["port"] == str(sentinel.master.port)
    assert (fields["quorum"], fields["down-after-milliseconds"], fields["failover-timeout"],
            fields["parallel-syncs"]) == ("2", "5000", "60000", "1")


def test_daemon_finds_its_master_through_the_sentinels(sentinel: RunningSentinel, tmp_path: Path) -> None:
    """mirrorbits-sentinel.conf in a real daemon: one sentinel of three answers, RedisAddress is dead."""
    seed_world(sentinel.master.client())
    port = free_port()
    hosts = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{sentinel.port}", f"127.0.0.1:{free_port()}"]
    conf = production_config(tmp_path, port, f"127.0.0.1:{free_port()}", sentinels=hosts)
    daemon = Daemon(go_style(conf, tmp_path / "mirrorbits.pid"), tmp_path)
    try:
        daemon.wait_log(f"Connected to redis master 127.0.0.1:{sentinel.master.port}", timeout=30)
        # Ready, not merely listening: the view is warmed once the schema check has passed. A
        # request that comes earlier is answered from the fallbacks, which is not what this is about.
        daemon.wait_log(READY, timeout=30)
        wait_for_port("127.0.0.1", port)
        assert served_from(ask(port)) == (["m1"], {})
    finally:
        stop(daemon.proc, timeout=20)


# -------------------------------------------------------------------------------------------------
# A real daemon with the production config, behind a real nginx and a real HAProxy


@dataclass
class RunningDaemon:
    port: int
    logdir: Path
    process: Daemon


def production_config(tmp: Path, port: int, redis_address: str, sentinels: list[str] | None = None) -> Path:
    """mirrorbits.conf with this machine's paths and ports, every other key as shipped; with
    ``sentinels``, followed by mirrorbits-sentinel.conf naming them."""
    repo = tmp / "repo"
    repo.mkdir()
    (repo / FILE.lstrip("/")).write_bytes(b"x" * 48)
    text = (PRODUCTION / "mirrorbits.conf").read_text()
    for key, value in {"Repository": repo, "LogDir": tmp / "logs", "GeoipDatabasePath": tmp / "nogeoip",
                       "ListenAddress": f"127.0.0.1:{port}", "RPCListenAddress": f"127.0.0.1:{free_port()}",
                       "RedisAddress": redis_address}.items():
        text = substitute(text, rf"^{key}: .*$", f"{key}: {value}")
    if sentinels is not None:
        fragment = (PRODUCTION / "mirrorbits-sentinel.conf").read_text()
        for i, host in enumerate(sentinels):
            fragment = substitute(fragment, rf"^(\s*- Host:) 192\.0\.2\.{11 + i}:26379$", rf"\1 {host}")
        text += fragment
    conf = tmp / "mirrorbits.conf"
    conf.write_text(text)
    return conf


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    tmp = tmp_path_factory.mktemp("daemon")
    redis = RedisServer().start()
    seed_world(redis.client())
    port = free_port()
    (tmp / "logs").mkdir()
    process = Daemon(go_style(production_config(tmp, port, redis.address), tmp / "mirrorbits.pid"), tmp)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        yield RunningDaemon(port, tmp / "logs", process)
    finally:
        stop(process.proc, timeout=20)  # SIGTERM: the graceful stop
        redis.cleanup()


def ask(port: int, *, tls: bool = False, headers: dict[str, str] | None = None,
        timeout: float = 10) -> dict[str, object]:
    """The JSON answer for FILE, asked from CLIENT_IP, claiming SPOOFED_IP in X-Forwarded-For."""
    conn: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test certificate, on loopback
        conn = http.client.HTTPSConnection("127.0.0.1", port, source_address=(CLIENT_IP, 0),
                                           context=context, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, source_address=(CLIENT_IP, 0),
                                          timeout=timeout)
    try:
        conn.request("GET", FILE, headers={"Accept": "application/json", "X-Forwarded-For": SPOOFED_IP,
                                           **(headers or {})})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200, (response.status, body)
    answer = json.loads(body)
    assert isinstance(answer, dict)
    return answer


def test_the_daemon_alone_believes_any_forwarded_for(daemon: RunningDaemon) -> None:
    """Why the proxy must replace the header and be the only way in."""
    assert ask(daemon.port)["IP"] == SPOOFED_IP


@dataclass
class Proxy:
    http_port: int
    https_port: int


def served_from(answer: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    """(names of the chosen mirrors, {excluded mirror: reason}) of a JSON answer."""
    chosen = answer.get("MirrorList") or []
    excluded = answer.get("ExcludedList") or []
    assert isinstance(chosen, list) and isinstance(excluded, list)
    return [m["Name"] for m in chosen], {m["Name"]: m["ExcludeReason"] for m in excluded}


def start_proxy(args: list[str], tmp: Path, ports: Proxy) -> subprocess.Popen[bytes]:
    with open(tmp / "proxy.out", "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", ports.http_port)
        wait_for_port("127.0.0.1", ports.https_port)
    except TimeoutError:
        stop(proc)
        raise AssertionError((tmp / "proxy.out").read_text(errors="replace")) from None
    return proc


@pytest.fixture(scope="module", params=["nginx", "haproxy"])
def proxy(request: pytest.FixtureRequest, daemon: RunningDaemon,
          tmp_path_factory: pytest.TempPathFactory, tls_pem: Path) -> Iterator[Proxy]:
    """The nginx or HAProxy snippet, run on loopback in front of the daemon."""
    name: str = request.param
    binary = tool(name, name)
    tmp = tmp_path_factory.mktemp(name)
    ports = Proxy(free_port(), free_port())
    placed = {"daemon_port": daemon.port, "http_port": ports.http_port, "https_port": ports.https_port}
    conf = tmp / "proxy.conf"
    if name == "nginx":
        conf.write_text(nginx_site(tls_pem, **placed))
        args = nginx_args(binary, tmp, nginx_main(tmp, conf))
    else:
        conf.write_text(haproxy_config(tls_pem, **placed))
        args = [binary, "-db", "-f", str(conf)]
    proc = start_proxy(args, tmp, ports)
    yield ports
    stop(proc)


def test_proxy_forwards_the_client_and_its_scheme(proxy: Proxy) -> None:
    # Plain HTTP: the client's own address, not what it claimed nor the proxy's; any mirror will do.
    answer = ask(proxy.http_port)
    assert answer["IP"] == CLIENT_IP
    assert served_from(answer) == (["m1"], {})
    # HTTPS: the client must stay on HTTPS, so the HTTP-only mirror gives way to the fallback.
    answer = ask(proxy.https_port, tls=True)
    assert answer["IP"] == CLIENT_IP
    assert served_from(answer) == (["fallback0"], {"m1": "Not HTTPS"})


def test_logrotate_rotates_and_the_daemon_reopens(daemon: RunningDaemon, tmp_path: Path) -> None:
    logrotate = tool("logrotate", "logrotate")
    ask(daemon.port)  # something to rotate
    log = daemon.logdir / "downloads.log"
    assert f"ip:{SPOOFED_IP}" in log.read_text()
    text = (PRODUCTION / "logrotate-mirrorbits").read_text()
    text = substitute(text, r"^/var/log/mirrorbits/\*\.log \{$", f"{daemon.logdir}/*.log {{")
    # What systemctl kill --kill-who=main does, without systemd: the signal to the main process.
    text = substitute(text, r"^(\s*)systemctl kill --kill-who=main --signal=USR1 mirrorbits\.service$",
                      rf"\1kill -USR1 {daemon.process.proc.pid}")
    conf = tmp_path / "mirrorbits"
    conf.write_text(text)
    result = run([logrotate, "-f", "-s", str(tmp_path / "state"), str(conf)])
    assert result.returncode == 0, result.stdout + result.stderr
    rotated = daemon.logdir / "downloads.log.1"  # delaycompress: the newest rotation stays plain
    assert f"ip:{SPOOFED_IP}" in rotated.read_text()
    daemon.process.wait_log("Re-opening logs")
    ask(daemon.port, headers={"X-Forwarded-For": "198.51.100.7"})
    deadline = time.monotonic() + 10
    while "ip:198.51.100.7" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"no new downloads.log line after the rotation:\n{daemon.process.output()}"
        time.sleep(0.05)
    assert "ip:198.51.100.7" not in rotated.read_text()
    assert daemon.process.proc.poll() is None


def test_sigusr1_for_every_process_would_kill_an_embedded_redis(tmp_path: Path) -> None:
    """Why logrotate signals the main process only (systemctl's default is every process of the
    unit): the redis-server the daemon embeds does not handle SIGUSR1, and dies of it."""
    port = free_port()
    proc = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(tmp_path), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port)
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(10) == -signal.SIGUSR1
    finally:
        stop(proc)


def test_socket_unit_activates_the_daemon(tmp_path: Path) -> None:
    """The [Socket] settings of mirrorbits.socket, passed the way systemd passes them."""
    activate = tool("systemd-socket-activate", "systemd")
    unit = (PRODUCTION / "mirrorbits.socket").read_text()
    listen = re.findall(r"^ListenStream=(\S+)$", unit, flags=re.M)
    names = re.findall(r"^FileDescriptorName=(\S+)$", unit, flags=re.M)
    assert listen == ["127.0.0.1:8080"] and names == ["http"], (listen, names)
    redis = RedisServer().start()
    seed_world(redis.client())
    port, configured_port = free_port(), free_port()
    conf = production_config(tmp_path, configured_port, redis.address)
    daemon = Daemon([activate, "--listen", f"127.0.0.1:{port}", f"--fdname={names[0]}",
                     *go_style(conf, tmp_path / "mirrorbits.pid")], tmp_path)
    try:
        wait_for_port("127.0.0.1", port)
        # The first connection waits in the backlog while the daemon starts, then is answered.
        assert ask(port, timeout=60)["IP"] == SPOOFED_IP
        daemon.wait_log("Using the socket passed by systemd")
        with pytest.raises(OSError):  # ListenAddress is ignored
            wait_for_port("127.0.0.1", configured_port, timeout=0.5)
    finally:
        stop(daemon.proc)
        redis.cleanup()


if __name__ == "__main__":
    # Copy each snippet file into its block of the page (after editing the file).
    before = PAGE.read_text()
    after = synced_page(before)
    if after != before:
        PAGE.write_text(after)
    print(f"{PAGE.relative_to(ROOT)}: {'updated' if after != before else 'already up to date'}",
          file=sys.stderr)
