"""``dukd export``: a deployable model directory (safetensors + config + ONNX + model card), optionally pushed to the Hub."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from dukd_cli.commands._common import console, err_console, model_args, warn
from dukd_cli.commands._options import Arg, Model, Scale, Weights


def export_cmd(
    model: Model(
        "Preset, architecture, exported directory, `dukd distill` run directory, or a checkpoint file."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Directory to create (built beside it, renamed when complete)."
    ),
    weights: Weights = None,
    arg: Arg = None,
    scale: Scale("Upscaling factor (a run or exported directory knows its own).") = None,
    formats: str = typer.Option(
        "safetensors,onnx",
        "--format",
        "-f",
        help="Comma-separated: safetensors, onnx, onnx-fp16 (model.fp16.onnx beside model.onnx).",
    ),
    quantize: str = typer.Option(
        None,
        "--quantize",
        help="int8: also write model.int8.onnx (ONNX Runtime static quantization, QDQ), checked on a hold-out.",
    ),
    calib: list[Path] = typer.Option(
        None,
        "--calib",
        help="Folder of HR images to calibrate int8 on (repeatable). Default: the run's training data.",
    ),
    calib_count: int = typer.Option(
        64, "--calib-count", help="Calibration patches (48x48 LR); a quarter are the hold-out."
    ),
    max_drop: float = typer.Option(
        0.1,
        "--max-drop",
        help="Refuse the export when int8 loses more Y-PSNR (dB) than this on the hold-out.",
    ),
    run: Path = typer.Option(
        None, "--run", help="A distill run directory whose provenance goes into config.json."
    ),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (17 or newer)."),
    onnx_size: int = typer.Option(
        256,
        "--onnx-size",
        help="Input side of a fixed-size ONNX export, used only when H/W cannot be dynamic.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing output directory (only once the new one is complete)."
    ),
    push_to_hub: str = typer.Option(
        None, "--push-to-hub", help="Upload the directory to this Hub model repo (OWNER/NAME)."
    ),
    private: bool = typer.Option(False, "--private", help="Create the Hub repo as private."),
) -> None:
    """Export a model: model.safetensors, config.json, model.onnx (checked against PyTorch) and a README model card."""
    from dukd_cli.export.bundle import export_model
    from dukd_cli.export.bundle import push_to_hub as push
    from dukd_cli.models import options

    options.use(options.EXPORT)  # a checkpoint that does not fit: help in this command's options

    def log(message: str) -> None:
        if message.startswith("ONNX: height/width"):
            warn(escape(message))
        else:
            err_console.print(f"[dim]{escape(message)}[/]", highlight=False, soft_wrap=True)

    result = export_model(
        model,
        output,
        scale=scale,
        weights=weights,
        kwargs=model_args(arg),
        formats=formats,
        run_dir=run,
        overwrite=overwrite,
        opset=opset,
        onnx_fixed_size=onnx_size,
        log=log,
        quantize=quantize,
        calib=calib,
        calib_count=calib_count,
        max_drop=max_drop,
    )
    if (result.config.get("provenance") or {}).get("weights") is None:
        # export_model() gives a preset its declared weights; anything else without --weights is its
        # random initialisation (a checkpoint file given as the model carries its own).
        warn(escape(f"no --weights for '{model}': exported its random initialisation"))
    onnx = result.onnx
    line = f"exported {result.config['architecture']} x{result.config['scale']} to {result.directory}: {', '.join(result.files)}"
    console.print(line, highlight=False, soft_wrap=True)
    if onnx is not None:
        shape = (
            "dynamic batch/height/width"
            if onnx.dynamic_hw
            else f"fixed {onnx.fixed_input_size[0]}x{onnx.fixed_input_size[1]} input"
        )
        console.print(
            f"ONNX opset {onnx.opset}, {shape}; max |ONNX Runtime - PyTorch| = {onnx.max_abs_diff:.2e}",
            highlight=False,
            soft_wrap=True,
        )
    if result.config.get("spandrel"):
        from dukd_cli.export.spandrel import advice

        console.print(advice(result.config["spandrel"], onnx is not None), highlight=False, soft_wrap=True)
    int8 = result.config.get("onnx_int8")
    if int8:
        console.print(
            f"int8 ({int8['calibration_method']} calibration; in float: {int8['left_in_float']}): "
            f"hold-out Y-PSNR {int8['holdout_psnr_int8']:.3f} dB vs fp32 {int8['holdout_psnr_fp32']:.3f} dB "
            f"(-{int8['holdout_drop_db']:.3f} dB, max {int8['max_drop_db']:g}); "
            f"{int8['size_vs_fp32']:.2f}x the fp32 file",
            highlight=False,
            soft_wrap=True,
        )
    fp16 = result.config.get("onnx_fp16")
    if fp16:
        console.print(
            f"fp16: {fp16['parity_psnr_db']:.1f} dB PSNR against PyTorch fp32, "
            f"max |difference| = {fp16['parity_max_abs_diff']:.2e}"
            + (
                f"; zoo: {'fp16-safe' if z['safe'] else 'NOT fp16-safe'} ({z['evidence']})"
                if isinstance(z := fp16.get("zoo_fp16_safe"), dict)
                else ""
            ),
            highlight=False,
            soft_wrap=True,
        )
    if push_to_hub:
        url = push(result.directory, push_to_hub, private=private)
        console.print(f"pushed to {url}", highlight=False, soft_wrap=True)
