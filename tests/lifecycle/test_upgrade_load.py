"""The lifecycle on real processes: upgrades and reloads under load, SIGTERM after a burst.

Every request is a GET of a file one mirror carries, so each answer is a 302 that the daemon counts
in ``STATS_TOTAL``; the counters must equal the 302s the clients received.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.fixtures.redis import RedisServer
from tests.fixtures.servers import free_port, wait_for_port
from tests.lifecycle.helpers import (
    Daemon,
    LoadClient,
    burst,
    check_load_results,
    go_style,
    kill_all,
    redirects,
    stats_total,
    subreaper,
    wait_exit,
    write_config,
)


def test_three_upgrades_and_three_reloads_under_load(tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    conf = write_config(tmp_path, port, redis)
    pidfile = tmp_path / "mirrorbits.pid"
    pids: list[int] = []
    with subreaper():
        d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
        pids.append(d.proc.pid)
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            assert redirects(port)
            load = LoadClient(port, rate=650, keepalive=16, fresh=16).start()
            t0 = time.monotonic()
            time.sleep(2)
            exits = []
            for i in range(3):
                old = d.current_pid()
                os.kill(old, signal.SIGUSR2)
                new = d.wait_pid_change(old)
                pids.append(new)
                exits.append(wait_exit(old))
                time.sleep(0.5)
                # a live change and a reload; the daemon must keep serving through it
                conf.write_text(conf.read_text() + f"MaxLinkHeaders: {5 + i}\n")
                os.kill(new, signal.SIGHUP)
                d.wait_log("SIGHUP Received: Reloading configuration...", count=i + 1)
                time.sleep(1.0)
            time.sleep(max(0.0, 20.0 - (time.monotonic() - t0)))
            results = load.stop()
            final = d.current_pid()
            os.kill(final, signal.SIGTERM)
            exits.append(wait_exit(final))
        finally:
            kill_all(pids)
    out = d.output()
    print(f"{results.total} requests in {results.ended - results.started:.1f}s "
          f"({results.rate:.0f}/s): {dict(results.statuses)} errors {dict(results.errors)}; "
          f"per second {sorted(results.per_second.items())}")
    assert len(set(pids)) == 4, out[-3000:]
    assert exits == [0, 0, 0, 0], out[-3000:]
    assert out.count("Asking parent to quit") == 3
    check_load_results(results, redis, out)


def test_sigterm_right_after_a_burst_loses_no_download(tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    conf = write_config(tmp_path, port, redis)
    pidfile = tmp_path / "mirrorbits.pid"
    d = Daemon(go_style(conf, pidfile), tmp_path, pidfile=pidfile)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        assert redirects(port)
        sent = False

        def progress(done: int) -> None:
            nonlocal sent
            if done >= 400 and not sent:  # stop while ~half the burst is still on its way
                sent = True
                d.proc.send_signal(signal.SIGTERM)

        results = burst(port, 800, concurrency=40, on_progress=progress)
        assert d.proc.wait(30) == 0, d.output()[-3000:]
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
    print(f"burst: {dict(results.statuses)} errors {dict(results.errors)}")
    # Requests the daemon accepted were all answered; later ones found the port closed.
    assert set(results.errors) <= {"refused"}, (
        [e for e in results.examples if not e.startswith("refused")], d.output()[-3000:])
    assert results.statuses[302] >= 400
    assert stats_total(redis) == results.statuses[302], d.output()[-3000:]
    assert "Saving stats" in d.output()
    assert not (tmp_path / "mirrorbits.pid").exists()
