"""MATLAB-exact bicubic imresize: bit-exact against the MATLAB fixtures, plus its invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dukd_cli.data import imresize as imr
from dukd_cli.data.imresize import imresize, imresize_np, modcrop, resize_weights

SET5 = ["baby", "bird", "butterfly", "head", "woman"]


def _rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("s", [2, 3, 4])
def test_matches_matlab_fixtures_bit_exact(shared, s):
    """imresize(modcrop(HR, s), 1/s) on uint8 == MATLAB's imresize, 100% of the pixels."""
    hr_dir = shared / "data" / "benchmarks" / "Set5" / "HR"
    lr_dir = shared / "data" / "matlab_lr" / "Set5" / f"x{s}"
    if not lr_dir.is_dir():
        pytest.skip(f"MATLAB fixtures not found at {lr_dir}")
    total = differ = 0
    for name in SET5:
        hr = modcrop(_rgb(hr_dir / f"{name}.png"), s)
        ref = _rgb(lr_dir / f"{name}.png")
        out = imresize_np(hr, 1 / s)
        assert out.dtype == np.uint8
        assert out.shape == ref.shape, name
        differ += int(np.count_nonzero(out != ref))
        total += ref.size
    assert differ == 0, f"x{s}: {differ} of {total} values differ from MATLAB"


def _reference(x: np.ndarray, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Straight transcription of MATLAB's contributions + resize along axis 0 (float64, dense)."""
    in_len = x.shape[0]
    width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        width /= scale
    out = np.zeros((out_len,) + x.shape[1:])
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + k for k in range(int(math.ceil(width)) + 2)]
        w = []
        for t in taps:
            d = u - t
            a = abs(scale * d if shrink else d)
            c = (
                1.5 * a**3 - 2.5 * a**2 + 1
                if a <= 1
                else (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2 if a <= 2 else 0.0)
            )
            w.append(scale * c if shrink else c)
        total = sum(w)
        for t, wk in zip(taps, w, strict=True):
            j = t - 1  # 0-based, then mirror (symmetric, edge repeated)
            j = j % (2 * in_len)
            if j >= in_len:
                j = 2 * in_len - 1 - j
            out[i - 1] += wk / total * x[j]
    return out


@pytest.mark.parametrize(
    ("h", "w", "scale", "antialias"),
    [
        (17, 23, 0.5, True),
        (19, 13, 1 / 3, True),
        (21, 20, 0.25, True),
        (9, 7, 2.0, True),
        (8, 11, 3.0, True),
        (13, 17, 2.5, True),
        (30, 9, 0.37, True),
        (16, 16, 0.5, False),
        (5, 6, 0.3, True),
    ],
)
def test_float_mode_matches_reference_transcription(h, w, scale, antialias):
    rng = np.random.default_rng(0)
    x = rng.random((h, w)) * 255
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    ref = _reference(_reference(x, out_h, scale, antialias).T, out_w, scale, antialias).T
    got = imresize(torch.from_numpy(x), scale, antialias=antialias).numpy()
    assert got.shape == (out_h, out_w)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_uint8_mode_is_float_mode_rounded_per_pass():
    """One pass only (width unchanged): uint8 mode == floor(float64 mode + 0.5), clamped, exactly."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, (3, 61, 40), dtype=np.uint8))
    for out_h in (15, 20, 31, 122, 150):
        f = imresize(x.double(), size=(out_h, 40))
        u = imresize(x, size=(out_h, 40))
        assert u.dtype == torch.uint8
        assert torch.equal(u, torch.floor(f + 0.5).clamp(0, 255).to(torch.uint8))
        f32 = imresize(x.float(), size=(out_h, 40))
        assert f32.dtype == torch.float32
        assert torch.allclose(f32.double(), f, atol=1e-3, rtol=0)
    # Two passes: the uint8 result is the float64 result of the rounded first pass, rounded.
    first = imresize(x, size=(20, 40))
    both = imresize(x, size=(20, 17))
    again = torch.floor(imresize(first.double(), size=(20, 17)) + 0.5).clamp(0, 255).to(torch.uint8)
    assert torch.equal(both, again)


def test_intermediate_rounding_matters():
    """Rounding after each pass (MATLAB) differs from rounding once at the end on some pixels."""
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.integers(0, 256, (3, 96, 96), dtype=np.uint8))
    once = torch.floor(imresize(x.double(), 1 / 3) + 0.5).clamp(0, 255).to(torch.uint8)
    assert not torch.equal(imresize(x, 1 / 3), once)


def test_half_rounds_away_from_zero():
    """A 2x upscale has dyadic weights (k/128), so exact x.5 values occur: MATLAB rounds them up,
    also where round-half-to-even would round down."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    f = imresize(x.double(), size=(64, 128))
    u = imresize(x, size=(64, 128))
    ties = (f - torch.floor(f)) == 0.5
    even = ties & (torch.floor(f) % 2 == 0)
    assert int(even.sum()) > 0
    assert torch.equal(u[ties].double(), (f[ties] + 0.5).clamp(0, 255))
    assert not torch.equal(u[even].double(), torch.round(f[even]))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_batched_equals_per_image(dtype):
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(0, 256, (4, 3, 45, 38), dtype=np.uint8)).to(dtype)
    for scale in (1 / 2, 1 / 3, 1 / 4, 2, 3, 4):
        batched = imresize(x, scale)
        single = torch.stack([imresize(x[i], scale) for i in range(x.shape[0])])
        per_plane = torch.stack([torch.stack([imresize(x[i, c], scale) for c in range(3)]) for i in range(4)])
        assert batched.dtype == dtype
        assert torch.equal(batched, single)
        assert torch.equal(batched, per_plane)


@pytest.mark.parametrize("in_len", [1, 2, 7, 255, 256, 481, 1356, 2040])
@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.37, 1.0, 2.0, 2.5, 3.0, 4.0])
def test_output_length_is_ceil(in_len, scale):
    w, idx = resize_weights(in_len, math.ceil(in_len * scale), scale)
    assert w.shape[0] == math.ceil(in_len * scale)
    assert idx.min() >= 0 and idx.max() < in_len
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def test_shapes_and_layouts():
    x = torch.zeros(2, 3, 50, 33, dtype=torch.uint8)
    assert imresize(x, 1 / 3).shape == (2, 3, 17, 11)
    assert imresize(x[0], 1 / 3).shape == (3, 17, 11)
    assert imresize(x[0, 0], 1 / 3).shape == (17, 11)
    assert imresize(x, 2.5).shape == (2, 3, 125, 83)
    assert imresize(x, size=(10, 70)).shape == (2, 3, 10, 70)
    a = np.zeros((50, 33, 3), dtype=np.uint8)
    assert imresize_np(a, 1 / 4).shape == (13, 9, 3)
    assert imresize_np(a[..., 0], 4).shape == (200, 132)
    assert imresize_np(a.astype(np.float32), 0.5).dtype == np.float32


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_constant_image_stays_constant(dtype):
    for value in (0, 1, 77, 254, 255):
        x = torch.full((3, 37, 29), value, dtype=dtype)
        for scale in (1 / 2, 1 / 3, 1 / 4, 0.3, 2, 3, 4, 1.7):
            y = imresize(x, scale)
            assert y.dtype == dtype
            if dtype == torch.uint8:
                assert torch.all(y == value)
            else:
                assert torch.allclose(
                    y.double(),
                    torch.full_like(y, value).double(),
                    rtol=1e-2 if y.element_size() == 2 else 1e-6,
                )


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_identity(dtype):
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 20, 27), dtype=np.uint8)).to(dtype)
    assert torch.equal(imresize(x, 1.0), x)
    assert torch.equal(imresize(x, size=(20, 27)), x)


def test_linear_ramp_is_preserved_in_the_interior():
    """Cubic convolution reproduces linear functions away from the mirrored borders."""
    x = torch.arange(64, dtype=torch.float64).repeat(64, 1)  # value = column
    y = imresize(x, 2.0)
    cols = (torch.arange(1, 129, dtype=torch.float64) / 2 + 0.5 * (1 - 1 / 2)) - 1
    assert torch.allclose(y[:, 4:-4], cols[4:-4].expand(128, -1), atol=1e-12)
    z = imresize(x, 0.5)
    cols = (torch.arange(1, 33, dtype=torch.float64) * 2 + 0.5 * (1 - 2)) - 1
    assert torch.allclose(z[:, 4:-4], cols[4:-4].expand(32, -1), atol=1e-12)


def test_symmetric_input_gives_symmetric_output():
    rng = np.random.default_rng(5)
    half = rng.random((24, 12))
    x = torch.from_numpy(np.concatenate([half, half[:, ::-1]], axis=1))
    y = imresize(x, 0.5)
    assert torch.allclose(y, y.flip(-1), atol=1e-12)


def test_size_uses_per_axis_scale_and_matlab_dimension_order():
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.integers(0, 256, (3, 40, 60), dtype=np.uint8))
    # Width scale (15/60) smaller than height scale (20/40): MATLAB resizes the width first.
    y = imresize(x, size=(20, 15))
    w_first = imresize(imresize(x, size=(40, 15)), size=(20, 15))
    h_first = imresize(imresize(x, size=(20, 60)), size=(20, 15))
    assert torch.equal(y, w_first)
    assert not torch.equal(y, h_first)
    # Equal scales: height first.
    z = imresize(x, size=(20, 30))
    assert torch.equal(z, imresize(imresize(x, size=(20, 60)), size=(20, 30)))
    assert torch.equal(z, imresize(x, 0.5))
    # The per-axis scale drives the kernel: same as giving that scale on a one-axis resize.
    w_h, _ = resize_weights(40, 20, 20 / 40)
    w_s, _ = resize_weights(40, 20, 0.5)
    np.testing.assert_array_equal(w_h, w_s)


def test_antialias_off_uses_narrow_kernel():
    w_on, _ = resize_weights(100, 25, 0.25, True)
    w_off, _ = resize_weights(100, 25, 0.25, False)
    assert w_on.shape[1] > w_off.shape[1] == 4
    x = torch.rand(1, 40, 40, dtype=torch.float64)
    assert not torch.allclose(imresize(x, 0.25), imresize(x, 0.25, antialias=False))


def test_thread_pool_and_sequential_paths_agree(monkeypatch):
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 300, 257), dtype=np.uint8))
    pooled = imresize(x, 1 / 3), imresize(x, 2.0), imresize(x.float(), 1 / 3)
    monkeypatch.setattr(imr, "_USE_POOL", False)
    seq = imresize(x, 1 / 3), imresize(x, 2.0), imresize(x.float(), 1 / 3)
    for a, b in zip(pooled, seq, strict=True):
        assert torch.equal(a, b)


def test_inference_mode_and_no_grad():
    x = torch.rand(2, 3, 200, 150)
    with torch.inference_mode():
        a = imresize(x, 0.5)
        b = imresize((x * 255).to(torch.uint8), 0.5)
    with torch.no_grad():
        assert torch.equal(a, imresize(x, 0.5))
        assert torch.equal(b, imresize((x * 255).to(torch.uint8), 0.5))


def test_float_mode_is_differentiable():
    x = torch.rand(1, 2, 9, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, size=(13, 7)), (x,))
    y = imresize(x, 2.0)
    assert torch.allclose(y, imresize(x.detach(), 2.0))


def test_modcrop_tensor_and_array():
    a = np.zeros((481, 321, 3))
    assert modcrop(a, 4).shape == (480, 320, 3)
    assert modcrop(a[..., 0], 3).shape == (480, 321)
    t = torch.zeros(2, 3, 481, 321)
    assert modcrop(t, 2).shape == (2, 3, 480, 320)
    arr = np.arange(7 * 5).reshape(7, 5)
    np.testing.assert_array_equal(modcrop(arr, 2), arr[:6, :4])  # top-left anchored
    with pytest.raises(ValueError):
        modcrop(a, 0)


def test_bad_arguments():
    x = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(ValueError):
        imresize(x, 0.5, size=(4, 4))
    with pytest.raises(ValueError):
        imresize(x, -1.0)
    with pytest.raises(ValueError):
        imresize(torch.zeros(1, 1, 1, 8, 8), 0.5)
    with pytest.raises(TypeError):
        imresize(torch.zeros(8, 8, dtype=torch.int32), 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 123, 97), dtype=np.uint8))
    for scale in (1 / 2, 1 / 3, 1 / 4, 4):
        cpu = imresize(x, scale)
        gpu = imresize(x.cuda(), scale)
        assert gpu.is_cuda
        assert torch.equal(gpu.cpu(), cpu)
        f_cpu = imresize(x.float(), scale)
        f_gpu = imresize(x.float().cuda(), scale)
        assert torch.allclose(f_gpu.cpu(), f_cpu, atol=1e-3)
