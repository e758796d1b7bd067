"""`dukd evaluate`: the bicubic reference table, the JSON shape, models, and its errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from dukd_cli.data.benchmarks import find_set
from dukd_cli.errors import DukdError
from dukd_cli.evaluate.protocol import evaluate
from dukd_cli.models.factory import create_model

# docs/protocol.md, bicubic baseline: (PSNR, SSIM) per set and scale
REFERENCE = {
    2: {"Set5": (33.67, 0.9303), "Set14": (30.32, 0.8699), "BSD100": (29.56, 0.8434)},
    3: {"Set5": (30.40, 0.8689), "Set14": (27.63, 0.7759), "BSD100": (27.21, 0.7391)},
    4: {"Set5": (28.43, 0.8111), "Set14": (26.09, 0.7048), "BSD100": (25.96, 0.6681)},
}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_reproduces_the_reference_table(scale, benchmarks_dir, run_dukd, tmp_path):
    out = tmp_path / "r.json"
    code, stdout, err = run_dukd(
        "evaluate",
        "--model",
        "bicubic",
        "--scale",
        scale,
        "--bench",
        "set5,set14,bsd100",
        "--data-dir",
        benchmarks_dir,
        "--json",
        out,
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert set(data) == {"model", "weights", "scale", "runtime", "window_pad", "results"}
    assert (data["model"], data["weights"], data["scale"]) == ("bicubic", None, scale)
    got = {r["bench"]: r for r in data["results"]}
    assert list(got) == ["Set5", "Set14", "BSD100"]
    for bench, (psnr, ssim) in REFERENCE[scale].items():
        r = got[bench]
        assert set(r) == {"bench", "psnr", "ssim", "n_images", "seconds"}
        assert abs(r["psnr"] - psnr) <= 0.01, (bench, r["psnr"], psnr)
        assert abs(r["ssim"] - ssim) <= 0.0015, (bench, r["ssim"], ssim)
    assert [got[b]["n_images"] for b in got] == [5, 14, 100]
    assert "Set5" in stdout and f"{REFERENCE[scale]['Set5'][0]:.2f}" in stdout


def test_names_aliases_and_folders(benchmarks_dir):
    assert find_set("B100", benchmarks_dir).name == "BSD100"
    assert find_set("bsds100", benchmarks_dir).name == "BSD100"
    assert find_set("SET5", benchmarks_dir).name == "Set5"
    folder = find_set(str(benchmarks_dir / "Set5" / "HR"))
    assert len(folder.images()) == 5


def test_missing_set_says_where_it_looked(tmp_path, monkeypatch, run_dukd):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DUKD_DATA", raising=False)
    with pytest.raises(DukdError, match=r"Urban100 not found \(looked in .*empty.*cache"):
        find_set("urban100", tmp_path / "empty")
    code, out, err = run_dukd(
        "evaluate", "--model", "bicubic", "--scale", "4", "--data-dir", tmp_path / "empty"
    )
    assert code == 1 and "none of Set5, Set14, BSD100, Urban100 found" in err
    code, out, err = run_dukd("evaluate", "--model", "bicubic", "--scale", "4", "--bench", "nosuchset")
    assert code == 1 and "unknown benchmark 'nosuchset'" in err


def test_model_evaluation_matches_manual_protocol(tiny_plugin, benchmarks_dir, tmp_path):
    """A model through evaluate() equals the protocol applied by hand, and mode is restored."""
    from dukd_cli.data.imresize import imresize, modcrop
    from dukd_cli.evaluate.metrics import psnr_y, ssim_y
    from dukd_cli.images.imageio import read_rgb_uint8

    torch.manual_seed(0)
    model = create_model("tiny", 2, n_feats=4)
    model.train()
    res = evaluate(model, 2, ["set5"], data_dir=benchmarks_dir, device="cpu", max_images=2)[0]
    assert model.training
    assert res.n_images == 2 and len(res.per_image) == 2
    path = sorted((benchmarks_dir / "Set5" / "HR").iterdir())[0]
    hr = modcrop(read_rgb_uint8(path), 2)
    lr = imresize(torch.from_numpy(hr).permute(2, 0, 1), 0.5)
    with torch.no_grad():
        sr = model.eval()(lr[None].float() / 255)[0]
    sr = sr.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert res.per_image[0].psnr == pytest.approx(psnr_y(sr, hr, 2), abs=1e-9)
    assert res.per_image[0].ssim == pytest.approx(ssim_y(sr, hr, 2), abs=1e-9)


def test_reference_model_and_csv_and_saved_images(tiny_plugin, benchmarks_dir, tmp_path, run_dukd):
    torch.manual_seed(0)
    m = create_model("tiny", 2, n_feats=4)
    from safetensors.torch import save_file

    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    code, out, err = run_dukd(
        "evaluate",
        "--model",
        "tiny",
        "--arg",
        "n_feats=4",
        "--weights",
        tmp_path / "w.safetensors",
        "--scale",
        "2",
        "--bench",
        "set5",
        "--data-dir",
        benchmarks_dir,
        "--max-images",
        "2",
        "--reference-model",
        "bicubic",
        "--per-image",
        "--csv",
        tmp_path / "r.csv",
        "--save-images",
        tmp_path / "sr",
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["image"] for r in rows] == ["baby", "bird", "(mean)"]
    assert all(float(r["ref_psnr"]) > 10 for r in rows)
    assert sorted(p.name for p in (tmp_path / "sr" / "Set5").iterdir()) == ["baby.png", "bird.png"]
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["weights"] == str(tmp_path / "w.safetensors")
    # the same model as its own reference: identical outputs
    res = evaluate(m, 2, ["set5"], data_dir=benchmarks_dir, device="cpu", reference=m, max_images=1)[0]
    assert res.per_image[0].ref_psnr == float("inf")


def test_scale_mismatch_is_an_error_not_a_resize(tiny_plugin, benchmarks_dir, run_dukd):
    m = create_model("tiny", 2)
    with pytest.raises(DukdError, match="x2 but --scale is 4"):
        evaluate(m, 4, ["set5"], data_dir=benchmarks_dir)
    code, out, err = run_dukd("evaluate", "--model", "tiny4", "--scale", "3", "--data-dir", benchmarks_dir)
    assert code == 1 and "x2, x4, not x3" in err
    code, out, err = run_dukd("evaluate", "--model", "tiny", "--scale", "2", "--data-dir", benchmarks_dir)
    assert code == 1 and "no default weights; pass --weights SOURCE" in err


def test_lr_provided(benchmarks_dir, tmp_path):
    """A provided LR_bicubic folder is used when asked, and checked for size."""
    from PIL import Image

    root = tmp_path / "Mini"
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / "X2").mkdir(parents=True)
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (20, 22, 3), dtype=np.uint8)
    Image.fromarray(hr).save(root / "HR" / "a.png")
    lr = np.zeros((10, 11, 3), np.uint8)
    Image.fromarray(lr).save(root / "LR_bicubic" / "X2" / "ax2.png")
    made = evaluate("bicubic", 2, [str(root)])[0]
    provided = evaluate("bicubic", 2, [str(root)], lr_provided=True)[0]
    assert provided.psnr < made.psnr  # a black LR upscaled is far worse than the real one
    Image.fromarray(np.zeros((9, 11, 3), np.uint8)).save(root / "LR_bicubic" / "X2" / "ax2.png")
    with pytest.raises(DukdError, match="expected 11x10"):
        evaluate("bicubic", 2, [str(root)], lr_provided=True)


def test_real_pretrained_imdn_matches_its_published_table(imdn_dir, benchmarks_dir, run_dukd, tmp_path):
    """IMDN's released x4 weights through the resolver and `dukd evaluate` give its authors' Set14 figure."""
    code, out, err = run_dukd(
        "evaluate",
        "--model",
        "imdn",
        "--weights",
        imdn_dir / "IMDN_x4.pth",
        "--scale",
        "4",
        "--bench",
        "set14",
        "--data-dir",
        benchmarks_dir,
        "--json",
        tmp_path / "r.json",
    )
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert abs(r["psnr"] - 28.58) <= 0.01 and abs(r["ssim"] - 0.7811) <= 0.0005, r
