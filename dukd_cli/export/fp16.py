"""Half precision ONNX (``dukd export --format onnx-fp16``): ``model.fp16.onnx`` beside ``model.onnx``.

The fp32 ONNX file is converted with ONNX Runtime's float16 tooling
(``onnxruntime.transformers.float16.convert_float_to_float16``, inputs and outputs kept float32 so
that callers feed the same arrays), then checked like the fp32 export: run in ONNX Runtime on the
CPU against PyTorch's fp32 outputs on the same inputs. A half model cannot match to 1e-4; it must
reach ``MIN_PSNR`` dB against fp32 (outputs clamped to [0, 1]) or the export fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dukd_cli.errors import DukdError

if TYPE_CHECKING:
    import torch

FP16_FILE = "model.fp16.onnx"
MIN_PSNR = 40.0


@dataclass
class Fp16Export:
    max_abs_diff: float
    psnr_vs_fp32: float
    checked_shapes: list[tuple[int, int, int]]

    def to_config(self) -> dict[str, Any]:
        return {
            "file": FP16_FILE,
            "tool": "onnxruntime.transformers.float16.convert_float_to_float16 (keep_io_types)",
            "input": "float32 (cast to float16 inside the graph)",
            "parity_max_abs_diff": self.max_abs_diff,
            "parity_psnr_db": round(self.psnr_vs_fp32, 3),
            "parity_min_psnr_db": MIN_PSNR,
            "parity_inputs": [f"{n}x3x{h}x{w}" for n, h, w in self.checked_shapes],
        }


def to_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write a float16 copy of the ONNX file ``src`` (float32 inputs/outputs kept) to ``dst``."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise DukdError("fp16 ONNX export needs onnx and onnxruntime: pip install dukd[onnx]") from None
    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, str(dst))


def psnr01(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two arrays nominally in [0, 1], both clamped to it."""
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def export_fp16(
    model: torch.nn.Module, fp32_onnx: Path, dst: Path, shapes: Iterable[tuple[int, int, int]]
) -> Fp16Export:
    """Convert ``fp32_onnx`` to ``dst`` and check it against ``model`` (PyTorch, fp32) on ``shapes``."""
    import torch

    from dukd_cli.export.onnx import _example, _first_line, _session

    to_fp16(fp32_onnx, dst)
    sess = _session(dst)
    name = sess.get_inputs()[0].name
    shapes = list(shapes)
    worst, psnrs = 0.0, []
    for i, (n, h, w) in enumerate(shapes):
        x = _example(h, w, n, seed=300 + i)
        with torch.inference_mode():
            ref = model(x).float().numpy()
        try:
            got = sess.run(None, {name: x.numpy()})[0]
        except Exception as exc:
            raise DukdError(f"ONNX Runtime failed on the fp16 model: {_first_line(exc)}") from None
        worst = max(worst, float(np.abs(got.astype(np.float32) - ref).max()))
        psnrs.append(psnr01(got, ref))
    result = Fp16Export(worst, float(min(psnrs)), shapes)
    if not result.psnr_vs_fp32 >= MIN_PSNR:
        raise DukdError(
            f"the fp16 model differs from fp32 too much (PSNR {result.psnr_vs_fp32:.1f} dB < {MIN_PSNR:g}, "
            f"max abs difference {worst:.3g}); this network is not fp16-safe, export --format onnx"
        )
    return result
