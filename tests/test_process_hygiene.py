"""The test suite's own process hygiene: a fixture's server is stopped with its whole process group,
even a child that ignores SIGTERM, and a run that leaves a process behind fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures import processes

ROOT = Path(__file__).resolve().parents[1]


def test_stop_ends_the_group_even_what_ignores_sigterm() -> None:
    # A leader and its child that both ignore SIGTERM, as an rsync daemon's connection child does
    # in effect: the group is SIGKILLed after the grace period, the child included.
    proc = processes.spawn(["sh", "-c", "trap '' TERM; sleep 300 & wait"])
    deadline = time.monotonic() + 10
    while len(processes.group_members(proc.pid)) < 2:
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.01)
    started = time.monotonic()
    code = processes.stop(proc, grace=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert code == -9
    assert processes.group_members(proc.pid) == []


def test_stop_of_a_process_that_ends_on_sigterm_waits_no_grace() -> None:
    proc = processes.spawn(["sleep", "300"])
    started = time.monotonic()
    assert processes.stop(proc, grace=30) == -15
    assert time.monotonic() - started < 5


def test_a_run_that_leaves_a_process_fails(tmp_path: Path) -> None:
    leaky = tmp_path / "test_leaky.py"
    leaky.write_text("import subprocess\n\n"
                     "def test_leaks():\n"
                     "    subprocess.Popen(['sleep', '300'])\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), str(leaky)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "1 passed" in run.stdout, run.stdout + run.stderr
    assert "1 process(es) started by the tests outlived them (killed now)" in run.stdout, run.stdout
    assert "sleep 300" in run.stdout
    assert run.returncode == 1
