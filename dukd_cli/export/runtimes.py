"""Which file of an exported directory runs: ``--runtime torch|onnx|onnx-int8|onnx-fp16``.

``torch`` builds the PyTorch network (elsewhere); the ONNX runtimes run the directory's shipped
file in ONNX Runtime as an :class:`~dukd_cli.export.onnx.OnnxModel`, so that ``dukd evaluate`` and
``dukd upscale`` measure and produce exactly what was deployed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dukd_cli.errors import DukdError

RUNTIMES = ("torch", "onnx", "onnx-int8", "onnx-fp16")
ONNX_RUNTIMES = {
    "onnx": ("model.onnx", "dukd export --format onnx"),
    "onnx-int8": ("model.int8.onnx", "dukd export --format onnx --quantize int8 --calib DIR"),
    "onnx-fp16": ("model.fp16.onnx", "dukd export --format onnx-fp16"),
}


def check_runtime(runtime: str) -> str:
    r = str(runtime).strip().lower()
    if r not in RUNTIMES:
        raise DukdError(f"--runtime must be one of {', '.join(RUNTIMES)}, not '{runtime}'")
    return r


def load_onnx_runtime(
    model: str | os.PathLike,
    runtime: str,
    *,
    scale: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
):
    """The ONNX file ``runtime`` names in the exported directory ``model``, as an ``OnnxModel``."""
    from dukd_cli.export.onnx import OnnxModel, require_onnx
    from dukd_cli.rundir import EXPORT_CONFIG

    runtime = check_runtime(runtime)
    if runtime not in ONNX_RUNTIMES:
        raise DukdError(f"--runtime {runtime} is not an ONNX runtime")
    require_onnx(f"--runtime {runtime}", exporting=False)
    filename, how = ONNX_RUNTIMES[runtime]
    d = Path(model)
    if not (d / EXPORT_CONFIG).is_file():
        raise DukdError(
            f"--runtime {runtime} runs an exported model directory; '{model}' is not one "
            f"(make one with `{how} -o DIR`)"
        )
    if not (d / filename).is_file():
        raise DukdError(f"{d} has no {filename}; export it with `{how}`")
    try:
        cfg = json.loads((d / EXPORT_CONFIG).read_text())
        model_scale = int(cfg["scale"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DukdError(f"cannot read {d / EXPORT_CONFIG}: {exc}") from None
    if scale is not None and int(scale) != model_scale:
        raise DukdError(f"model directory {model} is x{model_scale}, but --scale {scale} was given")
    fixed = (cfg.get("onnx") or {}).get("fixed_input_size")
    return OnnxModel(
        d / filename,
        model_scale,
        window_size=cfg.get("window_size"),
        fixed_input_size=tuple(fixed) if fixed else None,
        device=str(device),
        threads=threads,
    )
