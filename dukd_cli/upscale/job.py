"""Upscale one loaded image straight into a file, band by band: memory grows with the tile, not the image.

:func:`upscale_to_file` runs :func:`dukd_cli.upscale.inference.iter_bands` and hands each finished band of
output rows to a :class:`dukd_cli.images.bandwrite.BandWriter` (PNG is encoded as it goes; other formats
are gathered as uint8). The pixels are the same as :func:`dukd_cli.upscale.paths.upscale_image` followed
by :func:`dukd_cli.images.imageio.write_image` (the whole-image path, still used for ``outscale``), so a
6000 x 6000 photo at x4 needs its input, one row of tiles and the encoder, not a 24000 x 24000
float array. The alpha plane follows the same bands (bicubic rows computed from the input rows
they need, or the model's tiles).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from dukd_cli.errors import DukdError
from dukd_cli.images.pngstream import DEFAULT_PNG_LEVEL
from dukd_cli.models.upscaler import Upscaler, as_upscaler
from dukd_cli.upscale.inference import iter_bands

if TYPE_CHECKING:
    from dukd_cli.images.bandwrite import WritePipeline
    from dukd_cli.images.imageio import LoadedImage


@dataclass
class Job:
    """One input file and its planned output (see :func:`dukd_cli.upscale.paths.plan_outputs`)."""

    source: Path
    dest: Path | None
    status: str = "todo"  # todo | skipped | failed | done
    message: str = ""


def bicubic_rows(a: torch.Tensor, scale: int, r0: int, r1: int) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``F.interpolate(a, scale_factor=scale, mode="bicubic")`` (``a``: (1, 1, h, w)),
    computed from the input rows they depend on only.

    For a power-of-two ``scale`` the result is bit-identical to slicing the whole interpolation
    (the sampling positions are exact in floating point); for other scales it agrees to rounding.
    """
    h = a.shape[-2]
    lo = max(0, math.floor((r0 + 0.5) / scale - 0.5) - 2)
    hi = min(h, math.floor((r1 - 0.5) / scale - 0.5) + 4)
    part = F.interpolate(a[..., lo:hi, :], scale_factor=scale, mode="bicubic", align_corners=False)
    return part[..., r0 - lo * scale : r1 - lo * scale, :]


class _AlphaRows:
    """The upscaled alpha plane, one band of output rows at a time (bicubic, or through the model)."""

    def __init__(
        self, model: Upscaler, alpha: np.ndarray, scale: int, mode: str, bands_args: dict[str, Any]
    ) -> None:
        h, w = alpha.shape[:2]
        a = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32)).view(1, 1, h, w)
        self.scale, self.a = scale, a
        self.model_bands = iter_bands(model, a.expand(1, 3, h, w), **bands_args) if mode == "model" else None

    def rows(self, r0: int, r1: int) -> np.ndarray:
        if self.model_bands is None:
            return bicubic_rows(self.a, self.scale, r0, r1)[0, 0].clamp_(0.0, 1.0).numpy()
        b0, b1, band = next(self.model_bands)
        assert (b0, b1) == (r0, r1)  # the same tile grid, so the same bands
        return band[0].mean(dim=0).clamp_(0.0, 1.0).numpy()


def upscale_to_file(
    model: Upscaler,
    image: LoadedImage,
    dest: str | Path,
    *,
    tile: int | None,
    tile_overlap: int,
    precision: str = "fp32",
    self_ensemble: bool = False,
    alpha_mode: str = "bicubic",
    bit_depth: int = 8,
    quality: int = 95,
    png_level: int = DEFAULT_PNG_LEVEL,
    pipeline: WritePipeline | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Path | Future:
    """Upscale ``image`` (a :class:`~dukd_cli.images.imageio.LoadedImage`) into ``dest`` at the model's scale.

    ``tile`` is a resolved size (or ``None`` for the whole image) and ``tile_overlap`` a resolved
    overlap (see :func:`dukd_cli.upscale.paths.resolve_tile` / ``resolve_overlap``). Returns the path, or
    with a :class:`~dukd_cli.images.bandwrite.WritePipeline` a future of it (the last bands may still be
    encoding). On any error nothing is left at ``dest``.
    """
    from dukd_cli.images.imageio import open_writer
    from dukd_cli.upscale.image import exif_upright

    model = as_upscaler(model)
    scale = int(model.scale)
    rgb_in = np.asarray(image.rgb, dtype=np.float32)
    if rgb_in.ndim != 3 or rgb_in.shape[2] != 3:
        raise DukdError(f"expected an HxWx3 image, got shape {rgb_in.shape}")
    h, w = rgb_in.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(rgb_in)).permute(2, 0, 1).unsqueeze(0)
    args = {
        "tile": tile,
        "tile_overlap": tile_overlap,
        "precision": precision,
        "self_ensemble": self_ensemble,
    }
    bands = iter_bands(model, x, on_tile=on_tile, **args)
    alpha = None if image.alpha is None else _AlphaRows(model, image.alpha, scale, alpha_mode, args)
    writer = open_writer(
        dest,
        h * scale,
        w * scale,
        mode="L" if getattr(image, "is_gray", False) else "RGB",
        bit_depth=bit_depth,
        alpha=alpha is not None,
        icc_profile=getattr(image, "icc_profile", None),
        exif=exif_upright(getattr(image, "exif", None)),
        quality=quality,
        png_level=png_level,
        pipeline=pipeline,
        stacklevel=3,
    )
    try:
        gray = getattr(image, "is_gray", False)
        for r0, r1, band in bands:
            rgb = band[0].permute(1, 2, 0).numpy()  # an HWC view, no copy
            if gray:
                rgb = np.clip(rgb, 0.0, 1.0)  # luma of the clamped output (quantising clips anyway)
            writer.write(rgb, alpha.rows(r0, r1) if alpha is not None else None)
            del band, rgb
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def upscale_job(
    model: Upscaler,
    img: LoadedImage,
    job: Job,
    tile: int | str | None,
    tile_overlap: int | None,
    precision: str,
    self_ensemble: bool,
    alpha_mode: str,
    outscale: float | None,
    quality: int,
    png_level: int,
    pipeline: WritePipeline | None,
    on_tile: Callable[[Job, int, int], None] | None,
    *,
    max_pixels: int | None = None,
) -> Path | Future:
    """Start upscaling one read image into ``job.dest``; returns a future of the finished file.
    An output above ``max_pixels`` (None: the default bound) is refused before anything is computed."""
    from concurrent.futures import Future

    from dukd_cli.images.imageio import write_image
    from dukd_cli.models.sizeguard import check_output_pixels
    from dukd_cli.upscale.image import _outscale_size, resolve_overlap, resolve_tile, upscale_image

    ih, iw = img.rgb.shape[:2]
    model = as_upscaler(model)
    factor = float(outscale) if outscale is not None else float(model.scale)
    oh, ow = _outscale_size(ih, iw, factor)
    check_output_pixels(ow, oh, max_pixels, str(job.source))
    out_ext = job.dest.suffix.lower().lstrip(".")
    bit_depth = int(getattr(img, "bit_depth", 8) or 8) if out_ext == "png" else 8
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    scale = int(model.scale)
    if outscale is not None and float(outscale) != float(scale):
        # A final resize needs the whole output: the whole-image path.
        res = upscale_image(
            model,
            img,
            tile=tile,
            tile_overlap=tile_overlap,
            precision=precision,
            self_ensemble=self_ensemble,
            alpha_mode=alpha_mode,
            outscale=outscale,
        )
        write_image(
            job.dest,
            res.rgb,
            alpha=res.alpha,
            mode=res.mode,
            bit_depth=bit_depth,
            icc_profile=res.icc_profile,
            exif=res.exif,
            quality=quality,
            png_level=png_level,
        )
        done: Future = Future()
        done.set_result(job.dest)
        return done
    h, w = img.rgb.shape[:2]
    t = resolve_tile(tile, model, h, w, precision, tile_overlap)
    progress = (lambda d, n: on_tile(job, d, n)) if on_tile else None
    return upscale_to_file(
        model,
        img,
        job.dest,
        tile=t,
        tile_overlap=resolve_overlap(t, tile_overlap),
        precision=precision,
        self_ensemble=self_ensemble,
        alpha_mode=alpha_mode,
        bit_depth=bit_depth,
        quality=quality,
        png_level=png_level,
        pipeline=pipeline,
        on_tile=progress,
    )
