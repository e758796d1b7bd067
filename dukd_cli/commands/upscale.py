"""``dukd upscale``: super-resolve image files, folders and globs with any installed or exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dukd_cli.commands._common import console, err_console, model_args
from dukd_cli.commands._options import Arg, Device, Model, Runtime, Scale, Weights
from dukd_cli.errors import DukdError
from dukd_cli.registry import DEFAULT_STUDENT as DEFAULT_MODEL

# dukd_cli.images.pngstream.DEFAULT_PNG_LEVEL (that module imports numpy, which --help does not need;
# tests/test_journey.py checks the two agree)
DEFAULT_PNG_LEVEL = 1


def load_upscaler(
    model: str,
    *,
    weights: str | None,
    args: list[str] | None,
    scale: int | None,
    device: str,
    runtime: str,
    threads: int | None = None,
):
    """The model ``dukd upscale`` runs: a PyTorch module, or an :class:`OnnxModel` for an ONNX ``--runtime``.

    ``--scale`` must agree with the model (never a silent resize); presets use their declared
    weights unless ``--weights`` is given, and a model without weights is refused.
    """
    from dukd_cli.export.runtimes import check_runtime, load_onnx_runtime
    from dukd_cli.upscale.inference import select_device

    runtime = check_runtime(runtime)
    if runtime != "torch":
        if weights or args:
            raise DukdError(
                f"--runtime {runtime} runs an exported directory as it is; it takes no --weights or --arg"
            )
        from dukd_cli.models.spec import is_export_dir

        if not is_export_dir(model):  # a preset, a checkpoint, a run: it needs exporting first
            raise DukdError(
                f"--runtime {runtime} runs an exported model directory, and '{model}' is not one: "
                f"make one with 'dukd export --model {model} --output DIR' "
                "(add --weights for a model without declared weights), then pass --model DIR"
            )
        return load_onnx_runtime(
            model, runtime, scale=scale, device=str(select_device(device)), threads=threads
        )
    from dukd_cli.models import mismatch, options
    from dukd_cli.models.factory import build, resolve_spec

    with mismatch.hints(options.UPSCALE):  # help in this command's options, resolving included
        spec = resolve_spec(model, scale, kwargs=model_args(args), weights=weights, pretrained=True)
        if scale is not None and int(spec.scale) != int(scale):
            raise DukdError(f"model '{model}' is x{spec.scale}, but --scale {scale} was given")
        if not spec.weights:
            raise DukdError(f"'{model}' has no weights to upscale with; pass --weights SOURCE")
        return build(spec, device=select_device(device))


def upscale_cmd(
    inputs: list[str] = typer.Argument(
        ..., help="Image files, folders (their images) or glob patterns ('photos/*.jpg')."
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file (one input) or folder. Default: beside each input, with --suffix.",
    ),
    model: Model(
        "Preset, architecture, exported model directory, or a checkpoint file (architecture detected). "
        f"Default: the shipped DUKD student ({DEFAULT_MODEL}, x4, 0.16 M parameters)."
    ) = DEFAULT_MODEL,
    weights: Weights = None,
    arg: Arg = None,
    scale: Scale("Upscaling factor; must equal the model's (an exported directory knows its own).") = None,
    suffix: str = typer.Option(
        None,
        "--suffix",
        help="Appended to output names. Default: '_x<scale>' beside the input, '' in an -o folder.",
    ),
    ext: str = typer.Option(
        None, "--ext", help="Output type: png, jpg or webp. Default: the input's (png for others)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing outputs (inputs are never overwritten)."
    ),
    tile: str = typer.Option(
        "auto",
        "--tile",
        "-t",
        help="Tile side in input pixels (at least 16), 'auto' (whole images when they fit in free memory, else tiles sized from it), "
        "or 0 for whole images always.",
    ),
    tile_overlap: int = typer.Option(
        None,
        "--tile-overlap",
        help="Overlap of neighbouring tiles in input pixels, blended without seams (default 16, at most tile/4).",
    ),
    alpha: str = typer.Option(
        "bicubic", "--alpha", help="Alpha channel upscaling: bicubic, or model (through the network)."
    ),
    outscale: float = typer.Option(
        None,
        "--outscale",
        help="Final size factor relative to the input (e.g. 3.5 with a x4 model; Lanczos resize).",
    ),
    max_pixels: int = typer.Option(
        None,
        "--max-pixels",
        help="Refuse an output image of more pixels than this (width x height; default 1000000000, "
        "1 gigapixel), before computing it.",
    ),
    device: Device = "auto",
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32, bf16 or fp16 (autocast; fp16 needs a GPU)."
    ),
    self_ensemble: bool = typer.Option(
        False, "--self-ensemble", help="Average over 8 flips/rotations (x8 slower)."
    ),
    runtime: Runtime(
        "torch, or onnx / onnx-int8 / onnx-fp16: an exported directory's model.onnx / model.int8.onnx / "
        "model.fp16.onnx in ONNX Runtime."
    ) = "torch",
    quality: int = typer.Option(95, "--quality", help="JPEG/WebP quality."),
    png_level: int = typer.Option(
        DEFAULT_PNG_LEVEL,
        "--png-level",
        help="PNG compression level 0-9: 1-3 fast (the default 1 is OpenCV's level), 4-9 smaller files, slower.",
    ),
    jobs: str = typer.Option(
        "auto",
        "--jobs",
        "-j",
        help="Images processed at once on the CPU, one lane each with cores/N threads. 'auto': "
        "as many as the cores (up to 8) when every image fits whole in its share of memory, else 1.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
) -> None:
    """Upscale images: files, folders and globs; every image mode; tiled without seams; written atomically."""
    from dukd_cli.images.pngstream import check_png_level
    from dukd_cli.models.sizeguard import check_max_pixels
    from dukd_cli.upscale.image import check_overlap, parse_tile
    from dukd_cli.upscale.inference import check_precision, select_device
    from dukd_cli.upscale.lanes import parse_jobs
    from dukd_cli.upscale.paths import upscale_paths

    # Every option is checked before the model is loaded and before any file is read.
    tile_value = parse_tile(tile)
    check_overlap(tile_value, tile_overlap)
    check_png_level(png_level)
    n_jobs = parse_jobs(jobs)
    check_max_pixels(max_pixels)
    dev = select_device(device)
    check_precision(precision, dev)
    if n_jobs is not None and n_jobs > 1 and dev.type != "cpu":
        raise DukdError(f"--jobs {n_jobs} applies to the CPU only; on {dev.type} drop it (or use 1)")
    m = load_upscaler(model, weights=weights, args=arg, scale=scale, device=device, runtime=runtime)

    shown = _Shown(quiet)
    try:
        summary = upscale_paths(
            m,
            inputs,
            output,
            suffix=suffix,
            ext=ext,
            overwrite=overwrite,
            tile=tile_value,
            tile_overlap=tile_overlap,
            precision=precision,
            self_ensemble=self_ensemble,
            alpha_mode=alpha,
            outscale=outscale,
            quality=quality,
            png_level=png_level,
            parallel=n_jobs,
            report=shown.report,
            on_advance=shown.on_advance,
            on_plan=shown.on_plan,
            on_tile=shown.on_tile,
            max_pixels=max_pixels,
        )
    finally:
        shown.stop()

    n_done, n_skip, n_fail = (
        len(summary.done),
        len(summary.skipped),
        len(summary.failed) + len(summary.input_errors),
    )
    if not quiet and (len(summary.jobs) > 1 or n_fail or n_skip):
        console.print(f"{n_done} written, {n_skip} skipped, {n_fail} failed", highlight=False)
    if not summary.ok:
        raise typer.Exit(1)


class _Shown:
    """What ``dukd upscale`` shows while it works: errors and warnings (escaped: file names may hold
    brackets), a bar over the images, and a tile bar (with ETA) for tiled images, so that a single
    large photo shows progress too. ``quiet``: errors only."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.tile_task: TaskID | None = None
        self.tile_job: object = None

    def report(self, kind: str, message: str) -> None:
        if kind == "error":
            err_console.print(
                f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
            )
        elif kind == "notice" and not self.quiet:
            err_console.print(
                f"[yellow]warning:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
            )
        elif kind == "done" and not self.quiet and self.progress is None:
            console.print(message, highlight=False, soft_wrap=True)

    def _start(self) -> Progress:
        bar = Progress(
            TextColumn("{task.fields[what]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=err_console,
            transient=False,
        )
        bar.start()
        return bar

    def on_plan(self, jobs: list[Any]) -> None:
        if len(jobs) > 1 and not self.quiet:
            self.progress = self._start()
            self.task = self.progress.add_task("", total=len(jobs), what="upscaling")

    def on_advance(self, job: Any) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, description=escape(job.source.name))

    def on_tile(self, job: Any, done: int, total: int) -> None:
        if self.quiet or total <= 1:
            return
        if self.progress is None:
            self.progress = self._start()
        if self.tile_job is not job:
            if self.tile_task is not None:
                self.progress.remove_task(self.tile_task)
            self.tile_task = self.progress.add_task(escape(job.source.name), total=total, what="tiles")
            self.tile_job = job
        self.progress.update(self.tile_task, completed=done)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
