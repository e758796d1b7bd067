"""The one evaluator: PSNR/SSIM on Y exactly as SR papers compute them (``docs/protocol.md``).

``dukd evaluate`` and training validation both call :func:`evaluate`.

Per image: HR is read as RGB uint8 (grayscale as R=G=B) and mod-cropped; LR is MATLAB-bicubic of
that (or a provided LR); the model's output is clamped to [0, 1], scaled to 255 and rounded; PSNR and
SSIM are computed on Y with ``crop_border = scale``. A set's figure is the mean over its images.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dukd_cli.data.benchmarks import (
    PAPER_SETS,
    BenchSet,
    Pair,
    available_sets,
    find_set,
    load_pairs,
    search_roots,
)
from dukd_cli.errors import DukdError
from dukd_cli.models.upscaler import Upscaler, as_upscaler

BICUBIC = "bicubic"

# progress(bench_name, done, total)
Progress = Callable[[str, int, int], None]


@dataclass
class ImageResult:
    name: str
    psnr: float
    ssim: float
    ref_psnr: float | None = None


@dataclass
class BenchResult:
    bench: str
    psnr: float
    ssim: float
    n_images: int
    seconds: float
    ref_psnr: float | None = None
    per_image: list[ImageResult] = field(default_factory=list)
    skipped: int = 0  # images too small for the scale (see min_side)

    def to_dict(self) -> dict:
        """The JSON shape other tools read (``dukd evaluate --json``)."""
        d = {
            "bench": self.bench,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "n_images": self.n_images,
            "seconds": self.seconds,
        }
        if self.ref_psnr is not None:
            d["ref_psnr"] = self.ref_psnr
        if self.skipped:
            d["skipped_too_small"] = self.skipped
        return d


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def _quantise(t: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) float -> HxWx3 uint8: clamp to [0,1], x255, round (half to even, as torch.round)."""
    return t[0].clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class _Runner:
    """Turns an LR uint8 image into an SR uint8 image with a model or MATLAB bicubic."""

    def __init__(
        self,
        model: Upscaler | str,
        scale: int,
        device: torch.device,
        precision: str,
        self_ensemble: bool,
        tile: int | None,
        tile_overlap: int,
        window_pad: str = "reflect",
    ) -> None:
        self.model, self.scale, self.device = model, scale, device
        self.window_pad = window_pad
        self.precision, self.self_ensemble = precision, self_ensemble
        self.tile, self.tile_overlap = tile, tile_overlap

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        if self.model == BICUBIC:
            from dukd_cli.data.imresize import imresize

            t = torch.from_numpy(np.array(lr)).permute(2, 0, 1)
            return imresize(t, float(self.scale)).permute(1, 2, 0).contiguous().numpy()
        from dukd_cli.upscale.inference import run_model

        x = _to_tensor(lr, self.device)
        y = run_model(
            self.model,
            x,
            tile=self.tile,
            tile_overlap=self.tile_overlap,
            precision=self.precision,
            self_ensemble=self.self_ensemble,
            window_pad=self.window_pad,
        )
        return _quantise(y)


def check_scale(model: Upscaler | str, scale: int, what: str = "model") -> None:
    """``model`` (an upscaler, or ``"bicubic"``) works at ``scale``."""
    if model == BICUBIC:
        return
    ms = as_upscaler(model).scale
    if int(ms) != int(scale):
        raise DukdError(f"{what} is x{ms} but --scale is {scale}; evaluate a model at its own scale")


SSIM_WINDOW = 11  # the Gaussian window of SSIM (dukd_cli.evaluate.metrics): the cropped image must hold one


def min_side(scale: int) -> int:
    """The smallest HR side that is measurable at ``scale``: after the mod-crop to a multiple of the
    scale and the border crop of ``scale`` pixels per side, SSIM's window must still fit."""
    need = SSIM_WINDOW + 2 * scale
    return -(-need // scale) * scale


def check_tile(tile: int | None) -> int | None:
    """``tile``: None or 0 for whole images (as ``dukd upscale --tile 0``), else at least MIN_TILE."""
    from dukd_cli.upscale.inference import MIN_TILE

    if tile is None or tile == 0:
        return None
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_TILE:
        raise DukdError(
            f"--tile must be 0 (whole images) or a size of at least {MIN_TILE} pixels, not '{tile}'"
        )
    return tile


def resolve_benches(
    benches: Sequence[str | BenchSet] | None, data_dir: str | os.PathLike | None = None
) -> list[BenchSet]:
    if benches:
        out = []
        for b in benches:
            out.append(b if isinstance(b, BenchSet) else find_set(str(b), data_dir))
        return out
    found = available_sets(PAPER_SETS, data_dir)
    if not found:
        where = ", ".join(str(r) for r in search_roots(data_dir))
        raise DukdError(
            f"none of {', '.join(PAPER_SETS)} found (looked in {where}); pass --data-dir DIR holding "
            "<set>/HR/ folders, set DUKD_DATA, name a set or folder with --bench (a named set is fetched), "
            "or run 'dukd data fetch set5 set14 bsd100 urban100'"
        )
    return found


def evaluate(
    model: Upscaler | str,
    scale: int,
    benches: Sequence[str | BenchSet] | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    self_ensemble: bool = False,
    tile: int | None = None,
    tile_overlap: int = 16,
    lr_provided: bool = False,
    save_images: str | os.PathLike | None = None,
    png_level: int | None = None,
    reference: Upscaler | str | None = None,
    max_images: int | None = None,
    progress: Progress | bool | None = None,
    window_pad: str = "reflect",
    max_pixels: int | None = None,
) -> list[BenchResult]:
    """Evaluate ``model`` (an :class:`~dukd_cli.models.upscaler.Upscaler`, or ``"bicubic"``) at ``scale``
    on each benchmark set.

    ``reference``: another model (or ``"bicubic"``) whose outputs on the same inputs are compared with
    this model's (``ref_psnr``: PSNR on Y between the two SR images, the paper's Fig. 5).
    ``window_pad``: ``reflect`` (BasicSR's, the DUKD paper's) or ``swinir`` (the SwinIR authors'
    test-time padding) for windowed models; see :func:`dukd_cli.upscale.inference.run_model`.
    ``max_pixels``: refuse, before computing it, an SR output (the HR size) above this many pixels
    (None: :data:`dukd_cli.models.sizeguard.MAX_OUTPUT_PIXELS`).
    The model's train/eval mode is restored afterwards, so training validation can call this.
    """
    from dukd_cli.models.sizeguard import check_max_pixels
    from dukd_cli.upscale.inference import check_window_pad, select_device

    window_pad = check_window_pad(window_pad)
    tile = check_tile(tile)
    max_pixels = check_max_pixels(max_pixels)
    scale = int(scale)
    check_scale(model, scale)
    if reference is not None:
        check_scale(reference, scale, "reference model")
    dev = select_device(device) if not isinstance(device, torch.device) else device
    sets = resolve_benches(benches, data_dir)

    modules = [m for m in (model, reference) if isinstance(m, torch.nn.Module)]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    params = [next(m.parameters(), None) for m in modules]
    moved = [
        (m, p.device) for m, p in zip(modules, params, strict=False) if p is not None and p.device != dev
    ]
    for m, _ in moved:
        m.to(dev)
    run = _Runner(model, scale, dev, precision, self_ensemble, tile, tile_overlap, window_pad)
    ref_run = (
        _Runner(reference, scale, dev, precision, self_ensemble, tile, tile_overlap, window_pad)
        if reference is not None
        else None
    )
    save_root = Path(save_images) if save_images else None
    png_opts = {}
    if png_level is not None:
        from dukd_cli.images.pngstream import check_png_level

        png_opts["png_level"] = check_png_level(png_level)  # before any work

    results: list[BenchResult] = []
    try:
        for bench in sets:
            start = time.perf_counter()
            pairs, skipped = _measurable_pairs(bench, scale, lr_provided, max_images, max_pixels)
            per = _evaluate_pairs(bench.name, pairs, run, ref_run, scale, save_root, png_opts, progress)
            refs = [r.ref_psnr for r in per if r.ref_psnr is not None and np.isfinite(r.ref_psnr)]
            results.append(
                BenchResult(
                    bench=bench.name,
                    psnr=float(np.mean([r.psnr for r in per])),
                    ssim=float(np.mean([r.ssim for r in per])),
                    n_images=len(per),
                    seconds=time.perf_counter() - start,
                    ref_psnr=float(np.mean(refs)) if ref_run is not None and refs else None,
                    per_image=per,
                    skipped=skipped,
                )
            )
    finally:
        for m, d in moved:
            m.to(d)
        for m, t in zip(modules, was_training, strict=False):
            m.train(t)
    return results


def _measurable_pairs(
    bench: BenchSet, scale: int, lr_provided: bool, max_images: int | None, max_pixels: int
) -> tuple[list[Pair], int]:
    """The set's pairs large enough to measure at ``scale`` and the number skipped as too small; every
    output's size is checked against ``max_pixels`` before the first is computed."""
    from dukd_cli.models.sizeguard import check_output_pixels

    pairs = list(load_pairs(bench, scale, lr_provided=lr_provided, max_images=max_images))
    if not pairs:
        raise DukdError(f"benchmark {bench.name} at {bench.hr_dir} holds no images")
    side = min_side(scale)
    usable = [p for p in pairs if min(p.hr.shape[:2]) >= side]
    if not usable:
        raise DukdError(
            f"benchmark {bench.name}: every image is too small for x{scale} "
            f"(each side needs at least {side} px: {SSIM_WINDOW} px for SSIM after cropping {scale} per border)"
        )
    for p in usable:
        check_output_pixels(p.hr.shape[1], p.hr.shape[0], max_pixels, f"{bench.name}/{p.name}")
    return usable, len(pairs) - len(usable)


def _evaluate_pairs(
    bench_name: str,
    pairs: list[Pair],
    run: _Runner,
    ref_run: _Runner | None,
    scale: int,
    save_root: Path | None,
    png_opts: dict[str, int],
    progress: Progress | bool | None,
) -> list[ImageResult]:
    """PSNR/SSIM on Y of every image (and the PSNR against the reference's output); the SR images
    are written under ``save_root`` when given."""
    from dukd_cli.evaluate.metrics import psnr_y, ssim_y

    per: list[ImageResult] = []
    for i, pair in enumerate(pairs):
        sr = run(pair.lr)
        if sr.shape != pair.hr.shape:
            raise DukdError(
                f"model output {sr.shape[1]}x{sr.shape[0]} does not match HR "
                f"{pair.hr.shape[1]}x{pair.hr.shape[0]} for {bench_name}/{pair.name}"
            )
        r = ImageResult(pair.name, psnr_y(sr, pair.hr, scale), ssim_y(sr, pair.hr, scale))
        if ref_run is not None:
            r.ref_psnr = psnr_y(sr, ref_run(pair.lr), scale)
        per.append(r)
        if save_root is not None:
            from dukd_cli.images.imageio import write_image

            write_image(save_root / bench_name / f"{pair.name}.png", sr, **png_opts)
        if callable(progress):
            progress(bench_name, i + 1, len(pairs))
    return per
