"""The download log, log rotation, and lines written by real requests."""

from __future__ import annotations

import os
import re
import signal
import tempfile

from twisted.internet import defer, reactor, task

from mirrorbits.cache import candidate_from_mirror
from mirrorbits.config import Config, ConfigHolder
from mirrorbits.geo import GeoRecord
from mirrorbits.model import FileInfo, Mirror
from mirrorbits.selection import Chosen
from mirrorbits.web.downloadlog import DownloadLog, format_line, header, prefix
from mirrorbits.web.render import Results
from tests.web.test_http_cases import RedirectorTestCase, d, put_file, put_mirror


def results(path: str = "/test/file.tgz", ip: str = "192.168.0.1", fallback: bool = False,
            names: tuple[str, ...] = ("m1",), client_asn: int = 444) -> Results:
    chosen = [Chosen(candidate_from_mirror(Mirror(id=i, name=n, asnum=444, country_codes="FR UK DE")),
                     "http://x/", 99.0) for i, n in enumerate(names, 1)]
    return Results(FileInfo(path), ip, GeoRecord(as_num=client_asn), chosen, [], fallback)


def test_success_line() -> None:
    line = format_line("JSON", 200, "GET", results(fallback=True))
    assert line == ('JSON 200 GET "/test/file.tgz" ip:192.168.0.1 mirror:m1 fallback:true sameasn:444 '
                    'distance:99.00km countries:FR,UK,DE')
    line = format_line("REDIRECT", 302, "GET", results(client_asn=1))
    assert line.endswith("mirror:m1 asn:444 distance:99.00km countries:FR,UK,DE")


def test_other_statuses() -> None:
    assert format_line("JSON", 404, "GET", results()) == 'JSON 404 GET "/test/file.tgz" ip:192.168.0.1'
    r = results(path="", ip="", names=("m1", "m2"))
    assert format_line("JSON", 500, "GET", r, "test error") == 'JSON 500 GET "" ip: mirror:m1 error:test error'
    assert format_line("JSON", 501, "GET", results(), "test error") == \
        'JSON 501 GET "/test/file.tgz" ip:192.168.0.1 error:test error'
    assert format_line("JSON", 501, "GET", results()).endswith("error:<unknown>")
    assert '"/a%s%d"' in format_line("JSON", 404, "GET", results(path="/a%s%d"))


def test_prefix_and_header_format() -> None:
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} ", prefix(1748757600.25))
    assert prefix(1748757600.25).endswith(".250000 ")
    lines = header(0, "host1").splitlines()
    assert re.fullmatch(r"# Log file created at: \d{4}/\d\d/\d\d \d\d:\d\d:\d\d", lines[0])
    assert lines[1] == "# Running on machine: host1"
    assert re.fullmatch(r"# Binary: Built with \S+ \S+ for \S+/\S+", lines[2])


def test_header_only_for_new_or_empty_files_and_reopen() -> None:
    tmp = tempfile.mkdtemp()
    holder = ConfigHolder(Config(Repository="/", LogDir=tmp))
    dl = DownloadLog(holder)
    dl.write("JSON", 404, "GET", results())  # disabled until opened: a no-op
    path = os.path.join(tmp, "downloads.log")
    assert not os.path.exists(path)
    dl.open()
    dl.write("JSON", 404, "GET", results())
    text = open(path).read()
    assert text.count("# ") == 3 and text.endswith('JSON 404 GET "/test/file.tgz" ip:192.168.0.1\n')
    assert oct(os.stat(path).st_mode & 0o777) in (oct(0o664 & ~m) for m in (0o022, 0o002, 0o000, 0o027))
    dl.reopen()  # existing non-empty file: no new header
    assert open(path).read().count("# Log file created at") == 1
    os.rename(path, path + ".1")  # logrotate, then USR1 → reopen
    dl.write("JSON", 404, "GET", results(path="/old"))
    dl.reopen()
    dl.write("JSON", 404, "GET", results(path="/new"))
    assert '"/old"' in open(path + ".1").read()
    new = open(path).read()
    assert new.startswith("# Log file created at") and '"/new"' in new and '"/old"' not in new
    holder.swap(holder.current.replace(LogDir=""))
    dl.open()
    assert not dl.enabled
    dl.close()


class LinesFromRequests(RedirectorTestCase):
    def test_log_lines_and_sigusr1(self) -> defer.Deferred[None]:
        async def run() -> None:
            put_file(self.r)
            put_mirror(self.r, 42, "http://example.mirror/", countries="FR")
            logdir = os.path.join(self.tmp, "logs")
            os.makedirs(logdir)
            h = await self.harness(LogDir=logdir)
            dl = h.app.get_download_log()
            dl.startService()
            self.addCleanup(dl.stopService)
            # SIGUSR1 is the lifecycle's (the one owner of the process's signals).
            lifecycle = h.app.get_lifecycle()
            lifecycle.install_signal_handlers()
            self.addCleanup(lifecycle.signals.restore)
            await h.request("/testy.tgz", headers={"X-Forwarded-For": "10.0.0.1"})
            await h.request("/testy.tgz?mirrorlist")  # no line
            await h.request("/testy.tgz?sha256")  # no line
            await h.request("/nope")  # 404 on the path: no line
            h.set_config(OutputMode="json")
            await h.request("/testy.tgz", method="HEAD", headers={"X-Forwarded-For": "10.0.0.2"})
            path = os.path.join(logdir, "downloads.log")
            body = [ln for ln in open(path).read().splitlines() if not ln.startswith("#")]
            self.assertEqual([ln[27:] for ln in body], [
                'REDIRECT 302 GET "/testy.tgz" ip:10.0.0.1 mirror:m42 asn:0 distance:0.00km countries:FR',
                'JSON 200 HEAD "/testy.tgz" ip:10.0.0.2 mirror:m42 asn:0 distance:0.00km countries:FR',
            ])
            os.rename(path, path + ".1")
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):
                if os.path.exists(path):
                    break
                await task.deferLater(reactor, 0.01, lambda: None)
            await h.request("/testy.tgz", headers={"X-Forwarded-For": "10.0.0.3"})
            self.assertIn("ip:10.0.0.3", open(path).read())
            self.assertNotIn("ip:10.0.0.3", open(path + ".1").read())
        return d(run())


