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


# --------------------------------------------------------------------------------------------
# 2. Nothing stale: temporary names carry the PID; a later run removes those of dead processes
# --------------------------------------------------------------------------------------------


def _kill_inside(env, args, point: str, root: Path) -> None:
    marker = root / f"paused-{point}"
    proc = _start(env, args, {"DUKD_TEST_PAUSE": point, "DUKD_TEST_PAUSE_FILE": str(marker)})
    _wait_for(marker.is_file, proc, f"the write to pause at '{point}'")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    marker.unlink()


def _dotted(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_upscale_killed_inside_the_write_leaves_nothing_after_the_next_run(env, tiny_x2, run_dukd):
    w, _ = tiny_x2
    img = _images(env["root"] / "in", n=1, size=16) / "0.png"
    out = env["root"] / "out"
    args = ["upscale", img, "--model", "tiny", "--arg", "n_feats=8", "--scale", "2", "--weights", w, "-o", out / "img07.png"]
    _kill_inside(env, args, "atomic", env["root"])
    left = _dotted(out)
    assert len(left) == 1 and left[0].startswith(".img07.tmp-"), left  # what kill -9 leaves
    code, _, err = run_dukd(*args[:-1], out / "other.png")
    assert code == 0, err
    assert _dotted(out) == [] and sorted(p.name for p in out.iterdir()) == ["other.png"]


def test_export_killed_inside_the_write_leaves_nothing_after_the_next_run(env, tiny_x2, run_dukd):
    w, _ = tiny_x2
    dest = env["root"] / "exp" / "m"
    args = ["export", "--model", "tiny", "--arg", "n_feats=8", "--scale", "2", "--weights", w, "-o", dest, "--format", "safetensors"]
    _kill_inside(env, args, "export", env["root"])
    left = _dotted(dest.parent)
    assert len(left) == 1 and left[0].startswith(".m.tmp-"), left
    code, _, err = run_dukd(*args[:-3], env["root"] / "exp" / "n", "--format", "safetensors")
    assert code == 0, err
    assert _dotted(dest.parent) == [] and sorted(p.name for p in dest.parent.iterdir()) == ["n"]


def test_a_living_writers_temporary_file_is_kept(tmp_path):
    from dukd_cli import stale

    ours = tmp_path / f"{stale.temp_prefix('a')}x.png"
    ours.write_bytes(b"in progress")
    foreign = tmp_path / ".b.tmp-abc.png"  # no PID: not provably dead, kept
    foreign.write_bytes(b"?")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".c.tmp-{dead.pid}-q.png"
    gone.write_bytes(b"partial")
    assert stale.sweep(tmp_path, once=False) == [gone.name]
    assert ours.exists() and foreign.exists()
