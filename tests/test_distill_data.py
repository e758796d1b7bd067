"""Training data: layouts, the LR cache, aligned patches, the deterministic sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dukd_cli.data.discover import discover
from dukd_cli.data.imresize import imresize, modcrop
from dukd_cli.distill import data as D
from dukd_cli.errors import DukdError


def _img(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 3 + y) % 256, (y * 5) % 256, (x * y) % 256], -1).astype(np.float64)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_hr_folder_recursive_skips_lr_dirs_and_small_images(tmp_path):
    root = tmp_path / "data"
    _save(root / "a.png", _img(40, 44, 0))
    _save(root / "sub" / "b.png", _img(36, 36, 1))
    _save(root / "small.png", _img(20, 40, 2))  # LR 10x20 at x2: smaller than an 16 px patch
    _save(root / "LR" / "a.png", _img(20, 22, 3))  # an LR folder is not HR data
    ts = D.prepare([str(root)], 2, 16, tmp_path / "cache")
    names = sorted(it.name.split("/data/")[1] for it in ts.items)
    assert names == ["a.png", "sub/b.png"]
    assert len(ts.skipped) == 1 and ts.skipped[0].endswith("small.png")
    # what to type to keep them all: the smallest LR side found (10 px)
    assert (
        ts.summary()
        == "2 training images (1 smaller than a 16 px LR patch skipped; --patch-size 10 keeps all 3)"
    )
    # LR made by the exact bicubic of the mod-cropped HR.
    item = next(it for it in ts.items if it.name.endswith("a.png"))
    want = imresize(torch.from_numpy(np.array(modcrop(_img(40, 44, 0), 2))).permute(2, 0, 1), 0.5)
    assert np.array_equal(np.load(item.lr), want.permute(1, 2, 0).numpy())
    assert (item.lr_h, item.lr_w) == (20, 22)


def test_lr_cache_keyed_by_content_and_scale(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _save(root / "a.png", _img(48, 48, 0))
    cache = tmp_path / "cache"
    first = D.prepare([str(root)], 2, 8, cache).items[0]
    # Second run: everything comes from the cache, nothing is decoded or resized.
    monkeypatch.setattr(D, "_decode", lambda p: pytest.fail("decoded again"))
    monkeypatch.setattr(D, "_bicubic_lr", lambda a, s: pytest.fail("resized again"))
    assert D.prepare([str(root)], 2, 8, cache).items[0] == first
    monkeypatch.undo()
    x3 = D.prepare([str(root)], 3, 8, cache).items[0]
    assert x3.lr != first.lr and x3.hr == first.hr
    _save(root / "a.png", _img(48, 48, 9))  # new content under the same name
    changed = D.prepare([str(root)], 2, 8, cache).items[0]
    assert changed.hr != first.hr and changed.lr != first.lr


def test_div2k_layout_uses_the_provided_lr_and_patches_align(tmp_path):
    s = 2
    root = tmp_path / "DIV2K"
    for i in range(3):
        lr = _img(12 + i, 14, i)
        hr = np.repeat(np.repeat(lr, s, 0), s, 1)
        _save(root / "DIV2K_train_HR" / f"{i:04d}.png", hr)
        _save(root / "DIV2K_train_LR_bicubic" / f"X{s}" / f"{i:04d}x{s}.png", lr)
    _save(root / "DIV2K_valid_HR" / "0900.png", _img(30, 30, 5))  # not training data
    srcs, layout = discover(str(root), s)
    assert "DIV2K" in layout and len(srcs) == 3 and all(x.lr is not None for x in srcs)
    ts = D.prepare([str(root)], s, 8, tmp_path / "cache")
    ds = D.PatchDataset(ts.items, s, 8, seed=0)
    for g in range(20):  # random crops, flips and transposes keep LR and HR aligned
        lr_p, hr_p = ds[(g % 3, g)]
        assert lr_p.shape == (3, 8, 8) and hr_p.shape == (3, 16, 16) and lr_p.dtype == torch.uint8
        assert torch.equal(hr_p, lr_p.repeat_interleave(s, 1).repeat_interleave(s, 2))


def test_paired_layout_and_missing_lr(tmp_path):
    s = 3
    root = tmp_path / "pairs"
    lr = _img(10, 11, 0)
    _save(root / "HR" / "img.png", np.repeat(np.repeat(lr, s, 0), s, 1))
    _save(root / "LR" / f"X{s}" / "img.png", lr)
    srcs, layout = discover(str(root), s)
    assert layout == "HR/LR paired layout" and srcs[0].lr.name == "img.png"
    _save(root / "HR" / "other.png", _img(30, 33, 1))
    with pytest.raises(DukdError, match="no LR image for other.png"):
        discover(str(root), s)


def test_wrong_lr_size_is_an_error(tmp_path):
    root = tmp_path / "pairs"
    _save(root / "HR" / "img.png", _img(40, 40, 0))
    _save(root / "LR" / "img.png", _img(10, 10, 0))  # should be 20x20 at x2
    with pytest.raises(DukdError, match="should be 20x20"):
        D.prepare([str(root)], 2, 8, tmp_path / "cache")


def test_errors_for_missing_and_empty(tmp_path):
    with pytest.raises(DukdError, match="not found"):
        discover(str(tmp_path / "nope"), 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DukdError, match="no images"):
        discover(str(tmp_path / "empty"), 4)
    _save(tmp_path / "tiny" / "a.png", _img(8, 8, 0))
    with pytest.raises(DukdError, match="large enough"):
        D.prepare([str(tmp_path / "tiny")], 4, 48, tmp_path / "cache")


def test_builtin_photographs(tmp_path):
    srcs, layout = discover("builtin", 4)
    assert len(srcs) >= 5 and "scikit-image" in layout
    ts = D.prepare(["builtin"], 4, 48, tmp_path / "cache")
    assert len(ts.items) == len(srcs)


def test_sampler_is_deterministic_resumable_and_sharded():
    full = D.PatchBatchSampler(5, 4, seed=3)
    stream = [full.batch_keys(t) for t in range(6)]
    it = iter(full)
    assert [next(it) for _ in range(6)] == stream
    resumed = iter(D.PatchBatchSampler(5, 4, seed=3, start_iter=4))
    assert next(resumed) == stream[4]
    # Every epoch visits each image once; keys are the global sample indices.
    flat = [k for b in stream for k in b]
    assert [g for _, g in flat] == list(range(24))
    assert sorted(i for i, _ in flat[:5]) == list(range(5))
    # Two ranks with batch 2 see exactly the 1-process batch of 4, split in order.
    r0 = D.PatchBatchSampler(5, 2, seed=3, world=2, rank=0)
    r1 = D.PatchBatchSampler(5, 2, seed=3, world=2, rank=1)
    for t in range(6):
        assert r0.batch_keys(t) + r1.batch_keys(t) == stream[t]
    other = [D.PatchBatchSampler(5, 4, seed=4).batch_keys(t) for t in range(6)]
    assert other != stream  # the seed decides the order


def _loader_batches(ds, workers, start=0, n=4):
    loader = D.make_loader(ds, 3, seed=1, start_iter=start, workers=workers)
    it = iter(loader)
    out = [next(it) for _ in range(n)]
    del it
    return out


def test_worker_processes_do_not_change_the_data(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        _save(root / f"{i}.png", _img(40, 40, i))
    ts = D.prepare([str(root)], 2, 8, tmp_path / "cache")
    ds = D.PatchDataset(ts.items, 2, 8, seed=1)
    a = _loader_batches(ds, 0)
    b = _loader_batches(ds, 2)
    for (la, ha), (lb, hb) in zip(a, b, strict=True):
        assert torch.equal(la, lb) and torch.equal(ha, hb)
    c = _loader_batches(ds, 0, start=2, n=2)
    assert torch.equal(c[0][0], a[2][0]) and torch.equal(c[1][1], a[3][1])


def test_preparation_pool_opens_one_npy_at_a_time(tmp_path, monkeypatch):
    """np.load parses headers with ast.literal_eval, which CPython 3.11 cannot run in two threads at
    once (python/cpython#106905): the pool's threads must take turns."""
    import threading
    import time

    root = tmp_path / "data"
    for i in range(6):
        _save(root / f"{i}.png", _img(32, 32, i))
    cache = tmp_path / "cache"
    D.prepare([str(root)], 2, 8, cache, threads=4)  # fill the cache: the next run only opens files
    state = {"now": 0, "most": 0, "calls": 0}
    lock = threading.Lock()
    real_load = np.load

    def load(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["calls"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.02)  # long enough for the other threads to arrive
        try:
            return real_load(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(D.np, "load", load)
    D.prepare([str(root)], 2, 8, cache, threads=4)
    assert state["calls"] >= 6 and state["most"] == 1
