"""The ``README.md`` model card of an exported directory, written from its ``config.json``.

Sections: front matter and title, Model (architecture, scale, shapes, window, arguments),
Provenance (the distill run, the weights' source and SHA-256), Files (safetensors, ONNX and its
fp16/int8 siblings) and Use (``dukd upscale``, Python, ONNX Runtime).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dukd_cli.export import spandrel as spandrel_layout
from dukd_cli.export.onnx import ONNX_FILE
from dukd_cli.rundir import EXPORT_CONFIG, EXPORT_WEIGHTS

README_FILE = "README.md"


def model_card(cfg: Mapping[str, Any], name: str) -> str:
    """A README.md model card for an exported directory."""
    lines = _header(cfg, name) + _provenance(cfg.get("provenance") or {}) + _files(cfg) + _use(cfg)
    lines += [
        "",
        "The license of the weights follows their source (see Provenance); check it before redistributing.",
        "",
    ]
    return "\n".join(lines)


def _header(cfg: Mapping[str, Any], name: str) -> list[str]:
    """Front matter, title and the Model section."""
    scale = cfg["scale"]
    args = cfg.get("arguments") or {}
    lines = [
        "---",
        "library_name: dukd",
        "tags:",
        "- super-resolution",
        "- image-to-image",
        "- dukd",
        *(["- onnx"] if cfg.get("onnx") else []),
        "---",
        "",
        f"# {name} (x{scale})",
        "",
        f"A x{scale} image super-resolution network (`{cfg['architecture']}`, "
        f"{cfg['parameters'] / 1e6:.2f} M parameters) exported by dukd {cfg['dukd_version']}.",
        "",
        "## Model",
        "",
        f"- architecture: `{cfg['architecture']}`"
        + (f" (preset `{cfg['preset']}`)" if cfg.get("preset") else ""),
        f"- scale: x{scale}",
        f"- parameters: {cfg['parameters']:,}",
        f"- input: {cfg['input']}",
        f"- output: {cfg['output']}; clamp to [0, 1] before quantising",
    ]
    if cfg.get("window_size"):
        lines.append(
            f"- window size: {cfg['window_size']} (inputs are reflect-padded to a multiple of it internally; "
            "the ONNX model needs sides of at least that many pixels)"
        )
    if args:
        lines += ["- constructor arguments:", ""]
        lines += [f"  - `{k}` = `{json.dumps(v)}`" for k, v in args.items()]
    return lines


def _provenance(prov: Mapping[str, Any]) -> list[str]:
    """The Provenance section: the distill run (if any) and the weights' source."""
    lines = ["", "## Provenance", ""]
    if prov.get("run_dir") or prov.get("method"):
        teacher = prov.get("teacher") or {}
        lines.append(
            f"- distilled by dukd (method `{prov.get('method', '?')}`) from run `{prov.get('run_dir', '?')}`"
        )
        if teacher:
            lines.append(
                f"- teacher: `{teacher.get('name', '?')}`"
                + (f", weights `{teacher['weights']}`" if teacher.get("weights") else "")
            )
        if prov.get("data"):
            lines.append(f"- data: `{json.dumps(prov['data'])}`")
        if prov.get("iterations") is not None:
            lines.append(f"- iterations: {prov['iterations']}")
        if prov.get("validation"):
            lines.append(f"- validation (last record): `{json.dumps(prov['validation'])}`")
    lines.append(f"- weights source: `{prov.get('weights')}`")
    if prov.get("weights_sha256"):
        lines.append(f"- weights SHA-256 (source file): `{prov['weights_sha256']}`")
    if prov.get("note"):
        lines.append(f"- note: {prov['note']}")
    return lines


def _files(cfg: Mapping[str, Any]) -> list[str]:
    """The Files section: weights, config, and the ONNX files that were written."""
    lines = [
        "",
        "## Files",
        "",
        f"- `{EXPORT_WEIGHTS}`: PyTorch weights (safetensors)"
        + (f"; {line}" if (line := spandrel_layout.describe(cfg)) else ""),
        f"- `{EXPORT_CONFIG}`: architecture, arguments, scale, provenance",
    ]
    onnx_cfg = cfg.get("onnx")
    if onnx_cfg:
        if onnx_cfg.get("fixed_input_size"):
            fh, fw = onnx_cfg["fixed_input_size"]
            shape = f"fixed input size {fh}x{fw} (dynamic batch): feed exactly that size (tile larger images)"
        else:
            shape = "dynamic batch, height and width"
        lines.append(
            f"- `{ONNX_FILE}`: ONNX opset {onnx_cfg['opset']}, {shape}; checked against PyTorch "
            f"(max abs difference {onnx_cfg['parity_max_abs_diff']:.2e} <= {onnx_cfg['parity_tolerance']:g})"
        )
    fp16 = cfg.get("onnx_fp16")
    if fp16:
        lines.append(
            f"- `{fp16['file']}`: the same network in float16 (float32 input/output); "
            f"{fp16['parity_psnr_db']:.1f} dB PSNR against fp32 on the check inputs"
        )
    int8 = cfg.get("onnx_int8")
    if int8:
        lines.append(
            f"- `{int8['file']}`: int8 (QDQ, per-channel weights, {int8['calibration_method']} calibration"
            + (", biases corrected for the rounding" if int8.get("biases_corrected") else "")
            + (f", {len(int8['nodes_to_exclude'])} nodes kept in float" if int8["nodes_to_exclude"] else "")
            + f"); Y-PSNR {int8['holdout_drop_db']:.3f} dB below fp32 on the calibration hold-out"
        )
    return lines


def _use(cfg: Mapping[str, Any]) -> list[str]:
    """The Use section: the command line, PyTorch and (with an ONNX file) ONNX Runtime."""
    onnx_cfg = cfg.get("onnx")
    lines = [
        "",
        "## Use",
        "",
        "```bash",
        "pip install dukd",
        "dukd upscale photo.png -o photo_sr.png --model THIS_DIR",
    ]
    if onnx_cfg:
        lines.append("dukd upscale photo.png -o photo_sr.png --model THIS_DIR --runtime onnx  # ONNX Runtime")
    lines += [
        "```",
        "",
        "```python",
        "from dukd_cli.models.factory import create_model",
        "",
        'model = create_model("THIS_DIR")  # torch.nn.Module',
        "```",
    ]
    if onnx_cfg:
        lines += [
            "",
            "```python",
            "import numpy as np, onnxruntime as ort",
            "",
            f'session = ort.InferenceSession("THIS_DIR/{ONNX_FILE}")',
            "x = np.random.rand(1, 3, 64, 64).astype(np.float32)  # RGB in [0, 1], NCHW",
            'y = session.run(None, {"input": x})[0].clip(0, 1)',
            "```",
        ]
    return lines
