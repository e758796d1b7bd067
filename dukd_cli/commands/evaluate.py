"""``dukd evaluate``: PSNR/SSIM on benchmark sets, exactly as SR papers compute them."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dukd_cli.commands._common import console, err_console, model_args, warn
from dukd_cli.errors import DukdError
from dukd_cli.runtime.fsutil import atomic_write_text, check_writable_dir, check_writable_file


def _load(name: str, scale: int, weights: str | None, args: list[str] | None, device: str, options=None):
    """A model by name ('bicubic', preset, architecture, export directory, checkpoint file) and the
    weights it used; a checkpoint that does not fit says what to type in terms of ``options``."""
    from dukd_cli.evaluate.protocol import BICUBIC

    if name.lower() == BICUBIC:
        if weights or args:
            raise DukdError("the bicubic baseline takes no --weights or constructor arguments")
        return BICUBIC, None
    from dukd_cli.models import mismatch
    from dukd_cli.models import options as model_options
    from dukd_cli.models.factory import build, resolve_spec
    from dukd_cli.upscale.inference import select_device

    with mismatch.hints(
        options or model_options.EVALUATE
    ):  # help in this command's options, resolving included
        spec = resolve_spec(name, scale, kwargs=model_args(args), weights=weights, pretrained=True)
        if spec.scale != scale:
            raise DukdError(f"model '{name}' is x{spec.scale} but --scale is {scale}")
        return build(spec, device=select_device(device)), spec.weights


def _defaults(model: str | None, scale: int | None) -> tuple[str, int]:
    """No --model: the shipped student (as upscale); no --scale: the model's only scale."""
    from dukd_cli.evaluate.protocol import BICUBIC
    from dukd_cli.models.factory import resolve_spec
    from dukd_cli.registry import DEFAULT_STUDENT

    model = model or DEFAULT_STUDENT
    if scale is None:
        if model.lower() == BICUBIC:
            raise DukdError("the bicubic baseline needs --scale (2, 3, 4, ...)")
        scale = resolve_spec(
            model, None
        ).scale  # a one-scale preset or an export knows it; else a clear error
    return model, int(scale)


def _fmt(x: float | None, digits: int) -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def _num(x: float | None):
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def results_table(label: str, scale: int, results: list, with_ref: bool) -> Table:
    """A results table shaped like the paper's Table 2: one row per model, PSNR/SSIM per set."""
    table = Table(title=f"x{scale}, PSNR (dB) / SSIM on Y, border {scale}")
    table.add_column("model", style="bold")
    for r in results:
        table.add_column(f"{r.bench} ({r.n_images})", justify="center")
    table.add_row(label, *[f"{_fmt(r.psnr, 2)} / {_fmt(r.ssim, 4)}" for r in results])
    if with_ref:
        table.add_row("PSNR vs reference", *[_fmt(r.ref_psnr, 2) for r in results])
    return table


def evaluate_cmd(
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Preset, architecture, exported model directory, or 'bicubic'. Default: dukd-student-x4.",
    ),
    weights: str = typer.Option(
        None,
        "--weights",
        "-w",
        help="Weights: file, hf://OWNER/REPO/FILE[@REV], or a preset name. Presets default to their declared source.",
    ),
    arg: list[str] = typer.Option(None, "--arg", "-a", help="Constructor argument key=value (repeatable)."),
    scale: int = typer.Option(
        None,
        "--scale",
        "-s",
        help="Upscaling factor; must equal the model's. Default: the model's only scale "
        "(a checkpoint file's own).",
    ),
    bench: str = typer.Option(
        None,
        "--bench",
        "-b",
        help="Comma-separated sets (set5, set14, bsd100/b100, urban100, manga109, div2k-valid) or folders. "
        "Default: those of Set5, Set14, BSD100, Urban100 that are present.",
    ),
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        "-d",
        help="Folder holding <set>/HR/. Then $DUKD_DATA, then ~/.cache/dukd/benchmarks.",
    ),
    lr_provided: bool = typer.Option(
        False,
        "--lr-provided",
        help="Use the set's LR_bicubic/X{s} images instead of making LR with MATLAB-exact bicubic.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (autocast)."),
    runtime: str = typer.Option(
        "torch",
        "--runtime",
        help="torch, or onnx / onnx-int8 / onnx-fp16: score an exported directory's model.onnx / "
        "model.int8.onnx / model.fp16.onnx in ONNX Runtime (the deployed file's number).",
    ),
    self_ensemble: bool = typer.Option(False, "--self-ensemble", help="Average over 8 flips/rotations (x8)."),
    tile: int = typer.Option(
        None,
        "--tile",
        help="Run large images in tiles of N LR pixels, at least 16 (for small GPUs); 0: whole images, "
        "as in upscale (the default).",
    ),
    tile_overlap: int = typer.Option(16, "--tile-overlap", help="Overlap between tiles, LR pixels."),
    max_pixels: int = typer.Option(
        None,
        "--max-pixels",
        help="Refuse an SR output (an HR image) of more pixels than this (default 1000000000, 1 gigapixel), "
        "before evaluating.",
    ),
    save_images: Path = typer.Option(None, "--save-images", help="Write SR images to DIR/<set>/<name>.png."),
    png_level: int = typer.Option(
        1,
        "--png-level",
        help="PNG compression level 0-9 of --save-images (1-3 fast, 4-9 smaller files, slower).",
    ),
    per_image: bool = typer.Option(
        False, "--per-image", help="Also print (and write to --csv) per-image figures."
    ),
    json_path: Path = typer.Option(None, "--json", help="Write results as JSON to PATH."),
    csv_path: Path = typer.Option(None, "--csv", help="Write results as CSV to PATH."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing --json / --csv files."),
    reference_model: str = typer.Option(
        None,
        "--reference-model",
        help="Also report PSNR between this model's output and a reference model's.",
    ),
    reference_weights: str = typer.Option(
        None, "--reference-weights", help="Weights of the reference model."
    ),
    reference_arg: list[str] = typer.Option(
        None, "--reference-arg", help="Reference constructor argument key=value."
    ),
    max_images: int = typer.Option(
        None, "--max-images", help="Evaluate only the first N images of each set."
    ),
    no_download: bool = typer.Option(
        False,
        "--no-download",
        help="Never fetch a named set that is not found (also the case with HF_HUB_OFFLINE=1).",
    ),
    window_pad: str = typer.Option(
        "reflect",
        "--window-pad",
        help="Padding of windowed models (SwinIR, ...) to their window: 'reflect' (BasicSR's, only as needed; "
        "the DUKD paper's numbers) or 'swinir' (the SwinIR authors' test script: flip-padding that always "
        "adds 1 to window pixels; the SwinIR paper's numbers).",
    ),
) -> None:
    """Evaluate a model on SR benchmarks: PSNR/SSIM on Y, crop border = scale, MATLAB-exact bicubic LR."""
    model, scale = _defaults(model, scale)
    if scale < 1:
        raise DukdError(f"--scale must be a positive integer, got {scale}")
    if precision not in ("fp32", "bf16", "fp16"):
        raise DukdError(f"--precision must be fp32, bf16 or fp16, not '{precision}'")
    from dukd_cli.export.runtimes import check_runtime

    runtime = check_runtime(runtime)
    if runtime != "torch":
        if weights or arg:
            raise DukdError(
                f"--runtime {runtime} scores an exported directory as it is; it takes no --weights or --arg"
            )
        if precision != "fp32":
            raise DukdError(
                f"--precision applies to --runtime torch; {runtime} runs the file's own precision"
            )
    if save_images is not None:
        from dukd_cli.images.pngstream import check_png_level

        check_png_level(png_level)
    benches = [b.strip() for b in bench.split(",") if b.strip()] if bench else None
    # Outputs are checked before the evaluation, not after it.
    for option, path in (("--json", json_path), ("--csv", csv_path)):
        if path is not None:
            check_writable_file(path, overwrite=overwrite, option=option)
    if save_images is not None:
        check_writable_dir(save_images)
    from dukd_cli.evaluate.protocol import evaluate, min_side
    from dukd_cli.models import options
    from dukd_cli.upscale.inference import check_window_pad

    window_pad = check_window_pad(window_pad)
    from dukd_cli.models.sizeguard import check_max_pixels

    check_max_pixels(max_pixels)
    if benches:  # a named set that is not found is fetched first (one line: what, how big)
        from dukd_cli.data.fetch import ensure_benchmarks

        ensure_benchmarks(
            benches,
            download=not no_download,
            data_dir=data_dir,
            on_status=lambda m: err_console.print(f"[dim]{m}[/]"),
        )
    if runtime == "torch":
        net, used_weights = _load(model, scale, weights, arg, device, options.EVALUATE)
    else:
        from dukd_cli.export.runtimes import load_onnx_runtime

        net = load_onnx_runtime(model, runtime, scale=scale)
        used_weights = str(net.path)
    ref = None
    if reference_model:
        ref, _ = _load(reference_model, scale, reference_weights, reference_arg, device, options.REFERENCE)

    with Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        results = evaluate(
            net,
            scale,
            benches,
            data_dir=data_dir,
            device=device,
            precision=precision,
            self_ensemble=self_ensemble,
            tile=tile,
            tile_overlap=tile_overlap,
            lr_provided=lr_provided,
            save_images=save_images,
            png_level=png_level,
            reference=ref,
            max_images=max_images,
            progress=progress,
            window_pad=window_pad,
            max_pixels=max_pixels,
        )

    for r in results:
        if r.skipped:
            warn(
                f"{escape(r.bench)}: skipped {r.skipped} image(s) too small for x{scale} "
                f"(each side needs at least {min_side(scale)} px); the figures cover the other {r.n_images}"
            )
    label = model + (f" ({runtime})" if runtime != "torch" else "") + (" (x8)" if self_ensemble else "")
    console.print(results_table(label, scale, results, ref is not None))
    if per_image:
        for r in results:
            t = Table(title=f"{r.bench}: per image")
            t.add_column("image")
            t.add_column("PSNR", justify="right")
            t.add_column("SSIM", justify="right")
            if ref is not None:
                t.add_column("vs ref", justify="right")
            for im in r.per_image:
                row = [im.name, _fmt(im.psnr, 2), _fmt(im.ssim, 4)]
                if ref is not None:
                    row.append(_fmt(im.ref_psnr, 2))
                t.add_row(*row)
            console.print(t)

    if json_path is not None:
        payload = {
            "model": model,
            "weights": used_weights,
            "scale": scale,
            "runtime": runtime,
            "window_pad": window_pad,
            "results": [
                {k: (_num(v) if isinstance(v, float) else v) for k, v in r.to_dict().items()} for r in results
            ],
        }
        atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n")
    if csv_path is not None:
        buf = io.StringIO()
        w = csv.writer(buf)
        header = ["bench", "image", "psnr", "ssim"] + (["ref_psnr"] if ref is not None else [])
        w.writerow(header)
        for r in results:
            rows = r.per_image if per_image else []
            for im in rows:
                w.writerow(
                    [r.bench, im.name, _num(im.psnr), _num(im.ssim)]
                    + ([_num(im.ref_psnr)] if ref is not None else [])
                )
            w.writerow(
                [r.bench, "(mean)", _num(r.psnr), _num(r.ssim)]
                + ([_num(r.ref_psnr)] if ref is not None else [])
            )
        atomic_write_text(csv_path, buf.getvalue())
