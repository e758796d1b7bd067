"""Issue 18, part B: one writer per run directory, nothing stale after a kill, bounds checked before
work, every value validated where it enters, no data lost at the fast exit, and honest messages.

Each test builds the attack (a second process, a kill inside a write, an absurd value) and asserts
what the user sees: one line, a non-zero exit, and nothing half-written or left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import (  # tests/ is on sys.path (pytest's rootdir import)
    _distill_args,
    _images,
    _one_line,
    _subprocess_env,
    _wait_for,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tiny_plugin, tmp_path):
    return {"data": _images(tmp_path / "data"), "cache": tmp_path / "cache", "root": tmp_path, "plugin": tiny_plugin}


def _start(env, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    e = _subprocess_env(env)
    e.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "dukd_cli", *map(str, args)], env=e, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _logged(run: Path, n: int = 1):
    def check() -> bool:
        m = run / "metrics.jsonl"
        return m.is_file() and len(m.read_text().splitlines()) >= n

    return check


# --------------------------------------------------------------------------------------------
# 1. One writer per run directory
# --------------------------------------------------------------------------------------------


def test_second_distill_on_a_busy_run_directory_is_refused(env, run_dukd):
    run = env["root"] / "run"
    args = _distill_args(env["data"], env["cache"], run, iters=100000, log_every=1, save_every=2)
    first = _start(env, args)
    try:
        _wait_for(lambda: (run / "state.pt").is_file(), first, "the first checkpoint")
        lines = (run / "metrics.jsonl").read_text().splitlines()
        # A second process on the same --out, and a --resume of it, while the first one runs.
        second = subprocess.run(
            [sys.executable, "-m", "dukd_cli", *args], env=_subprocess_env(env), text=True,
            capture_output=True, timeout=300,
        )  # fmt: skip
        line = _one_line(second.stderr)
        assert second.returncode == 1 and f"PID {first.pid}" in line and "in use" in line, line
        code, _, err = run_dukd("distill", "--resume", run)
        line = _one_line(err)
        assert code == 1 and f"PID {first.pid}" in line
        # The refused runs wrote nothing: the metrics still come from one process only.
        iters = [int(x.split('"iteration": ')[1].split(",")[0]) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert iters == sorted(set(iters)) and len(iters) >= len(lines)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    # The kernel released the lock of the killed process: the run resumes.
    code, _, err = run_dukd("distill", "--resume", run, "--iters", "3")
    assert code == 0 or "below the" in err, err


def test_refused_run_leaves_no_directory(env, run_dukd):
    from dukd_cli.runlock import RunLock

    run = env["root"] / "busy"
    with RunLock(run):
        code, _, err = run_dukd(*_distill_args(env["data"], env["cache"], run, iters=1))
        assert code == 1 and f"PID {os.getpid()}" in _one_line(err)
    assert not run.exists()  # the lock's own directory went away with it
