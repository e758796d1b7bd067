"""Invertible augmentations and data upcycling (zoom-in / zoom-out)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from dukd_cli.data.imresize import imresize
from dukd_cli.distill.augment import DEFAULT_OPS, OPS, AugPlan, sample_plan
from dukd_cli.distill.upcycle import pick_tiles, zoom_in, zoom_out

ALL_OPS = tuple(OPS)  # hflip, vflip, transpose, rot90, invert


def _every_subset_plan(ops: tuple[str, ...]) -> AugPlan:
    """One sample per subset of ``ops``: sample i switches on the ops in the bits of i."""
    n = 2 ** len(ops)
    mask = torch.tensor([[bool(i >> k & 1) for k in range(len(ops))] for i in range(n)])
    return AugPlan(ops, mask)


@pytest.mark.parametrize("order", list(itertools.permutations(ALL_OPS)))
def test_inverse_undoes_every_combination_in_every_order(order):
    plan = _every_subset_plan(order)
    x = torch.rand(plan.mask.shape[0], 3, 6, 6)
    assert torch.equal(plan.invert(plan.apply(x)), x)
    # The property DUKD needs: for an equivariant "network" (nearest upscaling commutes with flips,
    # transposes, rotations and 1 - x), D^-1(net(D(x))) == net(x) at the output resolution.
    net = lambda t: F.interpolate(t, scale_factor=3, mode="nearest")  # noqa: E731
    assert torch.equal(plan.invert(net(plan.apply(x))), net(x))


def test_released_code_inverse_is_wrong_for_transpose_plus_one_flip():
    """Re-applying the same list in the same order is not an inverse (the released code's defect)."""
    x = torch.rand(1, 3, 5, 5)
    plan = AugPlan(("hflip", "transpose"), torch.tensor([[True, True]]))
    assert not torch.equal(plan.apply(plan.apply(x)), x)  # that is a 180 degree rotation
    assert torch.equal(plan.apply(plan.apply(x)), x.rot90(2, (-2, -1)))
    assert torch.equal(plan.invert(plan.apply(x)), x)


def test_plan_is_per_sample_and_repeats_tile_major():
    plan = AugPlan(("invert",), torch.tensor([[True], [False]]))
    x = torch.full((2, 1, 2, 2), 0.25)
    y = plan.apply(x)
    assert torch.allclose(y[0], torch.full((1, 2, 2), 0.75)) and torch.equal(y[1], x[1])
    rep = plan.repeat(2)
    assert rep.mask[:, 0].tolist() == [True, False, True, False]


def test_sample_plan_probability_and_reproducibility():
    g = torch.Generator().manual_seed(0)
    plan = sample_plan(20000, 0.3, DEFAULT_OPS, g)
    assert plan.mask.shape == (20000, len(DEFAULT_OPS))
    rate = plan.mask.float().mean(0)
    assert torch.all((rate - 0.3).abs() < 0.02)
    a = sample_plan(7, 0.5, DEFAULT_OPS, torch.Generator().manual_seed(3)).mask
    b = sample_plan(7, 0.5, DEFAULT_OPS, torch.Generator().manual_seed(3)).mask
    assert torch.equal(a, b)
    assert not sample_plan(50, 0.0, DEFAULT_OPS, g).mask.any()


def test_transpose_needs_square():
    plan = AugPlan(("transpose",), torch.tensor([[True]]))
    with pytest.raises(ValueError, match="square"):
        plan.apply(torch.rand(1, 3, 4, 5))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_zoom_in_tiles_are_lr_sized_hr_crops(scale):
    p, n = 8, 3
    hr = torch.rand(n, 3, p * scale, p * scale)
    tiles = pick_tiles(scale, 2 if scale > 1 else 1, torch.Generator().manual_seed(1))
    assert len(set(tiles)) == len(tiles)
    zi = zoom_in(hr, p, scale, tiles)
    assert zi.shape == (len(tiles) * n, 3, p, p)
    for k, t in enumerate(tiles):
        r, c = divmod(t, scale)
        # Tile-major: the same tile position for the whole batch.
        assert torch.equal(zi[k * n : (k + 1) * n], hr[:, :, r * p : (r + 1) * p, c * p : (c + 1) * p])


@pytest.mark.parametrize(("scale", "p"), [(2, 48), (3, 48), (4, 48), (4, 10)])
def test_zoom_out_is_batched_exact_bicubic(scale, p):
    lr = torch.rand(5, 3, p, p)
    zo = zoom_out(lr, scale, clamp=False)
    side = math.ceil(p / scale)
    assert zo.shape == (5, 3, side, side)
    # One batched call equals per-image MATLAB-bicubic float resizes.
    for i in range(5):
        assert torch.allclose(zo[i], imresize(lr[i], 1 / scale), atol=1e-6)
    clamped = zoom_out(lr, scale)
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_pick_tiles_bounds():
    with pytest.raises(ValueError):
        pick_tiles(2, 5)
    assert pick_tiles(4, 0) == []


def test_default_ops_and_draw_are_the_released_ones():
    """Released order: invert, flip of the height axis, flip of the width axis, transpose; one draw per op."""
    assert DEFAULT_OPS == ("invert", "vflip", "hflip", "transpose")
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    plan = sample_plan(7, 0.3, DEFAULT_OPS, g1)
    for k in range(len(DEFAULT_OPS)):  # op after op, every sample: on where u >= 1 - p
        assert torch.equal(plan.mask[:, k], torch.rand(7, generator=g2) >= 0.7)
    assert not sample_plan(50, 0.0, DEFAULT_OPS, g1).mask.any()
    assert sample_plan(50, 1.0, DEFAULT_OPS, g1).mask.all()


def test_redo_is_the_released_reapplication():
    x = torch.rand(16, 3, 5, 5)
    plan = _every_subset_plan(DEFAULT_OPS)
    y = plan.apply(x)
    redo = plan.redo(y)
    assert torch.equal(plan.undo(y, true_inverse=False), redo)
    assert torch.equal(plan.undo(y, true_inverse=True), x)
    for i in range(16):  # bits: invert 1, vflip 2, hflip 4, transpose 8
        t, flips = bool(i & 8), bool(i & 2) + bool(i & 4)
        want = x[i].rot90(2, (-2, -1)) if (t and flips == 1) else x[i]
        assert torch.equal(redo[i], want), i
