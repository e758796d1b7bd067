"""CSD (contrastive self-distillation): the contrastive term, the channel split, and a tiny run
through the CLI whose shipped student is a plain EDSR of the split width."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dukd_cli.distill.csd import (
    ChannelSplit,
    VGGFeatures,
    contrastive_loss,
    split_width,
)
from dukd_cli.errors import DukdError
from dukd_cli.models.factory import count_parameters, create_model

# A stand-in VGG-19: torchvision's layer indices and key names, 4-8 channels instead of 64-512.
_CONV_OUT = {0: 4, 2: 4, 5: 6, 7: 6, 10: 8, 12: 8, 14: 8, 16: 8, 19: 8, 21: 8, 23: 8, 25: 8, 28: 8}


def tiny_vgg_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd, cin = {}, 3
    for i, cout in _CONV_OUT.items():
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.3
        sd[f"features.{i}.bias"] = torch.zeros(cout)
        cin = cout
    return sd


@pytest.fixture
def vgg_file(tmp_path):
    p = tmp_path / "vgg-standin.pth"
    torch.save(tiny_vgg_state(), p)
    return p


def _images(folder, n=3, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


# -- the contrastive term on hand-made tensors -----------------------------------------------


def test_contrastive_loss_positive_closer_is_smaller():
    pos = [torch.zeros(2, 3, 4, 4)]
    neg = [torch.ones(2, 3, 4, 4)]
    near = [torch.full((2, 3, 4, 4), 0.1)]  # |s-p| 0.1; |s-n| 0.9 per negative, 2 negatives
    far = [torch.full((2, 3, 4, 4), 0.6)]
    l_near = contrastive_loss(near, pos, neg, [1.0])
    l_far = contrastive_loss(far, pos, neg, [1.0])
    assert l_near.item() == pytest.approx(0.1 / (2 * 0.9), rel=1e-5)
    assert l_far.item() == pytest.approx(0.6 / (2 * 0.4), rel=1e-5)
    assert l_near < l_far


def test_contrastive_loss_gradient_pushes_toward_positive_and_away_from_negatives():
    s = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    pos, neg = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    neg.requires_grad_(True)
    contrastive_loss([s], [pos], [neg], [1.0]).backward()
    assert (s.grad > 0).all()  # a step against the gradient moves s toward 0 (the positive)
    assert neg.grad is None  # negatives carry no gradient


def test_vgg_standin_built_from_the_files_shapes_and_bad_file_refused():
    vgg = VGGFeatures(tiny_vgg_state())
    feats = vgg(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [4, 6, 8, 8, 8]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    assert not any(p.requires_grad for p in vgg.parameters())
    with pytest.raises(DukdError, match="not a VGG-19 state dict"):
        VGGFeatures({"features.0.weight": torch.zeros(4, 3, 3, 3)})


# -- the channel split ------------------------------------------------------------------------


def test_split_width_and_refusals():
    assert split_width(32, 0.25) == 128
    assert split_width(64, 0.5) == 128
    with pytest.raises(DukdError, match="whole number"):
        split_width(10, 0.3)
    with pytest.raises(DukdError, match=r"\(0, 1\]"):
        split_width(8, 1.5)


def test_channel_split_forward_equals_the_extracted_edsr_and_trains_the_shared_weights():
    torch.manual_seed(0)
    full = create_model("edsr", 2, n_feats=16, n_resblocks=2, res_scale=0.1)
    split = ChannelSplit(full, 0.25)
    x = torch.rand(1, 3, 10, 10)
    y = split.forward(full, x)
    small = split.extract(full)
    assert small.head[0].out_channels == 4 and small.tail[0][0].out_channels == 16
    assert torch.allclose(small(x), y, atol=1e-6)
    y.abs().mean().backward()
    g = full.head[0].weight.grad
    assert g[:4].abs().sum() > 0 and g[4:].abs().sum() == 0  # only the student's channels get gradient
    rcan = create_model("rcan", 2, n_feats=16, n_resgroups=1, n_resblocks=1, reduction=4)
    with pytest.raises(DukdError, match="EDSR only"):
        ChannelSplit(rcan, 0.5)


# -- through the CLI -------------------------------------------------------------------------


def test_csd_trains_through_the_cli_and_ships_a_plain_edsr_slice(tmp_path, vgg_file, run_dukd):
    data = _images(tmp_path / "data")
    run = tmp_path / "run"
    common = ["--data", data, "--cache-dir", tmp_path / "cache", "--device", "cpu", "--batch-size", "2"]
    code, out, err = run_dukd(
        "distill", "--method", "csd", "--student", "edsr", "--student-arg", "n_feats=8",
        "--student-arg", "n_resblocks=1", "--scale", "2", "--csd-width", "0.5",
        "--csd-vgg-weights", vgg_file, "--iters", "3", "--patch-size", "8", "--val-every", "0",
        "--log-every", "1", "--out", run, *common,
    )  # fmt: skip
    assert code == 0, out + err
    # state.pt trains the 16-channel network; the shipped student is its first 8 channels
    state = torch.load(run / "state.pt", weights_only=False)
    assert state["ema"]["head.0.weight"].shape[0] == 16
    shipped = load_file(str(run / "student.safetensors"))
    assert shipped["head.0.weight"].shape[0] == 8
    assert torch.equal(shipped["head.0.weight"], state["ema"]["head.0.weight"][:8, :])
    assert torch.equal(shipped["tail.0.0.weight"], state["ema"]["tail.0.0.weight"][:32, :8])
    losses = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["losses"]
    assert set(losses) == {"rec", "full", "contrast"} and losses["contrast"] > 0
    # the student's parameter count is the fraction's: a plain EDSR with n_feats 8
    plain = create_model("edsr", 2, n_feats=8, n_resblocks=1)
    assert sum(t.numel() for k, t in shipped.items() if "mean" not in k) == count_parameters(plain)
    # dukd evaluate loads the run directory as a normal EDSR
    bench = tmp_path / "benchmarks" / "set5"
    _images(bench / "HR", n=1, size=24)
    code, out, err = run_dukd(
        "evaluate", "--model", run, "--bench", "set5", "--data-dir", tmp_path / "benchmarks",
        "--device", "cpu", "--json", tmp_path / "ev.json",
    )  # fmt: skip
    assert code == 0, out + err
    rows = json.loads((tmp_path / "ev.json").read_text())
    assert "psnr" in json.dumps(rows).lower()
    # dukd export writes the same plain network
    code, out, err = run_dukd(
        "export", "--model", run, "--output", tmp_path / "exp", "--format", "safetensors"
    )
    assert code == 0, out + err
    exported = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert exported["arguments"]["n_feats"] == 8


def test_csd_refusals_are_one_line(tmp_path, vgg_file, run_dukd):
    data = _images(tmp_path / "data")
    base = ["distill", "--scale", "2", "--data", data, "--device", "cpu", "--iters", "1", "--val-every", "0"]
    code, out, err = run_dukd(*base, "--method", "dukd", "--student", "edsr", "--csd-width", "0.5")
    assert code != 0 and "apply to --method csd only" in out + err
    code, out, err = run_dukd(
        *base, "--method", "csd", "--student", "rcan", "--csd-vgg-weights", vgg_file, "--out", tmp_path / "r"
    )
    assert code != 0 and "EDSR students only" in out + err
    assert len((out + err).strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    # --dry-run names the wider network csd trains
    code, out, err = run_dukd(
        *base,
        "--method",
        "csd",
        "--student",
        "edsr",
        "--student-arg",
        "n_feats=8",
        "--csd-width",
        "0.5",
        "--dry-run",
    )
    assert code == 0, out + err
    assert "trained network: edsr (n_feats=16" in " ".join(out.split())
