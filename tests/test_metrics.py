"""PSNR / SSIM on Y exactly as the protocol says, and the bicubic baseline table as acceptance test."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from dukd_cli.data.imresize import imresize, modcrop
from dukd_cli.evaluate.metrics import gaussian_window, psnr, psnr_y, rgb_to_y, ssim, ssim_y, to_uint8
from dukd_cli.images.imageio import read_rgb_uint8


def test_rgb_to_y_formula():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb_to_y(img)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)
    # Float input in [0, 1] gives the same; gray (H, W) is R = G = B.
    np.testing.assert_allclose(rgb_to_y(img.astype(np.float64) / 255), y, atol=1e-12)
    gray = np.array([[0, 128, 255]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(gray), rgb_to_y(np.repeat(gray[..., None], 3, axis=2)), atol=1e-12)
    np.testing.assert_allclose(rgb_to_y(gray)[0, 1], 16 + 219 * 128 / 255, atol=1e-12)


def test_to_uint8_tensor_and_array():
    t = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 0.25, 1.0, 1.7])
    u = to_uint8(t)
    assert u.dtype == torch.uint8
    assert u.tolist() == [0, 0, 0, 2, 64, 255, 255]  # clamp, x255, round (ties to even)
    a = to_uint8(t.numpy())
    assert a.dtype == np.uint8 and a.tolist() == u.tolist()
    x = np.array([3, 4], dtype=np.uint8)
    assert to_uint8(x) is x


def test_psnr_values():
    a = np.zeros((20, 20, 3), dtype=np.uint8)
    b = a.copy()
    assert psnr_y(a, b, 2) == math.inf
    b[:] = 1  # Y differs by 219/255 everywhere
    assert psnr_y(a, b, 2) == pytest.approx(10 * math.log10(255**2 / (219 / 255) ** 2), abs=1e-9)
    # Border pixels are ignored.
    c = a.copy()
    c[:2] = 200
    c[:, -2:] = 200
    assert psnr_y(a, c, 2) == math.inf
    assert psnr_y(a, c, 1) < 30
    # Generic helper: tensors or arrays, any data range.
    x = torch.zeros(1, 3, 8, 8)
    assert psnr(x, x + 0.1, 1.0) == pytest.approx(20.0, abs=1e-5)
    assert psnr(np.zeros(4), np.full(4, 2.55), 255.0) == pytest.approx(40.0, abs=1e-9)
    assert psnr(x, x) == math.inf
    with pytest.raises(ValueError):
        psnr_y(a, a[:10], 2)
    with pytest.raises(ValueError):
        psnr_y(a, a, 10)


def _ssim_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    """Per-window SSIM with the full 11x11 Gaussian, valid positions only (MATLAB ssim_index)."""
    g = gaussian_window()
    w = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            sx = (w * px * px).sum() - mx * mx
            sy = (w * py * py).sum() - my * my
            sxy = (w * px * py).sum() - mx * my
            vals.append((2 * mx * my + c1) * (2 * sxy + c2) / ((mx * mx + my * my + c1) * (sx + sy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_window_definition_and_skimage():
    rng = np.random.default_rng(0)
    x = rng.random((23, 31)) * 255
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    assert ssim(x, y) == pytest.approx(_ssim_bruteforce(x, y), abs=1e-12)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    skm = pytest.importorskip("skimage.metrics")
    big_x = rng.random((157, 203)) * 255
    big_y = np.clip(big_x + rng.normal(0, 10, big_x.shape), 0, 255)
    ref = skm.structural_similarity(
        big_x, big_y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(big_x, big_y) == pytest.approx(ref, abs=1e-10)


def test_ssim_y_gray_and_crop():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    rgb_a, rgb_b = (np.repeat(v[..., None], 3, axis=2) for v in (a, b))
    assert ssim_y(a, b, 3) == ssim_y(rgb_a, rgb_b, 3)
    assert psnr_y(a, b, 3) == psnr_y(rgb_a, rgb_b, 3)
    assert ssim_y(a, b, 3) == pytest.approx(ssim(rgb_to_y(a)[3:-3, 3:-3], rgb_to_y(b)[3:-3, 3:-3]), abs=0)
    with pytest.raises(ValueError):
        ssim_y(a[:20, :20], b[:20, :20], 5)  # 10x10 left: smaller than the window


# The protocol's reference table (bicubic baseline, BasicSR convention for gray images).
REFERENCE = {
    "Set5": {2: (33.67, 0.9303), 3: (30.40, 0.8689), 4: (28.43, 0.8111)},
    "Set14": {2: (30.32, 0.8699), 3: (27.63, 0.7759), 4: (26.09, 0.7048)},
    "BSD100": {2: (29.56, 0.8434), 3: (27.21, 0.7391), 4: (25.96, 0.6681)},
}


def _bicubic_figures(path, scales=(2, 3, 4)) -> dict[int, tuple[float, float]]:
    hr_full = read_rgb_uint8(path)
    out = {}
    for s in scales:
        hr = modcrop(hr_full, s)
        t = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)
        sr = imresize(imresize(t, 1 / s), s).permute(1, 2, 0).numpy()
        out[s] = (psnr_y(sr, hr, s), ssim_y(sr, hr, s))
    return out


def test_bicubic_baseline_reproduces_the_reference_table(benchmarks_dir):
    """The acceptance test: read HR, modcrop, MATLAB-bicubic down and up (uint8), PSNR/SSIM on Y."""
    measured = {}
    for name in REFERENCE:
        hr_dir = benchmarks_dir / name / "HR"
        files = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in (".png", ".bmp", ".jpg"))
        assert files, f"no images in {hr_dir}"
        with ThreadPoolExecutor(max_workers=2) as pool:
            per_image = list(pool.map(_bicubic_figures, files))
        measured[name] = {
            s: (float(np.mean([f[s][0] for f in per_image])), float(np.mean([f[s][1] for f in per_image])))
            for s in (2, 3, 4)
        }
    report = "\n".join(
        f"{n} x{s}: {measured[n][s][0]:.4f} / {measured[n][s][1]:.4f} (ref {REFERENCE[n][s][0]:.2f} / {REFERENCE[n][s][1]:.4f})"
        for n in REFERENCE
        for s in (2, 3, 4)
    )
    print(report)
    for n in REFERENCE:
        for s in (2, 3, 4):
            p, q = measured[n][s]
            rp, rq = REFERENCE[n][s]
            assert abs(p - rp) <= 0.01, f"{n} x{s} PSNR {p:.4f} vs {rp}\n{report}"
            assert abs(q - rq) <= 0.0015, f"{n} x{s} SSIM {q:.4f} vs {rq}\n{report}"
