"""A running daemon for the admin tests: real redis-server, real ``mirrorbits daemon`` process with the
admin channel and the SSH manhole, GeoIP databases mapping 127.0.0.0/8 to France (the spec's fixture), and a way to run many CLI command lines in one interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import processes
from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port, wait_for_port
from tests.test_geo import _mmdb_encode

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "sekret"

CITY = {"country": {"iso_code": "FR", "names": {"en": "France"}}, "continent": {"code": "EU"},
        "location": {"latitude": 48.8582, "longitude": 2.3387}}
ASN = {"autonomous_system_number": 64500, "autonomous_system_organization": "Example Networks"}


def write_prefix_mmdb(path: Path, record: dict[str, Any], database_type: str, first_octet: int = 127) -> None:
    """An IPv4 database where only ``<first_octet>.0.0.0/8`` has ``record`` (others: not found)."""
    node_count = 8
    data_ptr = node_count + 16
    tree = b""
    for depth in range(8):
        bit = (first_octet >> (7 - depth)) & 1
        nxt = depth + 1 if depth < 7 else data_ptr
        left, right = (nxt, node_count) if bit == 0 else (node_count, nxt)
        tree += left.to_bytes(3, "big") + right.to_bytes(3, "big")
    metadata = {
        "node_count": ("u32", node_count), "record_size": ("u16", 24), "ip_version": ("u16", 4),
        "database_type": database_type, "languages": ["en"],
        "binary_format_major_version": ("u16", 2), "binary_format_minor_version": ("u16", 0),
        "build_epoch": ("u64", 1700000000), "description": {"en": "test"},
    }
    body = tree + b"\x00" * 16 + _mmdb_encode(record) + b"\xab\xcd\xefMaxMind.com" + _mmdb_encode(metadata)
    path.write_bytes(body)


def make_geo_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_prefix_mmdb(directory / "GeoLite2-City.mmdb", CITY, "GeoLite2-City")
    write_prefix_mmdb(directory / "GeoLite2-ASN.mmdb", ASN, "GeoLite2-ASN")
    return directory


def ssh_keypair(directory: Path, name: str) -> tuple[Path, str]:
    """An Ed25519 key pair written for OpenSSH; returns (private key path, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    path = directory / name
    path.write_bytes(private)
    path.chmod(0o600)
    return path, public


@dataclass
class Result:
    code: int
    out: str
    err: str


class AdminDaemon:
    """The daemon process and helpers to drive it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = RedisServer().start()
        self.rpc_port = free_port()
        self.http_port = free_port()
        self.ssh_port = free_port()
        self.repo = tmp / "repo"
        (self.repo / "sub").mkdir(parents=True)
        (self.repo / "README").write_text("readme")
        (self.repo / "sub" / "file.iso").write_text("iso")
        self.geo = make_geo_dir(tmp / "geo")
        self.key, public = ssh_keypair(tmp, "admin_key")
        self.other_key, _ = ssh_keypair(tmp, "other_key")
        (tmp / "authorized_keys").write_text(public + "\n")
        self.conf = tmp / "mirrorbits.conf"
        self.write_config()
        self.log_path = tmp / "daemon.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.env.pop("MIRRORBITS_CONFIG", None)
        self._batch: subprocess.Popen[str] | None = None
        self.proc = processes.spawn(
            [sys.executable, "-m", "mirrorbits", "daemon", "-config", str(self.conf),
             "-monitor=false", "-p", str(tmp / "mirrorbits.pid")],
            cwd=tmp, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_for_port("127.0.0.1", self.rpc_port, timeout=60)
            deadline = time.monotonic() + 30
            while self.cli(["list"])[0].code != 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the daemon's database never became ready:\n" + self.output())
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def write_config(self, extra: str = "", password: str = PASSWORD, geo: Path | None = None) -> None:
        self.conf.write_text(
            f"Repository: {self.repo}\nRedisAddress: {self.redis.address}\nDataDir: {self.tmp / 'data'}\n"
            f"ListenAddress: 127.0.0.1:{self.http_port}\nRPCListenAddress: 127.0.0.1:{self.rpc_port}\n"
            f"RPCPassword: {password}\nGeoipDatabasePath: {geo or self.geo}\n"
            f"ManholeListenAddress: 127.0.0.1:{self.ssh_port}\n"
            f"ManholeAuthorizedKeys: {self.tmp / 'authorized_keys'}\n{extra}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def base(self, password: str | None = PASSWORD) -> list[str]:
        args = ["-h", "127.0.0.1", "-p", str(self.rpc_port)]
        return args + ["-P", password] if password is not None else args

    def cli(self, *commands: list[str] | dict[str, Any], password: str | None = PASSWORD) -> list[Result]:
        """Run command lines (lists, or dicts with argv/stdin/env) against the daemon, in one process."""
        batch = []
        for c in commands:
            spec = dict(c) if isinstance(c, dict) else {"argv": c}
            if not spec.pop("raw", False):
                spec["argv"] = self.base(password) + list(spec["argv"])
            batch.append(spec)
        runner = self._runner()
        assert runner.stdin is not None and runner.stdout is not None
        runner.stdin.write(json.dumps(batch) + "\n")
        runner.stdin.flush()
        line = runner.stdout.readline()
        assert line, "the CLI runner died"
        return [Result(**r) for r in json.loads(line)]

    def _runner(self) -> subprocess.Popen[str]:
        """One long-lived process running CLI command lines (tests.admin.cli_batch --serve)."""
        if self._batch is None or self._batch.poll() is not None:
            self._batch = processes.spawn([sys.executable, "-m", "tests.admin.cli_batch", "--serve"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          cwd=ROOT, env=self.env)
        return self._batch

    def one(self, *argv: str, stdin: str = "", env: dict[str, str] | None = None,
            password: str | None = PASSWORD) -> Result:
        return self.cli({"argv": list(argv), "stdin": stdin, "env": env or {}}, password=password)[0]

    def run_process(self, argv: list[str], stdin: str = "", env: dict[str, str] | None = None) -> Result:
        """The real console script in its own process (streams, exit status)."""
        proc = subprocess.run([sys.executable, "-m", "mirrorbits", *argv], input=stdin,
                              capture_output=True, text=True, cwd=self.tmp,
                              env=dict(self.env, **(env or {})), timeout=60)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def stop(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None and self._batch.stdout is not None
            self._batch.stdin.close()  # the runner's cue to exit
            processes.stop(self._batch, grace=10)
            self._batch.stdout.close()
        # After an upgrade the daemon is the child named in the pid file, in the same process group.
        processes.stop(self.proc, grace=20)
        self._log.close()
        self.redis.cleanup()


@pytest.fixture(scope="session")
def admin_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminDaemon]:
    d = AdminDaemon(tmp_path_factory.mktemp("admin-daemon"))
    yield d
    d.stop()


@pytest.fixture
def daemon(admin_daemon: AdminDaemon) -> Iterator[AdminDaemon]:
    """The session's daemon with an empty database (and the test config restored afterwards)."""
    admin_daemon.redis.flush()
    admin_daemon.redis.client().set("MIRRORBITS_DB_VERSION", "2")
    original = admin_daemon.conf.read_text()
    yield admin_daemon
    if admin_daemon.conf.read_text() != original:
        admin_daemon.conf.write_text(original)
        admin_daemon.cli(["reload"], ["reload"], password="newpass")
        admin_daemon.cli(["reload"])
