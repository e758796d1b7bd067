"""The built-in zoo: exact parameter counts of the paper's networks, forward contracts, feature taps,
SwinIR's attention and padding, and the factories' argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dukd_cli.errors import DukdError
from dukd_cli.models.sizes import pad_to_multiple
from dukd_cli.registry import Preset
from zoo import edsr, imdn, rcan, swinir
from zoo import presets as zoo_presets
from zoo.common import DIV2K_RGB_MEAN
from zoo.swinir import WindowAttention, shifted_window_mask

FACTORIES = {"edsr": edsr, "rcan": rcan, "swinir": swinir, "imdn": imdn}

# DUKD paper, Table 1 (parameters only, buffers excluded), in millions at x2, x3, x4.
PAPER_PARAMS = {
    "EDSR_L": (40.73, 43.68, 43.09),
    "EDSR_S": (2.55, 2.74, 2.70),
    "RCAN_L": (15.44, 15.63, 15.59),
    "RCAN_S": (5.02, 5.21, 5.17),
    "SWINIR_L": (11.75, 11.94, 11.90),
    "SWINIR_S": (1.09, 1.27, 1.24),
}

# Small configurations for the forward tests (the full ones are only built on the meta device).
TINY = {
    "edsr": {"n_feats": 8, "n_resblocks": 3, "res_scale": 0.1},
    "rcan": {"n_feats": 16, "n_resgroups": 3, "n_resblocks": 2, "reduction": 4},
    "swinir": {"embed_dim": 12, "depths": (2, 2, 2), "num_heads": (2, 3, 2), "window_size": 4, "num_feat": 8},
    "imdn": {"n_feats": 16, "n_blocks": 3},
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(arch: str, scale: int, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return FACTORIES[arch](scale, **{**TINY[arch], **extra}).eval()


# --------------------------------------------------------------------------------------------------
# parameter counts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset_name", sorted(PAPER_PARAMS))
@pytest.mark.parametrize("scale_index, scale", [(0, 2), (1, 3), (2, 4)])
def test_paper_parameter_counts(preset_name: str, scale_index: int, scale: int) -> None:
    preset = getattr(zoo_presets, preset_name)
    with torch.device("meta"):
        model = FACTORIES[preset.arch](scale, **preset.kwargs)
    assert round(n_params(model) / 1e6, 2) == PAPER_PARAMS[preset_name][scale_index]


def test_mean_shift_is_buffer_not_parameter() -> None:
    model = edsr(2, n_feats=8, n_resblocks=1)
    names = {n for n, _ in model.named_parameters()}
    state = model.state_dict()
    for key in ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"):
        assert key in state and key not in names
    assert state["sub_mean.weight"].shape == (3, 3, 1, 1) and state["sub_mean.bias"].shape == (3,)
    torch.testing.assert_close(state["add_mean.bias"], 255 * torch.tensor(DIV2K_RGB_MEAN))


def test_imdn_parameter_count_matches_release() -> None:
    # 715,176 values in the released IMDN_x4.pth, all of them parameters
    assert n_params(imdn(4)) == 715_176


def test_presets_are_registry_presets() -> None:
    for name in ("EDSR_L", "EDSR_S", "EDSR_BASELINE", "RCAN_L", "RCAN_S", "SWINIR_L", "SWINIR_S"):
        preset = getattr(zoo_presets, name)
        assert isinstance(preset, Preset)
        assert preset.arch in FACTORIES and preset.scales == (2, 3, 4)
        assert set(preset.weights) <= {2, 3, 4}
        assert preset.description
    baseline = zoo_presets.EDSR_BASELINE.kwargs
    assert (baseline["n_feats"], baseline["n_resblocks"], baseline["res_scale"]) == (64, 16, 1.0)


# --------------------------------------------------------------------------------------------------
# forward contract
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(FACTORIES))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_forward_shape_and_scale_attribute(arch: str, scale: int) -> None:
    model = tiny(arch, scale)
    assert model.scale == scale and isinstance(model.scale, int)
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 9 * scale, 7 * scale)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("h, w", [(13, 11), (8, 8), (1, 5), (3, 17)])
def test_swinir_any_input_size(h: int, w: int) -> None:
    model = tiny("swinir", 2)
    assert model.window_size == 4
    with torch.no_grad():
        y = model(torch.rand(1, 3, h, w))
    assert y.shape == (1, 3, 2 * h, 2 * w) and torch.isfinite(y).all()


@pytest.mark.parametrize("arch, last", [("edsr", "tail.1"), ("rcan", "tail.1"), ("swinir", "conv_last")])
def test_mean_semantics_and_no_clamp(arch: str, last: str) -> None:
    """With the last conv zeroed the output is exactly the RGB mean (the mean is removed at the input
    and added back in [0, 1] units); with a large bias it leaves [0, 1] (no clamping inside)."""
    model = tiny(arch, 2)
    conv = model.get_submodule(last)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        y = model(torch.rand(1, 3, 6, 5))
        mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1).expand_as(y)
        torch.testing.assert_close(y, mean, atol=1e-5, rtol=0)
        conv.bias.fill_(10.0 * getattr(model, "img_range", 1.0))
        assert model(torch.rand(1, 3, 6, 5)).min() > 1.0


def test_imdn_has_no_mean_shift() -> None:
    model = tiny("imdn", 2)
    with torch.no_grad():
        model.upsampler[0].weight.zero_()
        model.upsampler[0].bias.zero_()
        assert torch.equal(model(torch.rand(1, 3, 5, 5)), torch.zeros(1, 3, 10, 10))


@pytest.mark.parametrize("arch", sorted(FACTORIES))
def test_backward_reaches_every_parameter(arch: str) -> None:
    model = tiny(arch, 2).train()
    model(torch.rand(2, 3, 8, 8)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_swinir_drop_path_only_in_training() -> None:
    model = tiny("swinir", 2, drop_path_rate=0.5)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))
        torch.manual_seed(1)
        a = model.train()(x)
        torch.manual_seed(2)
        b = model(x)
    assert not torch.allclose(a, b)


def _recorder(store: dict[str, torch.Tensor], name: str):
    def hook(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        store[name] = output

    return hook


def test_feature_taps_are_feature_maps() -> None:
    expected = {
        "edsr": ["body.0", "body.1", "body.3"],
        "rcan": ["body.0", "body.1", "body.3"],
        "swinir": ["layers.0", "layers.1", "conv_after_body"],
        "imdn": ["IMDB1", "IMDB2", "IMDB3"],
    }
    for arch in FACTORIES:
        model = tiny(arch, 2)
        taps = model.feature_taps()
        assert taps == expected[arch]
        modules = dict(model.named_modules())
        seen: dict[str, torch.Tensor] = {}
        hooks = [modules[name].register_forward_hook(_recorder(seen, name)) for name in taps]
        with torch.no_grad():
            model(torch.rand(1, 3, 8, 8))
        for h in hooks:
            h.remove()
        channels = {t.shape[1] for t in seen.values()}
        assert set(seen) == set(taps)
        assert all(t.dim() == 4 and t.shape[-2:] == (8, 8) for t in seen.values()) and len(channels) == 1


def test_feature_taps_of_paper_configs() -> None:
    with torch.device("meta"):
        assert edsr(4, n_feats=256, n_resblocks=32).feature_taps() == ["body.9", "body.20", "body.32"]
        assert rcan(4).feature_taps() == ["body.2", "body.5", "body.10"]
        big = swinir(4, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6)
        assert big.feature_taps() == ["layers.1", "layers.3", "conv_after_body"]
        assert imdn(4).feature_taps() == ["IMDB2", "IMDB4", "IMDB6"]
        for model in (rcan(4), big, imdn(4)):
            names = dict(model.named_modules())
            assert all(t in names for t in model.feature_taps())


# --------------------------------------------------------------------------------------------------
# SwinIR attention
# --------------------------------------------------------------------------------------------------


def _set_sdpa(model: torch.nn.Module, on: bool) -> None:
    for m in model.modules():
        if isinstance(m, WindowAttention):
            m.use_sdpa = on


def test_sdpa_attention_equals_plain_softmax_attention() -> None:
    model = tiny("swinir", 3)
    x = torch.rand(2, 3, 13, 11)
    outputs, grads = [], []
    for on in (True, False):
        _set_sdpa(model, on)
        model.zero_grad()
        y = model(x)
        y.square().mean().backward()
        outputs.append(y.detach())
        grads.append(model.layers[1].residual_group.blocks[1].attn.relative_position_bias_table.grad.clone())
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    assert grads[0].abs().sum() > 0


def test_shifted_window_mask_regions() -> None:
    mask = shifted_window_mask(16, 16, 8, 4)  # 2 x 2 windows of 64 tokens
    assert mask.shape == (4, 64, 64)
    zeros = (mask == 0).sum(dim=(1, 2)).tolist()
    # top-left: one region; top-right and bottom-left: two halves; bottom-right: four quarters
    assert zeros == [64 * 64, 2 * 32 * 32, 2 * 32 * 32, 4 * 16 * 16]
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    assert torch.equal(mask, mask.transpose(1, 2))


def test_swinir_relative_position_index_and_mask_not_saved() -> None:
    model = tiny("swinir", 2)
    keys = model.state_dict().keys()
    assert not any("relative_position_index" in k or "attn_mask" in k or k == "mean" for k in keys)
    index = model.layers[0].residual_group.blocks[0].attn.relative_position_index
    assert index.shape == (16, 16) and index.min() == 0 and index.max() == (2 * 4 - 1) ** 2 - 1
    assert torch.equal(index.diagonal(), torch.full((16,), index[0, 0].item()))


def test_pad_to_multiple_reflects() -> None:
    x = torch.arange(3.0).view(1, 1, 1, 3)
    assert pad_to_multiple(x, 8).tolist() == [[[[0, 1, 2, 1, 0, 1, 2, 1]] * 8]]
    y = torch.rand(1, 3, 13, 11)
    torch.testing.assert_close(pad_to_multiple(y, 8), F.pad(y, (0, 5, 0, 3), mode="reflect"))


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, scale",
    [
        ("edsr", 5),
        ("edsr", 1),
        ("rcan", 6),
        ("swinir", 7),
        ("imdn", 1),
        ("imdn", 0),
        ("edsr", 2.0),
        ("rcan", True),
    ],
)
def test_factories_reject_unsupported_scales(arch: str, scale: object) -> None:
    with pytest.raises(DukdError) as info:
        FACTORIES[arch](scale)
    assert "\n" not in str(info.value) and arch in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"upsampler": "nearest+conv"},
        {"resi_connection": "2conv"},
        {"embed_dim": 61},
        {"depths": (6, 6), "num_heads": (6,)},
        {"window_size": 0},
    ],
)
def test_swinir_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(DukdError):
        swinir(2, **kwargs)


def test_other_factories_reject_bad_arguments() -> None:
    with pytest.raises(DukdError):
        edsr(2, n_feats=0)
    with pytest.raises(DukdError):
        rcan(2, n_feats=8, reduction=16)
    with pytest.raises(DukdError):
        imdn(2, n_feats=8)


def test_swinir_lightweight_upsampler_any_scale() -> None:
    model = tiny("swinir", 5, upsampler="pixelshuffledirect")
    assert "upsample.0.weight" in model.state_dict() and not hasattr(model, "conv_last")
    with torch.no_grad():
        assert model(torch.rand(1, 3, 5, 6)).shape == (1, 3, 25, 30)
