"""dukd_cli.upscale.inference: devices, precision, whole/tiled runs, the seam bound, self-ensemble, auto tiles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dukd_cli.errors import DukdError
from dukd_cli.models.factory import create_model
from dukd_cli.upscale import inference
from dukd_cli.upscale.inference import (
    auto_tile,
    autocast,
    axis_weights,
    run_model,
    select_device,
    tile_spans,
)


class NearestUp(nn.Module):
    """Pure nearest-neighbour upsampling: equivariant under flips and transposes."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class Windowed(nn.Module):
    """Insists on inputs that are multiples of its window (like a transformer without its own padding)."""

    def __init__(self, scale: int = 2, window_size: int = 8) -> None:
        super().__init__()
        self.scale, self.window_size = scale, window_size
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        assert x.shape[-1] % self.window_size == 0 and x.shape[-2] % self.window_size == 0, x.shape
        return F.interpolate(self.conv(x), scale_factor=self.scale, mode="nearest")


def smooth_image(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A natural-ish test image: smooth random field plus fine noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, h // 8 + 2, w // 8 + 2), generator=g)
    img = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    img = img + 0.05 * torch.rand((n, 3, h, w), generator=g)
    return img.clamp(0, 1)


# --------------------------------------------------------------------------------------------------
# devices and precision
# --------------------------------------------------------------------------------------------------


def test_select_device_cpu_and_auto():
    assert select_device("cpu") == torch.device("cpu")
    auto = select_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["bogus", "tpu:0", "cuda:x"])
def test_select_device_bad_names(name):
    with pytest.raises(DukdError):
        select_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_select_device_cuda_unavailable():
    with pytest.raises(DukdError, match="CUDA is not available"):
        select_device("cuda")


def test_autocast_fp16_on_cpu_refused_bf16_runs():
    with pytest.raises(DukdError, match="fp16"):
        with autocast("cpu", "fp16"):
            pass
    with pytest.raises(DukdError, match="unknown precision"):
        with autocast("cpu", "fp8"):
            pass
    torch.manual_seed(0)
    m = create_model("edsr", 2, n_feats=8, n_resblocks=1).eval()
    x = smooth_image(1, 16, 20)
    a = run_model(m, x)
    b = run_model(m, x, precision="bf16")
    assert b.dtype == torch.float32
    assert (a - b).abs().max().item() < 0.05


# --------------------------------------------------------------------------------------------------
# whole-image runs
# --------------------------------------------------------------------------------------------------


def test_run_model_shape_dtype_not_clamped():
    class Bright(nn.Module):
        scale = 3

        def forward(self, x):
            return F.interpolate(x, scale_factor=3, mode="nearest") * 2 - 0.5

    x = torch.full((2, 3, 5, 7), 0.9)
    y = run_model(Bright(), x)
    assert y.shape == (2, 3, 15, 21) and y.dtype == torch.float32 and y.device == x.device
    assert y.max().item() > 1.0
    assert not torch.is_inference(y)
    y.clamp_(0, 1)  # callers clamp in place
    assert y.max().item() == 1.0
    yt = run_model(Bright(), torch.rand(1, 3, 40, 40), tile=16, tile_overlap=4)
    assert not torch.is_inference(yt) and yt.shape == (1, 3, 120, 120)


def test_run_model_rejects_bad_inputs_and_outputs():
    with pytest.raises(DukdError):
        run_model(NearestUp(), torch.rand(3, 8, 8))
    with pytest.raises(DukdError):
        run_model(NearestUp(), torch.rand(1, 4, 8, 8))

    class Wrong(nn.Module):
        scale = 2

        def forward(self, x):
            return x

    with pytest.raises(DukdError, match="expected"):
        run_model(Wrong(), torch.rand(1, 3, 8, 8))

    class NoScale(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(DukdError, match="scale"):
        run_model(NoScale(), torch.rand(1, 3, 8, 8))


def test_window_padding_and_crop():
    torch.manual_seed(0)
    m = Windowed(2, 8).eval()
    x = torch.rand(1, 3, 13, 21)
    y = run_model(m, x)
    assert y.shape == (1, 3, 26, 42)
    # Away from the padded bottom/right edge, it equals running the model on the reflect-padded input.
    xp = F.pad(x, (0, 3, 0, 3), mode="reflect")
    with torch.no_grad():
        ref = m(xp)[..., :26, :42]
    assert torch.allclose(y, ref, atol=1e-6)
    # Tiled runs pad their tiles too.
    yt = run_model(m, torch.rand(1, 3, 45, 37), tile=16, tile_overlap=4)
    assert yt.shape == (1, 3, 90, 74)


# --------------------------------------------------------------------------------------------------
# tiling
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length,tile,overlap,align",
    [(101, 32, 12, 1), (101, 32, 12, 8), (64, 64, 8, 1), (65, 64, 8, 8), (300, 48, 16, 1), (7, 16, 4, 1)],
)
def test_tile_spans_cover_with_overlap(length, tile, overlap, align):
    spans = tile_spans(length, tile, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (s0, e0), (s1, e1) in zip(spans, spans[1:], strict=False):
        assert s1 > s0 and e1 > e0
        assert e0 - s1 >= min(overlap, tile)  # neighbours overlap by at least the requested amount
    if align > 1:
        assert all(s % align == 0 for s, _ in spans)
        assert all(e - s < tile + align for s, e in spans)
    else:
        assert all(e - s == min(tile, length) for s, e in spans)


def test_axis_weights_sum_to_one():
    spans = tile_spans(101, 32, 12, 1)
    ws = axis_weights(101, spans, 3, torch.device("cpu"))
    total = torch.zeros(303)
    for w, (s, e) in zip(ws, spans, strict=True):
        assert w.min().item() > 0
        total[s * 3 : e * 3] += w
    assert torch.allclose(total, torch.ones(303), atol=1e-6)


def test_tiled_matches_whole_within_one_level_tiny_plugin(tiny_plugin):
    torch.manual_seed(1)
    m = create_model("tiny", 4, n_feats=8).eval()
    x = smooth_image(2, 75, 101, seed=3)
    whole = run_model(m, x)
    tiled = run_model(m, x, tile=32, tile_overlap=16)
    assert tiled.shape == whole.shape
    assert tiled.is_contiguous(memory_format=torch.channels_last)  # HWC views without a copy
    b = 4 * 4  # "away from the image border"
    diff = (tiled - whole)[..., b:-b, b:-b].abs().max().item()
    assert diff <= 1 / 255, diff
    # A hard stitch without blending is measurably worse than blending (the bound is not vacuous).
    assert (tiled - whole).abs().max().item() < 0.5


@pytest.mark.parametrize(
    "arch,kwargs",
    [
        ("edsr", {"n_feats": 16, "n_resblocks": 2}),
        ("swinir", {"embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 8, "num_feat": 8}),
    ],
)
def test_tiled_matches_whole_zoo(arch, kwargs):
    torch.manual_seed(0)
    m = create_model(arch, 2, **kwargs).eval()
    x = smooth_image(1, 70, 90, seed=5)
    whole = run_model(m, x)
    tiled = run_model(m, x, tile=48, tile_overlap=16)
    b = 8 * 2
    diff = (tiled - whole)[..., b:-b, b:-b].abs().max().item()
    assert diff <= 1 / 255, diff


def test_tile_argument_checks():
    m = NearestUp()
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(DukdError, match="too small"):
        run_model(m, x, tile=4)
    with pytest.raises(DukdError, match="smaller than the tile"):
        run_model(m, x, tile=16, tile_overlap=16)
    with pytest.raises(DukdError, match=">= 0"):
        run_model(m, x, tile=16, tile_overlap=-1)
    # A tile larger than the image means one piece.
    assert torch.equal(run_model(m, x, tile=64), run_model(m, x))


def test_exact_for_pointwise_model_any_tiling():
    """A model without spatial context gives bit-identical tiled output everywhere, border included."""
    m = NearestUp(3)
    x = torch.rand(1, 3, 37, 53)
    assert torch.allclose(run_model(m, x, tile=16, tile_overlap=5), run_model(m, x), atol=1e-6)


# --------------------------------------------------------------------------------------------------
# self-ensemble
# --------------------------------------------------------------------------------------------------


def test_self_ensemble_equals_plain_for_equivariant_model():
    x = torch.rand(2, 3, 11, 17)  # non-square: a missing inverse transpose would change the shape
    m = NearestUp(2)
    plain = run_model(m, x)
    ens = run_model(m, x, self_ensemble=True)
    assert ens.shape == plain.shape
    assert torch.allclose(ens, plain, atol=1e-6)
    assert torch.allclose(run_model(m, x, self_ensemble=True, tile=16, tile_overlap=4), plain, atol=1e-6)


def test_self_ensemble_is_mean_of_transforms():
    torch.manual_seed(0)
    m = create_model("edsr", 2, n_feats=8, n_resblocks=1).eval()
    x = torch.rand(1, 3, 9, 14)
    ens = run_model(m, x, self_ensemble=True)
    outs = []
    with torch.no_grad():
        outs.append(m(x))
        outs.append(m(x.flip(-1)).flip(-1))
        outs.append(m(x.flip(-2)).flip(-2))
        outs.append(m(x.flip(-1, -2)).flip(-1, -2))
        xt = x.transpose(-2, -1)
        outs.append(m(xt).transpose(-2, -1))
        outs.append(m(xt.flip(-1)).flip(-1).transpose(-2, -1))
        outs.append(m(xt.flip(-2)).flip(-2).transpose(-2, -1))
        outs.append(m(xt.flip(-1, -2)).flip(-1, -2).transpose(-2, -1))
    ref = torch.stack(outs).mean(0)
    assert torch.allclose(ens, ref, atol=1e-5)
    assert not torch.allclose(ens, run_model(m, x), atol=1e-4)  # not equivariant: it changes things


# --------------------------------------------------------------------------------------------------
# auto tile
# --------------------------------------------------------------------------------------------------


def test_auto_tile_small_image_is_whole(monkeypatch):
    monkeypatch.setattr(inference, "available_memory", lambda device: 8 << 30)
    m = create_model("edsr", 4, n_feats=16, n_resblocks=1)
    assert auto_tile(m, 64, 64, torch.device("cpu")) is None


def test_auto_tile_from_free_memory(monkeypatch):
    m = create_model("edsr", 4, n_feats=64, n_resblocks=1)
    monkeypatch.setattr(inference, "available_memory", lambda device: 8 << 30)
    big = auto_tile(m, 4000, 4000, torch.device("cpu"))
    monkeypatch.setattr(inference, "available_memory", lambda device: 256 << 20)
    small = auto_tile(m, 4000, 4000, torch.device("cpu"))
    assert big is not None and small is not None
    assert 64 <= small < big <= 2048
    assert big % 16 == 0 and small % 16 == 0
    sw = create_model("swinir", 4, embed_dim=12, depths=(2,), num_heads=(2,), window_size=12, num_feat=8)
    t = auto_tile(sw, 4000, 4000, torch.device("cpu"))
    assert t is not None and t % 12 == 0 and t % 16 == 0


def test_available_memory_cpu_positive():
    assert inference.available_memory(torch.device("cpu")) > 0


# --------------------------------------------------------------------------------------------------
# band by band (bounded memory)
# --------------------------------------------------------------------------------------------------


def whole_accumulator_reference(model, x, tile, overlap, align=1):
    """The tiled run as it was before bands: every weighted tile added into one whole float output."""
    s = model.scale
    n, _, h, w = x.shape
    out = torch.zeros((n, 3, h * s, w * s))
    ys, xs = tile_spans(h, tile, overlap, align), tile_spans(w, tile, overlap, align)
    wy, wx = axis_weights(h, ys, s, x.device), axis_weights(w, xs, s, x.device)
    with torch.inference_mode():
        for i, (y0, y1) in enumerate(ys):
            for j, (x0, x1) in enumerate(xs):
                piece = run_model(model, x[..., y0:y1, x0:x1])  # one whole piece (window padding included)
                piece.mul_(wy[i].view(-1, 1)).mul_(wx[j].view(1, -1))
                out[..., y0 * s : y1 * s, x0 * s : x1 * s] += piece
    return out


@pytest.mark.parametrize(
    "h,w,tile,overlap",
    [
        (75, 101, 32, 8),  # several tile rows and columns
        (120, 40, 64, 16),  # three tile rows meet on some output rows (the last tile moved back)
        (50, 90, 48, 0),  # no overlap: bands end where the next row starts
        (30, 30, 64, 16),  # one piece
    ],
)
def test_bands_are_bit_identical_to_the_whole_accumulator(h, w, tile, overlap):
    torch.manual_seed(0)
    m = create_model("edsr", 2, n_feats=8, n_resblocks=1).eval()
    x = smooth_image(1, h, w, seed=h)
    ticks = []
    bands = list(
        inference.iter_bands(m, x, tile=tile, tile_overlap=overlap, on_tile=lambda d, t: ticks.append((d, t)))
    )
    rows = [(r0, r1) for r0, r1, _ in bands]
    assert rows[0][0] == 0 and rows[-1][1] == 2 * h
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))  # contiguous, in order
    streamed = torch.cat([b for _, _, b in bands], dim=2)
    ref = run_model(m, x) if tile >= max(h, w) else whole_accumulator_reference(m, x, tile, overlap)
    assert torch.equal(streamed, ref)  # bit for bit, not just close
    assert torch.equal(run_model(m, x, tile=tile, tile_overlap=overlap), ref)
    n_tiles = inference.tile_count(m, x, tile=tile, tile_overlap=overlap)
    assert ticks == [(k, n_tiles) for k in range(1, n_tiles + 1)]
    # Memory grows with the tile: no band is taller than a tile row plus its overlap (output pixels).
    if tile < h:
        assert max(r1 - r0 for r0, r1 in rows) <= 2 * tile


def test_bands_windowed_model_aligned_tiles():
    torch.manual_seed(0)
    m = Windowed(2, 8).eval()
    x = smooth_image(1, 70, 83, seed=1)
    streamed = torch.cat([b for _, _, b in inference.iter_bands(m, x, tile=24, tile_overlap=8)], dim=2)
    assert torch.equal(streamed, whole_accumulator_reference(m, x, 24, 8, align=8))
