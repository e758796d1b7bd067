"""Upscaling one image in memory: tile and overlap rules, the output size, EXIF orientation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from dukd_cli.errors import DukdError
from dukd_cli.models.upscaler import Upscaler, as_upscaler
from dukd_cli.upscale.inference import (
    MIN_TILE,
    auto_tile,
    model_device,
    run_model,
)

if TYPE_CHECKING:
    from dukd_cli.images.imageio import LoadedImage

OUTPUT_EXTS = ("png", "jpg", "webp")
EXT_ALIASES = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}
# What a folder listing picks up; other files in a folder are ignored (named inputs are all tried).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".tga")
ALPHA_MODES = ("bicubic", "model")


@dataclass
class UpscaleResult:
    """An upscaled image ready for :func:`dukd_cli.images.imageio.write_image`.

    ``rgb``: HxWx3 float32 in [0, 1] (for gray images the three channels are equal-weighted into
    luma by the writer); ``alpha``: HxW float32 in [0, 1] or ``None``.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    mode: str  # "RGB" or "L" (the writer's mode)
    bit_depth: int
    icc_profile: bytes | None = None
    exif: bytes | None = None


def parse_tile(value: str | int | None) -> int | str | None:
    """``--tile``: ``auto``, ``0`` / ``none`` / ``off`` for whole images, or a size of at least
    :data:`~dukd_cli.upscale.inference.MIN_TILE` pixels; anything else (negative, 1-15, text) is refused."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "0", "none", "off", "no"):
        return None
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or n < MIN_TILE:
        raise DukdError(
            f"--tile must be 'auto', 0 (whole images) or a size of at least {MIN_TILE} pixels, not '{value}'"
        )
    return n


def check_overlap(tile: int | str | None, overlap: int | None) -> int | None:
    """``--tile-overlap``: ``None`` (the default), or 0 up to a quarter of a numeric ``--tile``."""
    if overlap is None:
        return None
    overlap = int(overlap)
    if overlap < 0:
        raise DukdError(f"--tile-overlap must be 0 or more, not {overlap}")
    if isinstance(tile, int) and overlap > tile // 4:
        raise DukdError(
            f"--tile-overlap {overlap} is above its limit for --tile {tile} (at most tile/4 = {tile // 4})"
        )
    return overlap


def resolve_tile(
    tile: int | str | None,
    model: Upscaler,
    h: int,
    w: int,
    precision: str = "fp32",
    overlap: int | None = None,
) -> int | None:
    """The tile side for an ``h`` x ``w`` image: ``auto`` picks it from free memory (at least four
    times an explicit ``overlap``, so that the overlap stays within its limit of tile/4)."""
    if tile == "auto":
        dev = model_device(model, torch.device("cpu"))
        t = auto_tile(model, h, w, dev, precision=precision)
        if t is not None and overlap is not None and 4 * int(overlap) > t:
            t = 4 * int(overlap)
            if h <= t and w <= t:
                return None
        return t
    return tile  # type: ignore[return-value]


def resize_float(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize an HxW or HxWxC float32 array with Pillow's Lanczos filter (per channel, float mode)."""
    from PIL import Image

    if arr.ndim == 2:
        return np.asarray(
            Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F").resize(
                (out_w, out_h), Image.Resampling.LANCZOS
            )
        )
    chans = [resize_float(arr[..., c], out_h, out_w) for c in range(arr.shape[2])]
    return np.stack(chans, axis=2)


def exif_upright(exif: bytes | None) -> bytes | None:
    """EXIF with the orientation tag reset to 1 (the pixels were already turned upright on reading),
    so that viewers do not rotate the output a second time. Unreadable EXIF is dropped."""
    if not exif:
        return exif
    from PIL import Image

    try:
        data = Image.Exif()
        data.load(exif)
        if data.get(0x0112, 1) == 1:
            return exif
        data[0x0112] = 1
        return data.tobytes()
    except Exception:
        return None


def _outscale_size(h: int, w: int, outscale: float) -> tuple[int, int]:
    return max(1, int(round(h * outscale))), max(1, int(round(w * outscale)))


DEFAULT_OVERLAP = 16


def resolve_overlap(tile: int | None, overlap: int | None) -> int:
    """``None`` means 16 pixels, or a quarter of a smaller tile (an explicit value is kept as given)."""
    if overlap is not None:
        return int(overlap)
    if tile is None:
        return DEFAULT_OVERLAP
    return min(DEFAULT_OVERLAP, int(tile) // 4)


def upscale_image(
    model: Upscaler,
    image: LoadedImage,
    *,
    tile: int | str | None = None,
    tile_overlap: int | None = None,
    precision: str = "fp32",
    self_ensemble: bool = False,
    alpha_mode: str = "bicubic",
    outscale: float | None = None,
) -> UpscaleResult:
    """Upscale one loaded image (``dukd_cli.images.imageio.LoadedImage``) with ``model``.

    ``outscale``: final size factor relative to the input (e.g. 3.5 with a x4 model); the model's
    output is resized with a Lanczos filter. ``None`` or the model's scale: no resize.
    """
    if alpha_mode not in ALPHA_MODES:
        raise DukdError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, not '{alpha_mode}'")
    model = as_upscaler(model)
    scale = int(model.scale)
    rgb_in = np.asarray(image.rgb, dtype=np.float32)
    if rgb_in.ndim != 3 or rgb_in.shape[2] != 3:
        raise DukdError(f"expected an HxWx3 image, got shape {rgb_in.shape}")
    h, w = rgb_in.shape[:2]
    t = resolve_tile(tile, model, h, w, precision, tile_overlap)
    tile_overlap = resolve_overlap(t, tile_overlap)
    x = torch.from_numpy(np.ascontiguousarray(rgb_in)).permute(2, 0, 1).unsqueeze(0)
    y = run_model(
        model, x, tile=t, tile_overlap=tile_overlap, precision=precision, self_ensemble=self_ensemble
    )
    del x
    y.clamp_(0.0, 1.0)
    rgb = y[0].permute(1, 2, 0).numpy()  # a view (no copy when run_model returned channels-last)

    alpha = None
    if image.alpha is not None:
        a = torch.from_numpy(np.ascontiguousarray(image.alpha, dtype=np.float32))
        if alpha_mode == "model":
            a3 = a.view(1, 1, h, w).expand(1, 3, h, w)
            ya = run_model(
                model, a3, tile=t, tile_overlap=tile_overlap, precision=precision, self_ensemble=self_ensemble
            )
            alpha = ya[0].mean(dim=0).clamp_(0.0, 1.0).numpy()
        else:
            ya = F.interpolate(a.view(1, 1, h, w), scale_factor=scale, mode="bicubic", align_corners=False)
            alpha = ya[0, 0].clamp_(0.0, 1.0).numpy()

    if outscale is not None and float(outscale) != float(scale):
        if float(outscale) <= 0:
            raise DukdError(f"--outscale must be positive, got {outscale}")
        oh, ow = _outscale_size(h, w, float(outscale))
        rgb = np.clip(resize_float(rgb, oh, ow), 0.0, 1.0, dtype=np.float32)
        if alpha is not None:
            alpha = np.clip(resize_float(alpha, oh, ow), 0.0, 1.0, dtype=np.float32)

    return UpscaleResult(
        rgb=rgb,
        alpha=alpha,
        mode="L" if getattr(image, "is_gray", False) else "RGB",
        bit_depth=int(getattr(image, "bit_depth", 8) or 8),
        icc_profile=getattr(image, "icc_profile", None),
        exif=exif_upright(getattr(image, "exif", None)),
    )
