"""Several images at once on the CPU (dukd_cli.upscale.lanes): the plan, the per-lane threads, and the same files,
reports and failures as one image at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dukd_cli.errors import DukdError
from dukd_cli.upscale import lanes
from dukd_cli.upscale.paths import upscale_paths

CPU = torch.device("cpu")


@pytest.fixture
def tiny(tiny_x2):
    return tiny_x2


def _photo(h: int, w: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    if mode == "RGBA":
        im.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
    elif mode != "RGB":
        im = im.convert(mode)
    return im


def _folder(root: Path) -> Path:
    d = root / "in"
    d.mkdir()
    _photo(24, 32, 0).save(d / "a.png")
    _photo(20, 18, 1, "RGBA").save(d / "b.png")
    _photo(16, 40, 2, "L").save(d / "c.png")
    (d / "d.png").write_bytes(b"not a png")  # fails, the others go on
    _photo(30, 22, 3).save(d / "e.jpg", quality=90)
    _photo(12, 12, 4).save(d / "f.webp")
    return d


# --------------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------------


def test_plan_auto_lanes_for_small_images(tiny, tmp_path):
    _, m = tiny
    d = _folder(tmp_path)
    srcs = sorted(d.iterdir())
    p = lanes.plan(m, srcs, device=CPU, precision="fp32", tile="auto", threads=4)
    assert (p.lanes, p.threads) == (4, 1)
    p = lanes.plan(m, srcs, device=CPU, precision="fp32", tile="auto", threads=16)
    assert p.lanes == min(len(srcs), lanes.MAX_AUTO_LANES) and p.threads == 16 // p.lanes
    # Explicit --jobs wins (capped by the images), threads shared out.
    p = lanes.plan(m, srcs, device=CPU, precision="fp32", tile="auto", jobs=3, threads=7)
    assert (p.lanes, p.threads) == (3, 2)
    assert lanes.plan(m, srcs[:2], device=CPU, precision="fp32", tile="auto", jobs=5, threads=4).lanes == 2


@pytest.mark.parametrize(
    ("why", "kwargs", "n_files"),
    [
        ("one image", {}, 1),
        ("one core", {"threads": 1}, 3),
        ("tiles of --tile size", {"tile": 64}, 3),
        ("--jobs 1", {"jobs": 1}, 3),
    ],
)
def test_plan_one_lane(tiny, tmp_path, why, kwargs, n_files):
    _, m = tiny
    srcs = []
    for i in range(n_files):
        _photo(16, 16, i).save(tmp_path / f"{i}.png")
        srcs.append(tmp_path / f"{i}.png")
    opts = {"device": CPU, "precision": "fp32", "tile": "auto", "threads": 4, **kwargs}
    p = lanes.plan(m, srcs, **opts)
    assert p.lanes == 1 and why in p.reason


def test_plan_keeps_big_images_to_one_lane(tiny, tmp_path, monkeypatch):
    _, m = tiny
    for i, (h, w) in enumerate([(16, 16), (40, 90), (20, 20)]):
        _photo(h, w, i).save(tmp_path / f"{i}.png")
    srcs = sorted(tmp_path.glob("*.png"))
    # The largest side a lane may hold whole shrinks as the lanes multiply.
    monkeypatch.setattr(lanes, "whole_side", lambda model, dev, prec, n: 200 // n)
    assert lanes.plan(m, srcs, device=CPU, precision="fp32", tile="auto", threads=4).lanes == 2
    monkeypatch.setattr(lanes, "whole_side", lambda model, dev, prec, n: 160 // n)
    p = lanes.plan(m, srcs, device=CPU, precision="fp32", tile="auto", threads=4)
    assert p.lanes == 1 and "90 px" in p.reason


def test_whole_side_divides_the_budget(tiny):
    _, m = tiny
    one, four = lanes.whole_side(m, CPU, "fp32", 1), lanes.whole_side(m, CPU, "fp32", 4)
    assert one is not None and four is not None and four <= one


def test_plan_refuses_jobs_off_the_cpu(tiny, tmp_path):
    _, m = tiny
    _photo(16, 16, 0).save(tmp_path / "a.png")
    _photo(16, 16, 1).save(tmp_path / "b.png")
    srcs = sorted(tmp_path.glob("*.png"))
    with pytest.raises(DukdError, match="CPU only"):
        lanes.plan(m, srcs, device=torch.device("cuda"), precision="fp32", tile="auto", jobs=2)
    p = lanes.plan(m, srcs, device=torch.device("cuda"), precision="fp32", tile="auto", threads=4)
    assert p.lanes == 1


@pytest.mark.parametrize("bad", ["0", "-2", "many", "1.5"])
def test_parse_jobs(bad):
    assert lanes.parse_jobs("auto") is None and lanes.parse_jobs("3") == 3
    with pytest.raises(DukdError, match="--jobs must be"):
        lanes.parse_jobs(bad)


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------


def test_run_sets_threads_per_lane_and_keeps_order():
    main_threads = torch.get_num_threads()
    seen = []

    def work(i):
        seen.append(threading.current_thread().name)
        return i, torch.get_num_threads()

    out = [(item, fut.result()) for item, fut in lanes.run(list(range(12)), work, lanes=3, threads=1)]
    assert [item for item, _ in out] == list(range(12))
    assert all(res == (item, 1) for item, res in out)
    assert {n.split("_")[0] for n in seen} == {"dukd-lane"} and len(set(seen)) <= 3
    assert torch.get_num_threads() == main_threads  # the caller's threads are untouched


def test_run_stops_early_without_running_everything():
    started = []
    gate = threading.Event()

    def work(i):
        started.append(i)
        gate.wait(5)
        return i

    gen = lanes.run(list(range(50)), work, lanes=2, threads=1)
    gate.set()
    first = next(gen)
    assert first[0] == 0
    gen.close()  # cancels what has not started, waits for what runs
    assert len(started) <= 2 * 2 + 2 < 50


def test_run_passes_errors_to_the_caller():
    def work(i):
        if i == 2:
            raise ValueError("bad item")
        return i

    res = {}
    for item, fut in lanes.run([0, 1, 2, 3], work, lanes=2, threads=1):
        res[item] = repr(fut.exception()) if fut.exception() else fut.result()
    assert res == {0: 0, 1: 1, 2: "ValueError('bad item')", 3: 3}


# --------------------------------------------------------------------------------------------------
# upscale_paths: lanes write what one image at a time writes
# --------------------------------------------------------------------------------------------------


def test_lanes_match_one_at_a_time(tiny, tmp_path):
    _, m = tiny
    d = _folder(tmp_path)
    (tmp_path / "o1").mkdir()
    (tmp_path / "o2").mkdir()
    for out in ("o1", "o2"):  # an existing output: skipped by both
        (tmp_path / out / "f.webp").write_bytes(b"previous")
    results = {}
    for out, parallel in (("o1", 1), ("o2", 3)):
        said: list = []
        s = upscale_paths(
            m, [d], tmp_path / out, parallel=parallel, report=lambda k, msg, said=said: said.append((k, msg))
        )
        results[out] = (s, said)
    (s1, said1), (s2, said2) = results["o1"], results["o2"]
    assert s1.lanes == 1 and s2.lanes == 3
    assert [(j.source.name, j.status) for j in s1.jobs] == [(j.source.name, j.status) for j in s2.jobs]
    assert [j.status for j in s2.jobs] == ["done", "done", "done", "failed", "done", "skipped"]
    # The same reports, in the same order (the lanes finish in any order; reports follow the files).
    assert said1 == [(k, msg.replace(str(tmp_path / "o2"), str(tmp_path / "o1"))) for k, msg in said2]
    assert not s1.ok and not s2.ok
    for name in ("a.png", "b.png", "c.png", "e.jpg"):
        with Image.open(tmp_path / "o1" / name) as i1, Image.open(tmp_path / "o2" / name) as i2:
            assert (i1.mode, i1.size) == (i2.mode, i2.size)
            a, b = np.asarray(i1).astype(int), np.asarray(i2).astype(int)
            # The same pixels, up to float32's last bit before rounding (JPEG: a sample that moved by
            # one level can move a block's coefficients, so a looser bound and a mean).
            if name.endswith(".png"):
                assert np.abs(a - b).max() <= 1, name
            else:
                assert np.abs(a - b).max() <= 8 and np.abs(a - b).mean() < 0.05, name
    assert (tmp_path / "o2" / "f.webp").read_bytes() == b"previous"
    assert not [p for p in (tmp_path / "o2").iterdir() if p.name.startswith(".")]


def test_auto_uses_lanes_on_several_cores(tiny, tmp_path):
    _, m = tiny
    d = _folder(tmp_path)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        s = upscale_paths(m, [d], tmp_path / "o")
        assert s.lanes == 2
        torch.set_num_threads(1)
        s = upscale_paths(m, [d], tmp_path / "o1")
        assert s.lanes == 1
    finally:
        torch.set_num_threads(old)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        p.name for p in (tmp_path / "o1").iterdir()
    )


def test_cli_jobs_option(tiny, tmp_path, run_dukd):
    w, _ = tiny
    d = _folder(tmp_path)
    opts = ["--model", "tiny", "--scale", "2", "--weights", str(w), "--arg", "n_feats=8"]
    for bad in ("0", "x"):
        code, _, err = run_dukd("upscale", d, "-o", tmp_path / "bad", "--jobs", bad, *opts)
        assert code != 0 and "--jobs must be" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()
    code, _, err = run_dukd("upscale", d, "-o", tmp_path / "j2", "-j", "2", *opts)
    assert code == 1 and "d.png" in err  # the one bad file
    assert len(list((tmp_path / "j2").iterdir())) == 5
