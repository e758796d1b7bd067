"""Zoo architectures detected from a checkpoint alone (official and BasicSR layouts, unusual widths),
the official SwinIR-S lightweight preset, and SwinIR's test-time padding (--window-pad)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dukd_cli.errors import DukdError
from dukd_cli.models.detect import detect, shapes_of
from dukd_cli.models.factory import build, count_parameters, create_model, resolve_spec
from dukd_cli.upscale.inference import pad_swinir, run_model
from zoo.presets import SWINIR_LIGHTWEIGHT

LIGHTWEIGHT_FILE = "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4-layout.pth"


def official_swinir_dict(model: torch.nn.Module, img_size: int = 64) -> dict:
    """A SwinIR state dict as the authors' code saves it: with the relative position indices and the
    shifted blocks' attention masks (for the training patch size), wrapped in ``params``."""
    sd = dict(model.state_dict())
    ws = model.window_size
    n_windows = (img_size // ws) ** 2
    for i, layer in enumerate(model.layers):
        for j, _ in enumerate(layer.residual_group.blocks):
            key = f"layers.{i}.residual_group.blocks.{j}"
            sd[f"{key}.attn.relative_position_index"] = torch.zeros(ws * ws, ws * ws, dtype=torch.long)
            if j % 2:
                sd[f"{key}.attn_mask"] = torch.zeros(n_windows, ws * ws, ws * ws)
    return {"params": sd}


def _basicsr_edsr(model) -> dict:
    """EDSR-PyTorch names to BasicSR's (the inverse of the zoo's converter), no mean buffers."""
    import re

    n = model.n_resblocks
    rules = [
        (r"head\.0\.(.*)", r"conv_first.\1"),
        (r"body\.(\d+)\.body\.0\.(.*)", r"body.\1.conv1.\2"),
        (r"body\.(\d+)\.body\.2\.(.*)", r"body.\1.conv2.\2"),
        (rf"body\.{n}\.(.*)", r"conv_after_body.\1"),
        (r"tail\.0\.(.*)", r"upsample.\1"),
        (r"tail\.1\.(.*)", r"conv_last.\1"),
    ]
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith(("sub_mean", "add_mean")):
            continue
        for pat, rep in rules:
            if re.fullmatch(pat, k):
                k = re.sub(pat, rep, k)
                break
        out[k] = v
    return out


@pytest.fixture(scope="module")
def lightweight_file(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("swinir", 4, **SWINIR_LIGHTWEIGHT.kwargs)
    path = tmp_path_factory.mktemp("swinir") / LIGHTWEIGHT_FILE
    torch.save(official_swinir_dict(model), path)
    return path, model.eval()


def test_swinir_lightweight_preset_parameter_count():
    m = create_model("swinir-lightweight", 4)
    n = count_parameters(m)
    assert n == 929_628  # every parameter, as dukd counts (swinir-s: 1.24 M the same way)
    # The SwinIR paper's 897K for x4 (878K x2, 886K x3) leaves out the 24 relative-position bias tables.
    tables = sum(p.numel() for k, p in m.named_parameters() if k.endswith("relative_position_bias_table"))
    assert tables == 24 * 15 * 15 * 6 and round((n - tables) / 1000) == 897
    assert round((count_parameters(create_model("swinir-lightweight", 2)) - tables) / 1000) == 878


def test_official_swinir_lightweight_layout_loads_by_file_alone(lightweight_file):
    path, ref = lightweight_file
    spec = resolve_spec(str(path), None)
    assert spec.arch == "swinir" and spec.scale == 4 and spec.kwargs["upsampler"] == "pixelshuffledirect"
    assert spec.kwargs["img_size"] == 64 and spec.detected["presets"] == ["swinir-lightweight"]
    assert spec.detected["label"] == "SwinIR-S lightweight x4 (pixelshuffledirect)"
    net = build(spec)
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))


def test_acceptance_evaluate_official_swinir_s_file_without_args(lightweight_file, run_dukd, tmp_path):
    path, _ = lightweight_file
    hr = tmp_path / "bench"
    hr.mkdir()
    img = (np.random.default_rng(1).random((48, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(hr / "a.png")
    out = tmp_path / "r.json"
    code, stdout, err = run_dukd(
        "evaluate", "--model", path, "--scale", "4", "--bench", hr, "--device", "cpu", "--json", out
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["results"][0]["n_images"] == 1 and res["window_pad"] == "reflect"
    code, stdout, err = run_dukd(
        "evaluate", "--model", path, "--scale", "4", "--bench", hr, "--device", "cpu", "--json", out,
        "--window-pad", "swinir", "--overwrite",
    )  # fmt: skip
    assert code == 0, err
    res2 = json.loads(out.read_text())
    assert res2["window_pad"] == "swinir" and res2["results"][0]["psnr"] != res["results"][0]["psnr"]
    code, _, err = run_dukd("evaluate", "--model", "bicubic", "--scale", "4", "--window-pad", "zero")
    assert code == 1 and "--window-pad must be reflect or swinir" in err


def _save(sd, path):
    torch.save(sd, path)
    return str(path)


@pytest.mark.parametrize(
    "arch, scale, kwargs, layout",
    [
        ("edsr", 3, {"n_feats": 24, "n_resblocks": 3}, "official"),
        ("edsr", 4, {"n_feats": 40, "n_resblocks": 2}, "basicsr"),
        ("edsr", 2, {"n_feats": 64, "n_resblocks": 32, "res_scale": 0.1}, "official"),  # the paper's EDSR-S
        ("rcan", 2, {"n_feats": 32, "n_resgroups": 2, "n_resblocks": 3, "reduction": 8}, "official"),
        ("imdn", 3, {"n_feats": 32, "n_blocks": 3}, "module."),
        ("swinir", 2, {"embed_dim": 36, "depths": (2, 2), "num_heads": (6, 3), "window_size": 4,
                       "resi_connection": "3conv", "num_feat": 16, "mlp_ratio": 1.5}, "official"),
    ],
)  # fmt: skip
def test_zoo_layouts_of_unusual_widths_load_by_file_alone(arch, scale, kwargs, layout, tmp_path):
    torch.manual_seed(3)
    ref = create_model(arch, scale, **kwargs).eval()
    if layout == "basicsr":
        sd = {"params": _basicsr_edsr(ref)}
    elif layout == "module.":
        sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    elif arch == "swinir":
        sd = official_swinir_dict(ref, img_size=16)
    else:
        sd = ref.state_dict()
    path = _save(sd, tmp_path / f"{arch}.pth")
    spec = resolve_spec(path, None)
    assert (spec.arch, spec.scale) == (arch, scale)
    for k, v in kwargs.items():
        got = spec.kwargs[k]
        assert (tuple(got) if isinstance(v, tuple) else got) == v, k
    net = build(spec)
    x = torch.rand(1, 3, 9, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-6)


def test_detection_names_presets_and_assumptions():
    baseline = detect(create_model("edsr-baseline", 4).state_dict())
    assert baseline.presets[0] == "edsr-baseline" and "dukd-teacher-x4" in baseline.presets
    assert baseline.label == "EDSR-baseline x4" and baseline.assumed == {"res_scale": 1.0}
    paper = detect(create_model("edsr-s", 2).state_dict())
    assert paper.presets == ["edsr-s"] and paper.kwargs["res_scale"] == 0.1
    odd = detect(create_model("rcan", 3, n_feats=32, n_resgroups=2, n_resblocks=3, reduction=8).state_dict())
    assert odd.presets == [] and odd.label == "RCAN 32 ch, 2 groups x 3 blocks x3"
    assert (
        detect(create_model("swinir-s", 3).state_dict()).label == "SwinIR-S (DUKD student) x3 (pixelshuffle)"
    )
    # shapes alone are enough
    assert detect(shapes_of(create_model("imdn", 4).state_dict())).kwargs["n_feats"] == 64
    # not a zoo network: a truncated EDSR is not claimed
    sd = create_model("edsr", 2).state_dict()
    sd.pop("tail.1.weight")
    assert detect(sd) is None


def test_a_checkpoint_of_the_wrong_scale_says_its_scale(tmp_path):
    path = _save(create_model("edsr", 2, n_feats=16, n_resblocks=2).state_dict(), tmp_path / "e.pth")
    with pytest.raises(
        DukdError, match=r"EDSR 16 ch, 2 blocks x2 checkpoint \(its upsampler's shapes say x2\), but x4"
    ):
        resolve_spec(path, 4)


def test_zoo_info_of_a_zoo_checkpoint(lightweight_file, run_dukd):
    path, _ = lightweight_file
    code, out, err = run_dukd("zoo", "info", path, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["kind"] == "checkpoint" and data["architecture"] == "swinir" and data["scale"] == 4
    assert data["params"] == 929_628 and data["detected"]["presets"] == ["swinir-lightweight"]
    code, out, err = run_dukd("zoo", "info", path)
    assert code == 0 and "SwinIR-S lightweight x4" in out


def _authors_padding(img_lq: torch.Tensor, window_size: int) -> torch.Tensor:
    """main_test_swinir.py's padding, written out as the authors' script does it."""
    _, _, h_old, w_old = img_lq.size()
    h_pad = (h_old // window_size + 1) * window_size - h_old
    w_pad = (w_old // window_size + 1) * window_size - w_old
    img_lq = torch.cat([img_lq, torch.flip(img_lq, [2])], 2)[:, :, : h_old + h_pad, :]
    return torch.cat([img_lq, torch.flip(img_lq, [3])], 3)[:, :, :, : w_old + w_pad]


@pytest.mark.parametrize("h, w", [(16, 16), (13, 21), (8, 9), (30, 17)])
def test_swinir_padding_is_the_authors(h, w):
    x = torch.rand(1, 3, h, w)
    got = pad_swinir(x, 8)
    assert torch.equal(got, _authors_padding(x, 8))
    assert got.shape[-2] > h and got.shape[-2] % 8 == 0 and got.shape[-1] - w in range(1, 9)
    # tiny sides (shorter than the pad) still reach the next multiple
    assert pad_swinir(torch.rand(1, 3, 3, 2), 8).shape[-2:] == (8, 8)


def test_window_pad_swinir_through_run_model():
    torch.manual_seed(0)
    m = create_model("swinir", 2, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4).eval()
    x = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        want = m(_authors_padding(x, 4))[..., :16, :20]
    got = run_model(m, x, window_pad="swinir")
    assert got.shape == (1, 3, 16, 20) and torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(run_model(m, x), got, atol=1e-4)  # reflect pads 8 -> 8 (none), 10 -> 12
    with pytest.raises(DukdError, match="--window-pad"):
        run_model(m, x, window_pad="zeros")


def test_a_replaced_file_is_detected_again(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(create_model("edsr", 2, n_feats=8, n_resblocks=1).state_dict(), path)
    assert resolve_spec(str(path), None).scale == 2
    torch.save(create_model("edsr", 3, n_feats=12, n_resblocks=2).state_dict(), path)
    spec = resolve_spec(str(path), None)
    assert (spec.scale, spec.kwargs["n_feats"]) == (3, 12)
