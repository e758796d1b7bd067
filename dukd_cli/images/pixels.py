"""Pixel arithmetic shared by the image writers: quantisation to n bits, float checks, grey from RGB."""

from __future__ import annotations

import numpy as np


def _quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Float [0, 1] -> uint8/uint16 by rounding (ties to even, as :func:`dukd_cli.evaluate.metrics.to_uint8`).

    Works through blocks of rows (float64 per block), so a large image costs its output array and
    a few megabytes, not several float64 copies of itself.
    """
    top = 255 if bits == 8 else 65535
    out = np.empty(x.shape, dtype=np.uint8 if bits == 8 else np.uint16)
    row = max(1, int(np.prod(x.shape[1:])))
    step = max(1, (1 << 20) // row)
    for r0 in range(0, x.shape[0], step):
        blk = np.clip(x[r0 : r0 + step].astype(np.float64), 0.0, 1.0)
        blk *= top
        np.round(blk, out=blk)
        out[r0 : r0 + step] = blk
    return out


def _as_float01(a: np.ndarray, what: str) -> np.ndarray:
    """A float view of ``a`` in [0, 1]; float arrays pass through without a copy."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / np.float32(65535.0)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what} must be a float array in [0, 1] (or uint8), got {a.dtype}")
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    """One gray plane: the R plane when R = G = B, else ITU-R 601 luma (Pillow's L conversion)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r
    return r * 0.299 + g * 0.587 + b * 0.114
