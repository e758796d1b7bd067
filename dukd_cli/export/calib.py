"""Calibration and scoring for the int8 export: patches cut from HR training images, a hold-out, and
the hold-out's Y-PSNR as ``dukd evaluate`` computes it, through ONNX Runtime (CPU).

``count`` patches (``DEFAULT_CALIB_COUNT`` of ``DEFAULT_CALIB_PATCH`` LR pixels, LR made by
MATLAB-exact bicubic, or cut from the dataset's own LR files) are split into calibration patches and
a hold-out (``HOLDOUT_FRACTION``); the hold-out never calibrates anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dukd_cli.errors import DukdError

DEFAULT_CALIB_COUNT = 64
DEFAULT_CALIB_PATCH = 48
HOLDOUT_FRACTION = 0.25


# --------------------------------------------------------------------------------------------------
# calibration data
# --------------------------------------------------------------------------------------------------


@dataclass
class CalibData:
    """LR patches (1, 3, p, p) float32 in [0, 1] with their HR patches (p*s, p*s, 3) uint8."""

    lr: list[np.ndarray]
    hr: list[np.ndarray]
    scale: int
    description: str
    holdout_fraction: float = HOLDOUT_FRACTION

    @property
    def n_holdout(self) -> int:
        return max(1, round(len(self.lr) * self.holdout_fraction))

    @property
    def calibration(self) -> list[np.ndarray]:
        return self.lr[: len(self.lr) - self.n_holdout]

    @property
    def holdout(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        k = len(self.lr) - self.n_holdout
        return self.lr[k:], self.hr[k:]


def calibration_patches(
    sources: Sequence[str | os.PathLike],
    scale: int,
    *,
    count: int = DEFAULT_CALIB_COUNT,
    patch: int = DEFAULT_CALIB_PATCH,
    seed: int = 0,
) -> CalibData:
    """``count`` random patches of ``patch`` LR pixels from the HR images behind ``sources`` (folders
    as ``dukd distill --data`` takes them, or ``builtin``), images visited in a shuffled round robin."""
    from dukd_cli.data.benchmarks import make_lr
    from dukd_cli.data.discover import discover
    from dukd_cli.images.imageio import read_rgb_uint8

    if count < 2:
        raise DukdError(f"--calib-count must be at least 2 (calibration + hold-out), got {count}")
    if patch < 8:
        raise DukdError(f"calibration patches must be at least 8 pixels, got {patch}")
    found = []
    for s in sources:
        srcs, _layout = discover(s, scale)
        found.extend(srcs)
    if not found:
        raise DukdError(f"no calibration images found in {', '.join(map(str, sources))}")
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(found)))
    hp = patch * scale
    lrs: list[np.ndarray] = []
    hrs: list[np.ndarray] = []
    decoded: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    usable = list(order)
    i = 0
    while len(lrs) < count and usable:
        k = usable[i % len(usable)]
        if k not in decoded:
            src = found[k]
            decoded[k] = (
                read_rgb_uint8(src.hr),
                read_rgb_uint8(src.lr) if src.lr is not None else None,
            )
        hr, lr_full = decoded[k]
        h, w = hr.shape[0] // scale, hr.shape[1] // scale
        if h < patch or w < patch:
            usable.remove(k)
            continue
        y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
        hr_p = np.ascontiguousarray(hr[y * scale : y * scale + hp, x * scale : x * scale + hp])
        if lr_full is not None and lr_full.shape[0] >= y + patch and lr_full.shape[1] >= x + patch:
            lr_p = lr_full[y : y + patch, x : x + patch]
        else:
            lr_p = make_lr(hr_p, scale)
        lrs.append(np.ascontiguousarray(lr_p.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0)
        hrs.append(hr_p)
        i += 1
        if len(decoded) > 64:  # keep memory bounded on big folders
            decoded.pop(next(iter(decoded)))
    if len(lrs) < count:
        raise DukdError(
            f"no calibration image in {', '.join(map(str, sources))} is at least {hp}x{hp} pixels "
            f"({patch} LR pixels at x{scale})"
        )
    names = ", ".join(str(s) for s in sources)
    return CalibData(lrs, hrs, int(scale), f"{count} patches of {patch}x{patch} LR pixels from {names}")


# --------------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------------


def session(model: str | Path | bytes, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def pad_to_fixed(x: np.ndarray, fixed: tuple[int, int] | None) -> np.ndarray:
    if fixed is None:
        return x
    fh, fw = fixed
    h, w = x.shape[-2:]
    return np.pad(x, ((0, 0), (0, 0), (0, fh - h), (0, fw - w)), mode="reflect")


def run_session(
    sess: Any, lrs: Sequence[np.ndarray], scale: int, fixed: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """Outputs as the evaluator stores them: HxWx3 uint8 (clamped, x255, rounded)."""
    name = sess.get_inputs()[0].name
    out = []
    for x in lrs:
        h, w = x.shape[-2:]
        y = sess.run(None, {name: pad_to_fixed(x, fixed)})[0][0, :, : h * scale, : w * scale]
        out.append(np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0))
    return out


def mean_psnr_y(srs: Sequence[np.ndarray], hrs: Sequence[np.ndarray], scale: int) -> float:
    from dukd_cli.evaluate.metrics import psnr_y

    vals = [psnr_y(a, b, scale) for a, b in zip(srs, hrs, strict=True)]
    return float(np.mean([v for v in vals if np.isfinite(v)] or [float("inf")]))
