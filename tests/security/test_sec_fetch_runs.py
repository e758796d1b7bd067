"""Two fetches of one data set, and a fetch killed inside extraction: child processes paused at the
third archive member (hostile.PAUSE_IN_EXTRACTION)."""

from __future__ import annotations

import os
import signal

import pytest
from hostile import PAUSE_IN_EXTRACTION, child, flat, set5_members, tar_gz, wait_for

from dukd_cli.data.benchmarks import find_set


@pytest.fixture
def paused(env, monkeypatch):
    """(archive, marker, go): a Set5 archive, and the files the paused child writes and waits for."""
    archive = env / "Set5_HR.tar.gz"
    archive.write_bytes(tar_gz(set5_members()))
    marker, go = env / "paused", env / "go"
    monkeypatch.setenv("PAUSE_MARKER", str(marker))
    monkeypatch.setenv("PAUSE_GO", str(go))
    return archive, marker, go


def test_a_second_fetch_of_one_set_waits_or_names_the_holder(env, bench_cache, paused, run_dukd):
    archive, marker, go = paused
    holder = child(["data", "fetch", "set5", "--source", archive], hook=PAUSE_IN_EXTRACTION)
    waiter = None
    try:
        wait_for(marker.exists, holder, "the first fetch paused inside extraction")
        log = env / "waiter.log"
        with open(log, "w") as f:
            waiter = child(["data", "fetch", "set5", "--source", archive], output=f)
        wait_for(lambda: "waiting for it to finish" in log.read_text(), waiter, "the waiting line")
        assert f"process {holder.pid} is already fetching Set5" in flat(log.read_text())
        code, _, err = run_dukd("data", "fetch", "set5", "--source", archive, "--no-wait")
        assert code == 1 and "Traceback" not in err, err
        assert f"process {holder.pid} is already fetching Set5" in flat(err)
        go.touch()  # the first one goes on and installs the set; then the second finds it there
        assert holder.wait(timeout=120) == 0, holder.stdout.read()
        assert waiter.wait(timeout=120) == 0, log.read_text()
    finally:
        for p in (holder, waiter):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert "Set5: already at" in flat(log.read_text())
    assert len(find_set("set5").images()) == 5
    assert not list(bench_cache.glob(".fetch-*"))


def test_a_fetch_killed_inside_extraction_leaves_nothing_the_next_one_keeps(
    env, bench_cache, paused, run_dukd
):
    archive, marker, _ = paused
    proc = child(["data", "fetch", "set5", "--source", archive], hook=PAUSE_IN_EXTRACTION)
    try:
        wait_for(marker.exists, proc, "the fetch paused inside extraction")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stale = list(bench_cache.glob(".fetch-*"))
    assert len(stale) == 1 and f"-{proc.pid}-" in stale[0].name  # the killed one's, with its PID
    assert list(stale[0].rglob("*.png"))  # it was killed with extracted files on disk
    code, out, err = run_dukd("data", "fetch", "set5", "--source", archive)
    assert code == 0, err
    assert f"left by process {proc.pid} which is gone" in flat(out)
    assert not list(bench_cache.glob(".fetch-*"))
    assert len(find_set("set5").images()) == 5
