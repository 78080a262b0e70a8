"""``?mirrorlist`` and ``?mirrorstats`` in headless Chromium (Debian's ``chromium``): screenshots in
``test-artifacts/`` and the rendered DOM (``--dump-dom``) checked for text and table rows.

No internet in tests: the Leaflet map cannot load, so this also shows the pages are complete without
it (and without JavaScript errors blocking anything, since everything is server-side HTML/SVG).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, threads

from mirrorbits.redis import schema
from tests.web.test_http_cases import RedirectorTestCase, d, put_file, put_mirror
from tests.web.test_pages import Tables

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(binary: str, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    profile = tempfile.mkdtemp(prefix="mirrorbits-chromium-")
    try:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Browser(RedirectorTestCase):
    timeout = 120

    def setUp(self) -> None:
        binary = chromium()
        if binary is None:
            print("SKIP: chromium is not installed (apt-get install -y chromium)")
            from twisted.trial.unittest import SkipTest

            raise SkipTest("chromium is not installed (apt-get install -y chromium)")
        self.chromium = binary
        super().setUp()
        put_file(self.r, sha256="12" * 32)
        put_mirror(self.r, 1, "http://a.mirror/", countries="FR DE", continentCode="EU",
                   latitude="48.85", longitude="2.35")
        put_mirror(self.r, 2, "https://c.mirror/", countries="US", continentCode="NA")
        put_mirror(self.r, 3, "http://d.mirror/", countries="IT", enabled="0")
        t = time.gmtime()
        day = (t.tm_year, t.tm_mon, t.tm_mday)
        for mid, n, b in (("1", 12, 123456789), ("2", 30, 987654321)):
            self.r.hset(schema.stats_mirror_key(*day), mid, n)
            self.r.hset(schema.stats_mirror_bytes_key(*day), mid, b)
        ARTIFACTS.mkdir(exist_ok=True)

    async def load(self, url: str, name: str) -> Tables:
        shot = ARTIFACTS / f"{name}.png"
        if shot.exists():
            shot.unlink()
        res = await threads.deferToThread(run_chromium, self.chromium,
                                          ["--window-size=1280,1000", f"--screenshot={shot}", url])
        self.assertTrue(shot.exists() and shot.stat().st_size > 10_000,
                        f"no screenshot: {res.stderr.decode(errors='replace')[-2000:]}")
        dom = await threads.deferToThread(run_chromium, self.chromium, ["--dump-dom", url])
        self.assertEqual(dom.returncode, 0, dom.stderr.decode(errors="replace")[-2000:])
        return Tables(dom.stdout.decode())

    def test_pages_in_chromium(self) -> defer.Deferred[None]:
        async def run() -> None:
            h = await self.harness()
            base = f"http://127.0.0.1:{h.port.getHost().port}"
            page = await self.load(f"{base}/testy.tgz?mirrorlist", "mirrorlist")
            self.assertIn("Mirrorlist", page.all_text)
            self.assertIn("12" * 32, page.all_text)
            self.assertEqual(len(page.tables["mirrors"]), 2)
            self.assertEqual(page.tables["excluded"][0][-1], "Disabled")
            self.assertIn("Random: 100%", page.all_text)
            page = await self.load(f"{base}/?mirrorstats", "mirrorstats")
            rows = page.tables["mirrorstats"]
            self.assertEqual([(r[0], r[2]) for r in rows], [("m2", "30"), ("m1", "12"), ("m3", "0")])
            self.assertIn("941.9 MiB", page.all_text)
            self.assertIn("Since 00:00 UTC: 42 downloads", page.all_text)
            self.assertIn("map", page.ids)  # present, hidden while Leaflet is unavailable
        return d(run())


