"""PSNR and SSIM exactly as the SR literature computes them (the protocol in shared/docs/protocol.md).

* Compare uint8 images: a network's float output is clamped to [0, 1], scaled by 255 and rounded
  (:func:`to_uint8`).
* Crop ``crop_border`` (= the scale) pixels from every border.
* Measure on the Y channel of YCbCr: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with R, G, B in
  [0, 1], not rounded (:func:`rgb_to_y`); data range 255.
* SSIM: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, statistics over the *valid*
  region only (the window never leaves the image), averaged over the SSIM map: MATLAB's
  ``ssim_index`` and BasicSR's ``calculate_ssim``. scikit-image's ``structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` gives the same number to
  ~1e-15 (it filters the whole image and then drops the 5-pixel border, which is the valid
  region; the tests check the agreement), but it runs on scipy, which this project does not
  declare, so the filter is written here: a separable 11-tap Gaussian applied with shifted
  slices in float64, in blocks of rows (about as fast: ~0.4 s for 2000x2000 on one busy core).
* Grayscale images (H, W) are treated as R = G = B.
* A dataset's figure is the mean of the per-image figures (done by the caller).

PSNR of two identical images is ``inf`` (the MSE is zero): callers that average over a dataset
should not feed identical images, and a reported ``inf`` is the truthful answer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["rgb_to_y", "to_uint8", "psnr", "psnr_y", "ssim_y", "ssim", "gaussian_window"]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def to_uint8(t: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Quantise a float image in [0, 1] to uint8: clamp to [0, 1], multiply by 255, round.

    Accepts a torch tensor (returns a uint8 tensor, same shape and device) or a numpy array
    (returns a uint8 array). Computed in float32 (float64 for float64 input), rounding to nearest
    with ties to even (``torch.round`` / ``np.round``): BasicSR's ``tensor2img`` convention, and
    both paths give identical results. uint8 input is returned unchanged.
    """
    if isinstance(t, torch.Tensor):
        if t.dtype == torch.uint8:
            return t
        x = t.detach()
        x = x.double() if x.dtype == torch.float64 else x.float()
        return x.clamp(0, 1).mul(255).round().to(torch.uint8)
    a = np.asarray(t)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64 if a.dtype == np.float64 else np.float32)
    return np.round(np.clip(a, 0, 1) * a.dtype.type(255)).astype(np.uint8)


def _as_rgb01(img: np.ndarray) -> np.ndarray:
    """An (H, W, 3) float64 array in [0, 1] from an (H, W[, 3]) uint8 or float [0, 1] image."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    raise TypeError(f"expected a uint8 or floating image, got {a.dtype}")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y channel of YCbCr (ITU-R BT.601, studio range) in [16, 235], as float64 on a [0, 255] scale.

    ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with R, G, B in [0, 1]. ``img`` is (H, W, 3) or
    (H, W) (gray: R = G = B), uint8 (divided by 255) or float in [0, 1]. Not rounded.
    """
    rgb = _as_rgb01(img)
    return rgb @ _Y_WEIGHTS + 16.0


def _check_pair(a: np.ndarray, b: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"nothing left after cropping {crop_border} pixels from a {a.shape} image")
    return a, b


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB between two arrays or tensors of the same shape (any layout), in float64.

    The generic helper, e.g. for "student output vs teacher output" on [0, 1] tensors
    (``data_range=1``). Returns ``inf`` for identical inputs.
    """
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    if isinstance(b, torch.Tensor):
        b = b.detach().cpu().double().numpy()
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    d = a - b
    return _psnr_from_mse(float(np.mean(d * d)), float(data_range))


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """PSNR (dB) on the Y channel of two (H, W, 3) or (H, W) uint8 images, borders cropped.

    Returns ``inf`` when the cropped Y channels are identical.
    """
    sr, hr = _check_pair(sr, hr, crop_border)
    d = rgb_to_y(sr) - rgb_to_y(hr)
    return _psnr_from_mse(float(np.mean(d * d)), 255.0)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian taps; their outer product is MATLAB's ``fspecial('gaussian')``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(stack: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of each (H, W) plane of ``stack`` (P, H, W) with ``g`` x ``g``.

    ``g`` must be symmetric (odd length): mirrored taps are added before multiplying, which halves
    the multiplications. Temporaries are reused (in-place numpy operations).
    """
    n = g.shape[0]
    c = n // 2
    h, w = stack.shape[1] - n + 1, stack.shape[2] - n + 1
    rows = stack[:, c : c + h, :] * g[c]
    tmp = np.empty_like(rows)
    for k in range(c):
        np.add(stack[:, k : k + h, :], stack[:, n - 1 - k : n - 1 - k + h, :], out=tmp)
        tmp *= g[k]
        rows += tmp
    out = rows[:, :, c : c + w] * g[c]
    tmp = tmp[:, :, :w]
    for k in range(c):
        np.add(rows[:, :, k : k + w], rows[:, :, n - 1 - k : n - 1 - k + w], out=tmp)
        tmp *= g[k]
        out += tmp
    return out


# Output rows of the SSIM map computed per block: keeps the five filtered planes cache-sized.
_SSIM_BLOCK_ROWS = 32


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM of two single-channel images (H, W) with the Gaussian 11x11 / sigma 1.5 window.

    Statistics over the valid region only (the window stays inside the image); K1 = 0.01,
    K2 = 0.03; the mean of the SSIM map. Images must be at least 11x11. Computed in float64, in
    blocks of rows (a 2000x2000 image takes a fraction of a second).
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two single-channel images of one shape, got {x.shape} and {y.shape}")
    g = gaussian_window(11, 1.5)
    n = g.size
    if x.shape[0] < n or x.shape[1] < n:
        raise ValueError(f"SSIM needs images of at least {n}x{n} pixels, got {x.shape}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    out_h = x.shape[0] - n + 1
    out_w = x.shape[1] - n + 1
    total = 0.0
    for r0 in range(0, out_h, _SSIM_BLOCK_ROWS):
        r1 = min(out_h, r0 + _SSIM_BLOCK_ROWS)
        xs = x[r0 : r1 + n - 1]
        ys = y[r0 : r1 + n - 1]
        stats = _filter_valid(np.stack([xs, ys, xs * xs, ys * ys, xs * ys]), g)
        mu1, mu2 = stats[0], stats[1]
        mu1_sq = mu1 * mu1
        mu2_sq = mu2 * mu2
        mu12 = mu1 * mu2
        num = (2 * mu12 + c1) * (2 * (stats[4] - mu12) + c2)
        den = (mu1_sq + mu2_sq + c1) * ((stats[2] - mu1_sq) + (stats[3] - mu2_sq) + c2)
        total += float(np.sum(num / den))
    return total / (out_h * out_w)


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """SSIM on the Y channel of two (H, W, 3) or (H, W) uint8 images, borders cropped, range 255."""
    sr, hr = _check_pair(sr, hr, crop_border)
    return ssim(rgb_to_y(sr), rgb_to_y(hr), 255.0)
