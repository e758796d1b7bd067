"""Checkpoint layouts: official and BasicSR files (bare or wrapped, with ``module.`` prefixes) load
strictly after conversion and give the native model's outputs; the released IMDN loads and works.

Foreign dicts are built from a native model's dict with mappings written out here, independently of
the converters under test.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dukd_cli.errors import DukdError
from zoo import edsr, imdn, rcan, swinir
from zoo.edsr import EDSR
from zoo.imdn import IMDN
from zoo.rcan import RCAN
from zoo.swinir import SwinIR

WRAPPERS = (None, "params", "params_ema", "state_dict", "model", "net")


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random parameters (so that a wrong mapping cannot go unnoticed), eval mode."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def _rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename by the first matching ``(pattern, replacement)``; a key no rule matches is a test bug."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value.clone()
                break
        else:
            raise AssertionError(f"test mapping misses {key}")
    return out


def _save_and_reload(state: dict[str, torch.Tensor], wrapper: str | None, prefix: bool, path: Path) -> dict:
    """Write a file the way other projects do, then read it back the way the tool does."""
    if prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state if wrapper is None else {wrapper: state, "iter": 1000}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    # the resolver's job (unwrap, strip DataParallel prefixes), kept minimal here
    for key in ("params_ema", "params", "state_dict", "model", "net"):
        if isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _assert_same_outputs(
    native: torch.nn.Module, other: torch.nn.Module, size: tuple[int, int] = (7, 6)
) -> None:
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(native(x), other(x))


def _assert_same_state(native: torch.nn.Module, other: torch.nn.Module) -> None:
    """Equal state dicts (parameters and persistent buffers) imply equal outputs."""
    mine, theirs = native.state_dict(), other.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


# --------------------------------------------------------------------------------------------------
# EDSR
# --------------------------------------------------------------------------------------------------

EDSR_SMALL = {"n_feats": 8, "n_resblocks": 3, "res_scale": 0.1}


def _edsr_to_basicsr(state: dict, n_blocks: int) -> dict:
    state = {k: v for k, v in state.items() if not k.startswith(("sub_mean.", "add_mean."))}
    return _rename(
        state,
        [
            (r"head\.0\.(.*)", r"conv_first.\1"),
            (r"body\.(\d+)\.body\.0\.(.*)", r"body.\1.conv1.\2"),
            (r"body\.(\d+)\.body\.2\.(.*)", r"body.\1.conv2.\2"),
            (rf"body\.{n_blocks}\.(.*)", r"conv_after_body.\1"),
            (r"tail\.0\.(.*)", r"upsample.\1"),
            (r"tail\.1\.(.*)", r"conv_last.\1"),
        ],
    )


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_basicsr_layout(scale: int, tmp_path: Path) -> None:
    native = _randomize(edsr(scale, **EDSR_SMALL))
    foreign = _edsr_to_basicsr(native.state_dict(), 3)
    assert "conv_last.weight" in foreign and "sub_mean.bias" not in foreign
    for i, wrapper in enumerate(WRAPPERS):
        loaded = _save_and_reload(foreign, wrapper, prefix=i % 2 == 1, path=tmp_path / f"edsr_{i}.pth")
        model = edsr(scale, **EDSR_SMALL)
        model.load_state_dict(EDSR.convert_state_dict(loaded), strict=True)
        _assert_same_state(native, model)
        if i == 0:
            _assert_same_outputs(native, model.eval())


def test_edsr_official_layout_passes_unchanged(tmp_path: Path) -> None:
    native = _randomize(edsr(4, **EDSR_SMALL))
    state = _save_and_reload(native.state_dict(), None, prefix=False, path=tmp_path / "edsr_x4.pt")
    converted = EDSR.convert_state_dict(state)
    assert converted.keys() == state.keys()
    assert all(converted[k] is state[k] for k in state)
    model = edsr(4, **EDSR_SMALL)
    model.load_state_dict(converted, strict=True)
    _assert_same_outputs(native, model.eval())


def test_edsr_mixed_layout_refused() -> None:
    state = edsr(2, **EDSR_SMALL).state_dict()
    state["conv_first.weight"] = state.pop("head.0.weight")
    with pytest.raises(DukdError, match="mixes"):
        EDSR.convert_state_dict(state)


# --------------------------------------------------------------------------------------------------
# RCAN
# --------------------------------------------------------------------------------------------------

RCAN_SMALL = {"n_feats": 16, "n_resgroups": 3, "n_resblocks": 2, "reduction": 4}


def _rcan_to_basicsr(state: dict, n_groups: int, n_blocks: int) -> dict:
    state = {k: v for k, v in state.items() if not k.startswith(("sub_mean.", "add_mean."))}
    return _rename(
        state,
        [
            (r"head\.0\.(.*)", r"conv_first.\1"),
            (r"body\.(\d+)\.body\.(\d+)\.body\.0\.(.*)", r"body.\1.residual_group.\2.rcab.0.\3"),
            (r"body\.(\d+)\.body\.(\d+)\.body\.2\.(.*)", r"body.\1.residual_group.\2.rcab.2.\3"),
            (
                r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.0\.(.*)",
                r"body.\1.residual_group.\2.rcab.3.attention.1.\3",
            ),
            (
                r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.2\.(.*)",
                r"body.\1.residual_group.\2.rcab.3.attention.3.\3",
            ),
            (rf"body\.(\d+)\.body\.{n_blocks}\.(.*)", r"body.\1.conv.\2"),
            (rf"body\.{n_groups}\.(.*)", r"conv_after_body.\1"),
            (r"tail\.0\.(.*)", r"upsample.\1"),
            (r"tail\.1\.(.*)", r"conv_last.\1"),
        ],
    )


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_rcan_basicsr_layout(scale: int, tmp_path: Path) -> None:
    native = _randomize(rcan(scale, **RCAN_SMALL))
    foreign = _rcan_to_basicsr(native.state_dict(), 3, 2)
    assert "body.2.residual_group.1.rcab.3.attention.3.weight" in foreign and "body.1.conv.bias" in foreign
    for i, wrapper in enumerate(WRAPPERS):
        loaded = _save_and_reload(foreign, wrapper, prefix=i % 2 == 0, path=tmp_path / f"rcan_{i}.pth")
        model = rcan(scale, **RCAN_SMALL)
        model.load_state_dict(RCAN.convert_state_dict(loaded), strict=True)
        _assert_same_state(native, model)
        if i == 0:
            _assert_same_outputs(native, model.eval())


def test_rcan_official_layout_passes_unchanged() -> None:
    native = _randomize(rcan(2, **RCAN_SMALL))
    state = native.state_dict()
    converted = RCAN.convert_state_dict(state)
    assert list(converted) == list(state)
    model = rcan(2, **RCAN_SMALL)
    model.load_state_dict(converted, strict=True)
    _assert_same_outputs(native, model.eval())


def test_rcan_mixed_layout_refused() -> None:
    state = rcan(2, **RCAN_SMALL).state_dict()
    state["conv_after_body.weight"] = state.pop("body.3.weight")
    with pytest.raises(DukdError, match="mixes"):
        RCAN.convert_state_dict(state)


# --------------------------------------------------------------------------------------------------
# SwinIR
# --------------------------------------------------------------------------------------------------

SWINIR_SMALL = {"embed_dim": 12, "depths": (2, 2), "num_heads": (2, 3), "window_size": 8, "num_feat": 8}


def _swinir_official(model: torch.nn.Module, img_size: int, window: int) -> dict:
    """A native dict plus the buffers official files carry: every block's relative_position_index
    and every shifted block's attn_mask for the training patch size (an independent construction)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n = window * window
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    index = (ys[:, None] - ys[None, :] + window - 1) * (2 * window - 1) + (
        xs[:, None] - xs[None, :] + window - 1
    )
    n_windows = (img_size // window) ** 2
    for key in list(state):
        if m := re.fullmatch(r"(layers\.\d+\.residual_group\.blocks\.(\d+))\.attn\.qkv\.weight", key):
            state[f"{m.group(1)}.attn.relative_position_index"] = index.clone()
            if int(m.group(2)) % 2 == 1:
                state[f"{m.group(1)}.attn_mask"] = torch.full((n_windows, n, n), -100.0)  # stale values
    return state


@pytest.mark.parametrize("wrapper", [None, "params", "params_ema"])
def test_swinir_official_dict_with_stale_buffers(wrapper: str | None, tmp_path: Path) -> None:
    native = _randomize(swinir(2, **SWINIR_SMALL))
    official = _swinir_official(native, img_size=48, window=8)
    assert official["layers.0.residual_group.blocks.1.attn_mask"].shape == (36, 64, 64)
    loaded = _save_and_reload(official, wrapper, prefix=wrapper == "params", path=tmp_path / "swinir.pth")
    converted = SwinIR.convert_state_dict(loaded)
    assert not any("attn_mask" in k or "relative_position_index" in k for k in converted)
    model = swinir(2, **SWINIR_SMALL)
    model.load_state_dict(converted, strict=True)
    _assert_same_outputs(native, model.eval(), size=(13, 11))
    # the recomputed index equals the one official files hold
    ours = model.layers[0].residual_group.blocks[0].attn.relative_position_index
    assert torch.equal(ours, official["layers.0.residual_group.blocks.0.attn.relative_position_index"])


def test_swinir_native_dict_passes_unchanged() -> None:
    state = swinir(3, **SWINIR_SMALL).state_dict()
    assert list(SwinIR.convert_state_dict(state)) == list(state)


# --------------------------------------------------------------------------------------------------
# IMDN: the released weights
# --------------------------------------------------------------------------------------------------


def test_imdn_prefixed_dict_converts() -> None:
    native = _randomize(imdn(2, n_feats=16, n_blocks=2))
    prefixed = {f"module.{k}": v for k, v in native.state_dict().items()}
    model = imdn(2, n_feats=16, n_blocks=2)
    model.load_state_dict(IMDN.convert_state_dict(prefixed), strict=True)
    _assert_same_outputs(native, model.eval())
    assert list(IMDN.convert_state_dict(native.state_dict())) == list(native.state_dict())


def _psnr(a: torch.Tensor, b: torch.Tensor, border: int) -> float:
    a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    return float(10 * torch.log10(1.0 / F.mse_loss(a, b)))


def _y_psnr(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """PSNR on the BT.601 luma of 8-bit-rounded images, border shaved: the literature's protocol."""
    weights = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)

    def luma(img: torch.Tensor) -> torch.Tensor:
        return 16.0 + ((img * 255).round() / 255 * weights).sum(dim=1, keepdim=True)

    diff = (luma(sr) - luma(hr))[..., border:-border, border:-border].double()
    return float(10 * torch.log10(255.0**2 / diff.square().mean()))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def released_imdn_x4(imdn_dir: Path) -> torch.nn.Module:
    state = torch.load(imdn_dir / "IMDN_x4.pth", map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in state)
    model = imdn(4).eval()
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    return model


def _hr_lr(benchmarks_dir: Path, name: str, scale: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(HR mod-cropped, LR, whether the LR is the MATLAB-made one) for a Set5 image."""
    hr_img = Image.open(benchmarks_dir / "Set5" / "HR" / f"{name}.png")
    w, h = hr_img.size
    hr_img = hr_img.crop((0, 0, w - w % scale, h - h % scale))
    matlab_lr = benchmarks_dir.parent / "matlab_lr" / "Set5" / f"x{scale}" / f"{name}.png"
    if matlab_lr.is_file():
        lr_img = Image.open(matlab_lr)
    else:  # antialiased bicubic, close to MATLAB's imresize
        lr_img = hr_img.resize((hr_img.width // scale, hr_img.height // scale), Image.BICUBIC)
    return _to_tensor(hr_img), _to_tensor(lr_img), matlab_lr.is_file()


def test_released_imdn_x4_upscales_baby(released_imdn_x4: torch.nn.Module, benchmarks_dir: Path) -> None:
    hr, lr, matlab = _hr_lr(benchmarks_dir, "baby", 4)
    with torch.no_grad():
        sr = released_imdn_x4(lr)
    assert sr.shape == hr.shape
    assert sr.min() > -0.1 and sr.max() < 1.1  # no clamping inside, but a trained net stays near [0, 1]
    sr = sr.clamp(0, 1)
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    psnr_sr, psnr_bicubic = _psnr(sr, hr, 4), _psnr(bicubic, hr, 4)
    # about 32.27 dB (RGB) on the MATLAB LR; dropping CCA's contrast term alone gives 31.69
    assert psnr_sr > (32.0 if matlab else 31.0)
    assert psnr_sr > psnr_bicubic + 1.0  # and clearly better than bicubic (about 30.6 dB)
    assert _psnr(sr, bicubic, 4) > 30.0  # a sensible image, not a shifted or colour-swapped one


def test_released_imdn_x4_reproduces_published_set5(
    released_imdn_x4: torch.nn.Module, benchmarks_dir: Path
) -> None:
    """IMDN's paper reports 32.21 dB (Y, x4) on Set5; the architecture reproduces it."""
    scores = []
    for name in ("baby", "bird", "butterfly", "head", "woman"):
        hr, lr, matlab = _hr_lr(benchmarks_dir, name, 4)
        if not matlab:
            pytest.skip("MATLAB-made Set5 LR images not found (shared data/matlab_lr)")
        with torch.no_grad():
            sr = released_imdn_x4(lr).clamp(0, 1)
        scores.append(_y_psnr(sr, hr, 4))
    assert abs(sum(scores) / len(scores) - 32.21) < 0.02
