"""Data upcycling: new in-domain inputs made from the training pair itself (DUKD).

* **zoom-in**: the HR patch (``p*s`` square) is an ``s x s`` grid of ``p x p`` tiles; each tile is an
  LR-sized, LR-like input. ``n`` tiles are picked at random, the same positions for the whole batch
  (as the authors do).
* **zoom-out**: the LR patch downscaled by ``1/s`` with the MATLAB-exact bicubic (float mode,
  antialiased) in one batched call on the training device; its ground truth is the LR patch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dukd_cli.data.imresize import imresize


def tile_grid(scale: int) -> int:
    """Number of LR-sized tiles in an HR patch at ``scale``."""
    return int(scale) * int(scale)


def pick_tiles(scale: int, n: int, generator: torch.Generator | None = None) -> list[int]:
    """``n`` distinct tile indices in the ``s x s`` grid (row-major), drawn on the CPU."""
    total = tile_grid(scale)
    if not 0 <= n <= total:
        raise ValueError(f"cannot pick {n} of the {total} zoom-in tiles at x{scale}")
    return torch.randperm(total, generator=generator)[:n].tolist()


def zoom_in(hr: Tensor, lr_size: int, scale: int, tiles: list[int]) -> Tensor:
    """Cut the chosen ``lr_size`` tiles out of HR patches (N, C, lr_size*s, lr_size*s).

    Returns (len(tiles) * N, C, lr_size, lr_size), tile-major: rows ``k*N .. (k+1)*N`` are tile
    ``tiles[k]`` of every sample.
    """
    n, c, h, w = hr.shape
    p, s = int(lr_size), int(scale)
    if h != p * s or w != p * s:
        raise ValueError(f"HR patch {h}x{w} is not {s} x the LR patch size {p}")
    out = []
    for t in tiles:
        r, q = divmod(int(t), s)
        out.append(hr[:, :, r * p : (r + 1) * p, q * p : (q + 1) * p])
    if not out:
        return hr.new_empty((0, c, p, p))
    return torch.cat(out, 0)


def zoom_out(lr: Tensor, scale: int, clamp: bool = True) -> Tensor:
    """LR patches (N, C, p, p) downscaled by ``1/s``: MATLAB bicubic, antialiased, float, one call.

    The result has side ``ceil(p / s)``. Bicubic overshoots slightly; ``clamp`` keeps the new input
    in [0, 1] like every real input (colour inversion relies on it).
    """
    x = imresize(lr.float(), 1.0 / int(scale))
    return x.clamp_(0.0, 1.0) if clamp else x
