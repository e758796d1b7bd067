"""The console entry point ends without Python's teardown, yet loses nothing (dukd_cli.runtime.fastexit)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from dukd_cli.runtime import fastexit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, tmp_path, env: dict | None = None, args: tuple = ()) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    full_env = {k: v for k, v in os.environ.items() if k != fastexit.ENV}
    full_env.update({"PYTHONPATH": ROOT, **(env or {})})
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=full_env, timeout=120
    )


WORK = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from dukd_cli.runtime.fastexit import exit_now
out = Path(sys.argv[1])
def late(name, delay):
    time.sleep(delay)
    (out / name).write_text("done")
pool = ThreadPoolExecutor(1)
pool.submit(late, "pool", 0.3)  # queued work of a pool nobody shut down
threading.Thread(target=late, args=("thread", 0.3)).start()  # a non-daemon thread
atexit.register(lambda: (out / "atexit").write_text("ran"))
print("x" * 100000)  # more than a pipe buffer holds
sys.stdout.write("tail")
exit_now(3)
"""


def test_exit_now_keeps_threads_atexit_and_output(tmp_path):
    res = _python(WORK, tmp_path, args=(str(tmp_path),))
    assert res.returncode == 3, res.stderr
    assert res.stdout == "x" * 100000 + "\ntail"
    for name, text in (("pool", "done"), ("thread", "done"), ("atexit", "ran")):
        assert (tmp_path / name).read_text() == text, name


def test_full_exit_setting_ends_normally(tmp_path):
    code = """
    import sys
    from dukd_cli.runtime.fastexit import exit_now
    class Late:
        def __del__(self):  # runs only in Python's own teardown
            sys.stdout.write("finalised")
    keep = Late()
    exit_now(4)
    """
    assert _python(code, tmp_path, env={fastexit.ENV: "1"}).stdout == "finalised"
    res = _python(code, tmp_path)
    assert res.returncode == 4 and res.stdout == ""  # the teardown was skipped


def test_steps_aside_when_observed(monkeypatch):
    monkeypatch.delenv(fastexit.ENV, raising=False)
    monkeypatch.setattr(fastexit, "foreign", set())  # no plugin code ran (earlier tests load the test plugin)
    assert fastexit.wanted()
    old = sys.gettrace()
    sys.settrace(lambda *a: None)
    try:
        assert fastexit.observed() and not fastexit.wanted()
        with pytest.raises(SystemExit) as exc:
            fastexit.exit_now(5)  # a plain SystemExit: the tracer gets its teardown
        assert exc.value.code == 5
    finally:
        sys.settrace(old)
    assert not fastexit.wanted({fastexit.ENV: "yes"}) and fastexit.wanted({fastexit.ENV: "0"})


def test_exit_code(capsys):
    assert fastexit.exit_code(None) == 0 and fastexit.exit_code(2) == 2
    assert fastexit.exit_code("a message") == 1
    assert capsys.readouterr().err == "a message\n"


def test_console_entry_point(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop(fastexit.ENV, None)
    run = [sys.executable, "-m", "dukd_cli"]
    res = subprocess.run([*run, "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("dukd ")
    res = subprocess.run(
        [*run, "upscale", str(tmp_path / "missing.png")], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 1 and "missing.png" in res.stderr
    # A profiler still gets its output written.
    prof = tmp_path / "prof.out"
    res = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "dukd_cli", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0 and prof.stat().st_size > 0
