"""ONNX: export a model to a verified ONNX file (dynamic H/W where the exporter allows, else a
fixed size), check it against PyTorch with ONNX Runtime, and run ONNX files as models
(:class:`OnnxModel`). Used by :mod:`dukd_cli.export.bundle` and ``dukd upscale --runtime onnx``."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dukd_cli.errors import DukdError
from dukd_cli.export.graph import optimize_exported
from dukd_cli.models.upscaler import size_rules
from dukd_cli.rundir import EXPORT_CONFIG

DEFAULT_OPSET = 18
PARITY_TOL = 1e-4
ONNX_FILE = "model.onnx"
ONNX_HINT = "pip install dukd[onnx]"

Log = Callable[[str], None]


def _nolog(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------------------------------
# optional dependencies
# --------------------------------------------------------------------------------------------------


def require_onnx(what: str = "ONNX export", *, exporting: bool = True) -> None:
    """Raise a one-line :class:`DukdError` naming the extra when onnx / onnxruntime (and, to export,
    onnxscript, which torch's exporter uses) are missing."""
    missing = []
    for mod in ("onnx", "onnxruntime", *(("onnxscript",) if exporting else ())):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise DukdError(f"{what} needs {' and '.join(missing)}, which are not installed: {ONNX_HINT}")


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise DukdError(
            f"running ONNX models needs onnxruntime, which is not installed: {ONNX_HINT}"
        ) from None
    return ort


# --------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------


class _PadCrop(torch.nn.Module):
    """Export wrapper for windowed models: reflect-pad H and W up to a multiple of the window, run,
    crop. The pad is written with symbolic arithmetic so the ONNX graph keeps dynamic H and W (the
    model's own Python-loop padding would be specialised to the example size by the exporter).
    Inputs need sides >= ``window_size`` (reflect padding); dukd pads smaller ones itself."""

    def __init__(self, model: torch.nn.Module, window: int, scale: int) -> None:
        super().__init__()
        self.model, self.window, self.scale = model, window, scale

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        ws = self.window
        ph = (h + ws - 1) // ws * ws - h
        pw = (w + ws - 1) // ws * ws - w
        y = self.model(F.pad(x, (0, pw, 0, ph), mode="reflect"))
        return y[..., : h * self.scale, : w * self.scale]


@contextlib.contextmanager
def _reference_attention(model: torch.nn.Module, enabled: bool):
    """Temporarily switch modules that expose ``use_sdpa`` to their reference attention path
    (same outputs; torch 2.13's ONNX decomposition of SDPA with dynamic shapes fails)."""
    touched = []
    if enabled:
        for m in model.modules():
            if hasattr(m, "use_sdpa"):
                touched.append((m, m.__dict__.get("use_sdpa", _MISSING)))
                m.use_sdpa = False
    try:
        yield bool(touched)
    finally:
        for m, old in touched:
            if old is _MISSING:
                del m.use_sdpa
            else:
                m.use_sdpa = old


_MISSING = object()


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress prints, warnings and logs (errors still raise)."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ")):
            return f"{type(exc).__name__}: {line}"[:300]
    return type(exc).__name__


def _example(h: int, w: int, n: int = 1, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, h, w), generator=g)


def _onnx_export(module: torch.nn.Module, example: Tensor, path: Path, opset: int, dynamic_hw: bool) -> None:
    """Export with the dynamo-based exporter (torch.export); batch always dynamic, H/W optionally."""
    dim = torch.export.Dim.DYNAMIC
    shapes = ({0: dim, 2: dim, 3: dim},) if dynamic_hw else ({0: dim},)
    with _quiet():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=shapes,
            external_data=False,
            verbose=False,
        )
    optimize_exported(str(path))


def _session(path: Path, device: str = "cpu", threads: int | None = None):
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise DukdError(f"ONNX Runtime cannot load {path}: {_first_line(exc)}") from None


def onnx_parity(model: torch.nn.Module, onnx_path: Path, shapes: Iterable[tuple[int, int, int]]) -> float:
    """Max abs difference between ONNX Runtime and PyTorch (fp32) over random inputs of ``shapes``."""
    sess = _session(onnx_path)
    name = sess.get_inputs()[0].name
    worst = 0.0
    for i, (n, h, w) in enumerate(shapes):
        x = _example(h, w, n, seed=100 + i)
        with torch.inference_mode():
            ref = model(x).float().numpy()
        try:
            got = sess.run(None, {name: x.numpy()})[0]
        except Exception as exc:
            raise DukdError(f"ONNX Runtime failed on a {n}x3x{h}x{w} input: {_first_line(exc)}") from None
        if got.shape != ref.shape:
            raise DukdError(
                f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape} for {n}x3x{h}x{w}"
            )
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


@dataclass
class OnnxExport:
    opset: int
    dynamic_hw: bool
    fixed_input_size: tuple[int, int] | None
    max_abs_diff: float
    checked_shapes: list[tuple[int, int, int]]
    notes: list[str] = field(default_factory=list)

    def to_config(self) -> dict[str, Any]:
        return {
            "file": ONNX_FILE,
            "opset": self.opset,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__.split('+')[0]}",
            "input_name": "input",
            "output_name": "output",
            "dynamic_axes": ["batch", "height", "width"] if self.dynamic_hw else ["batch"],
            "fixed_input_size": list(self.fixed_input_size) if self.fixed_input_size else None,
            "parity_max_abs_diff": self.max_abs_diff,
            "parity_tolerance": PARITY_TOL,
            "parity_inputs": [f"{n}x3x{h}x{w}" for n, h, w in self.checked_shapes],
            "notes": self.notes,
        }


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    fixed_size: int = 256,
    allow_fixed: bool = True,
    log: Log = _nolog,
) -> OnnxExport:
    """Write ``model`` (eval, CPU, fp32) to ``path`` as ONNX and check it against PyTorch.

    First choice: dynamic batch, height and width (verified at two different sizes and batch
    sizes, one of them not a multiple of the model's window). Where the exporter cannot make H and
    W dynamic (or the result is wrong at another size), and ``allow_fixed``, falls back to a fixed
    ``fixed_size`` x ``fixed_size`` input with a dynamic batch, says so through ``log``, and records
    it (``fixed_input_size``): dukd then tiles at that size. Raises :class:`DukdError` when no
    export passes the parity check (max abs difference <= 1e-4).
    """
    require_onnx()
    if opset < 17:
        raise DukdError(f"ONNX opset {opset} is too old; use 17 or newer")
    scale = int(model.scale)
    ws = size_rules(model).window

    def exportable(fixed: bool) -> torch.nn.Module:
        # A fresh copy per attempt: tracing may leave traced values in a model's caches.
        m = copy.deepcopy(model).eval()
        return m if fixed or ws <= 1 else _PadCrop(m, ws, scale).eval()

    base = max(ws, 8) if ws > 1 else 8
    ex_h, ex_w = 6 * base, 5 * base
    odd_h, odd_w = ex_h - 11 if ws > 1 else 37, ex_w + 13 if ws > 1 else 29
    dyn_shapes = [(1, ex_h, ex_w), (2, max(odd_h, base), odd_w)]
    errors: list[str] = []
    notes: list[str] = []

    def attempt(fixed: bool, h: int, w: int, shapes: list[tuple[int, int, int]]) -> float | None:
        """Export (reference attention first where a model has it), check parity; the diff or None."""
        for reference in (True, False):
            module = exportable(fixed)
            with _reference_attention(module, reference) as switched:
                if reference and not switched:
                    continue  # nothing to switch: the plain attempt follows
                try:
                    _onnx_export(module, _example(h, w), path, opset, dynamic_hw=not fixed)
                    diff = onnx_parity(model, path, shapes)
                except DukdError as exc:
                    errors.append(str(exc))
                    continue
                except Exception as exc:
                    errors.append(_first_line(exc))
                    continue
                if diff <= PARITY_TOL:
                    if reference and switched:
                        notes.append(
                            "exported with the reference (non-SDPA) attention path; outputs are the same"
                        )
                    return diff
                kind = "fixed-size" if fixed else "dynamic"
                errors.append(f"{kind} export differs from PyTorch by {diff:.3g} (> {PARITY_TOL:g})")
        return None

    diff = attempt(False, ex_h, ex_w, dyn_shapes)
    if diff is not None:
        return OnnxExport(opset, True, None, diff, dyn_shapes, notes)
    if not allow_fixed:
        raise DukdError(f"ONNX export with dynamic height/width failed: {errors[-1] if errors else '?'}")
    size = int(fixed_size)
    if ws > 1:
        size = -(-size // ws) * ws
    log(
        f"ONNX: height/width could not be made dynamic for {type(model).__name__} "
        f"({errors[-1] if errors else '?'}); exporting a fixed {size}x{size} input (dynamic batch). "
        "dukd tiles images at that size; other runtimes must feed exactly that size."
    )
    notes.append(
        f"fixed input size {size}x{size}: dynamic height/width export failed ({errors[-1] if errors else '?'})"
    )
    fixed_shapes = [(1, size, size), (2, size, size)]
    diff = attempt(True, size, size, fixed_shapes)
    if diff is not None:
        return OnnxExport(opset, False, (size, size), diff, fixed_shapes, notes)
    raise DukdError(f"ONNX export failed its check: {errors[-1] if errors else 'unknown error'}")


class OnnxModel:
    """An exported ``model.onnx`` run with ONNX Runtime, callable like a dukd model (NCHW tensors): the
    ONNX kind of :class:`~dukd_cli.models.upscaler.Upscaler`.

    ``scale``, and the size rules: ``window_size``, ``fixed_input_size`` (inputs smaller than it are
    reflect-padded, outputs cropped); ``device`` says inputs are moved to the CPU and back.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        scale: int,
        *,
        window_size: int | None = None,
        fixed_input_size: tuple[int, int] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.scale = int(scale)
        self.window_size = int(window_size) if window_size else None
        self.fixed_input_size = tuple(fixed_input_size) if fixed_input_size else None
        self.device = torch.device("cpu")
        self.session = _session(self.path, device, threads)
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, **kwargs: Any) -> OnnxModel:
        d = Path(directory)
        if not (d / EXPORT_CONFIG).is_file():
            raise DukdError(
                f"{d} is not an exported model directory (no {EXPORT_CONFIG}); --runtime onnx needs one"
            )
        if not (d / ONNX_FILE).is_file():
            raise DukdError(f"{d} has no {ONNX_FILE}; export it with `dukd export --format safetensors,onnx`")
        try:
            cfg = json.loads((d / EXPORT_CONFIG).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DukdError(f"cannot read {d / EXPORT_CONFIG}: {exc}") from None
        onnx_cfg = cfg.get("onnx") or {}
        fixed = onnx_cfg.get("fixed_input_size")
        return cls(
            d / ONNX_FILE,
            int(cfg["scale"]),
            window_size=cfg.get("window_size"),
            fixed_input_size=tuple(fixed) if fixed else None,
            **kwargs,
        )

    def __call__(self, x: Tensor) -> Tensor:
        from dukd_cli.models.sizes import pad_to_size

        h, w = x.shape[-2:]
        if self.fixed_input_size is not None:
            fh, fw = self.fixed_input_size
            if h > fh or w > fw:
                raise DukdError(f"{self.path} takes {fh}x{fw} inputs; got {h}x{w} (tile at {fh})")
            x = pad_to_size(x, fh, fw)
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            y = self.session.run(None, {self.input_name: arr})[0]
        except Exception as exc:
            raise DukdError(
                f"ONNX Runtime failed on a {tuple(arr.shape)} input: {_first_line(exc)}"
            ) from None
        return torch.from_numpy(y)[..., : h * self.scale, : w * self.scale]

    def __repr__(self) -> str:
        return f"OnnxModel({self.path}, x{self.scale})"
