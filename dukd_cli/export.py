"""Exported model directories: ``model.safetensors`` + ``config.json`` + ``model.onnx`` + ``README.md``.

An exported directory is a model source everywhere (``--model DIR``, see
:func:`dukd_cli.models.resolve_spec`) and, through :class:`OnnxModel`, runs without PyTorch's model
code in ONNX Runtime (``dukd upscale --runtime onnx``).

``config.json`` keys (format 1)::

    architecture, arguments, scale          how to rebuild the network (read by dukd_cli.models)
    preset, parameters, window_size         informative
    input / output                          "(N, 3, H, W) float32 RGB in [0, 1]" and the output shape
    input_range                             "[0,1] RGB"
    dukd_version, format_version, created
    files                                   {"weights": "model.safetensors", "onnx": "model.onnx" | null}
    onnx                                    opset, exporter, dynamic axes / fixed input size, parity
    provenance                              weights source (+ SHA-256); for a distill run: teacher,
                                            method, data, iterations, validation metrics, run dir

Export is checked before anything appears at the destination: the directory is built under a
temporary name beside it, reloaded through the same code path as ``--model DIR`` (outputs must be
identical), the ONNX file is run with ONNX Runtime against PyTorch on random inputs (max abs
difference <= 1e-4 in fp32, at two sizes and batch sizes so that dynamic axes are really dynamic),
and only then renamed into place.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import io
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dukd_cli import __version__
from dukd_cli.errors import DukdError
from dukd_cli.models import EXPORT_CONFIG, EXPORT_WEIGHTS, ModelSpec, build, count_parameters, resolve_spec
from dukd_cli.models import is_run_dir as models_is_run_dir

ONNX_FILE = "model.onnx"
README_FILE = "README.md"
FORMATS = ("safetensors", "onnx")
DEFAULT_OPSET = 18
PARITY_TOL = 1e-4
FORMAT_VERSION = 1
INPUT_RANGE = "[0,1] RGB"
RUN_CONFIG = "config.toml"
RUN_WEIGHTS = "student.safetensors"
RUN_METRICS = "metrics.jsonl"
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
# distill run directories
# --------------------------------------------------------------------------------------------------


def is_run_dir(path: str | os.PathLike) -> bool:
    """A ``dukd distill`` run directory: ``config.toml`` and ``student.safetensors``."""
    return models_is_run_dir(path) and (Path(path) / RUN_WEIGHTS).is_file()


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise DukdError(f"reading {path} needs Python 3.11+ or the 'tomli' package") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, ValueError) as exc:
        raise DukdError(f"cannot read {path}: {exc}") from None


def _table(cfg: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = cfg.get(key)
    return dict(v) if isinstance(v, Mapping) else {}


def _is_metric_key(k: str) -> bool:
    k = k.lower()
    return any(t in k for t in ("psnr", "ssim", "lpips")) or k.startswith("val")


def read_metrics(path: Path) -> dict[str, Any]:
    """The last validation record of a ``metrics.jsonl`` (lines with a PSNR/SSIM-like key), or ``{}``.

    Read defensively: bad lines are skipped, non-numeric values dropped.
    """
    if not path.is_file():
        return {}
    last: dict[str, Any] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, Mapping):
            continue
        metrics = {
            k: v
            for k, v in rec.items()
            if _is_metric_key(str(k)) and isinstance(v, (int, float, str, Mapping))
        }
        if not any(isinstance(v, (int, float)) for v in metrics.values()):
            continue
        if metrics:
            step = next(
                (rec[k] for k in ("iter", "iteration", "step", "it") if isinstance(rec.get(k), int)), None
            )
            last = (
                {"iteration": step, **{str(k): v for k, v in metrics.items()}}
                if step is not None
                else metrics
            )
    return _jsonable(last)


@dataclass
class RunInfo:
    """What a distill run directory says about its student."""

    directory: Path
    student_name: str | None
    scale: int | None
    args: dict[str, Any]
    weights: Path
    provenance: dict[str, Any] = field(default_factory=dict)


def read_run_dir(path: str | os.PathLike) -> RunInfo:
    """Read ``config.toml`` (tables [student], [teacher], [method], [data], [train]) and ``metrics.jsonl``."""
    d = Path(path)
    if not (d / RUN_CONFIG).is_file():
        raise DukdError(f"{d} is not a distill run directory (no {RUN_CONFIG})")
    cfg = _load_toml(d / RUN_CONFIG)
    student, teacher = _table(cfg, "student"), _table(cfg, "teacher")
    method, data, train = _table(cfg, "method"), _table(cfg, "data"), _table(cfg, "train")
    scale = student.get("scale", cfg.get("scale"))
    iters = next((train[k] for k in ("iters", "iterations", "total_iters", "steps") if k in train), None)
    prov: dict[str, Any] = {
        "run_dir": str(d.resolve()),
        "teacher": {k: teacher[k] for k in ("name", "weights", "args", "scale") if k in teacher} or None,
        "method": method.get("name") if method else None,
        "method_config": method or None,
        "data": data or None,
        "iterations": iters,
        "validation": read_metrics(d / RUN_METRICS) or None,
    }
    return RunInfo(
        directory=d,
        student_name=student.get("name"),
        scale=int(scale) if isinstance(scale, (int, str)) and str(scale).isdigit() else None,
        args=dict(student.get("args", {}) or {}),
        weights=d / RUN_WEIGHTS,
        provenance=_jsonable({k: v for k, v in prov.items() if v is not None}),
    )


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
    ws = int(getattr(model, "window_size", 0) or 0)

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

    def attempt(fixed: bool, h: int, w: int, shapes) -> float | None:
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
    """An exported ``model.onnx`` run with ONNX Runtime, callable like a dukd model (NCHW tensors).

    Has the attributes :func:`dukd_cli.inference.run_model` reads: ``scale``, ``window_size``,
    ``fixed_input_size`` (inputs smaller than it are reflect-padded, outputs cropped) and
    ``device`` (inputs are moved to the CPU and back).
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
        from dukd_cli.inference import pad_to_size

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


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    directory: Path
    config: dict[str, Any]
    files: list[str]
    onnx: OnnxExport | None = None


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"safetensors,onnx"`` -> ("safetensors", "onnx"); safetensors is always included (it is what
    makes the directory a model source)."""
    if formats is None:
        items = list(FORMATS)
    elif isinstance(formats, str):
        items = [f for f in formats.replace(" ", ",").split(",") if f]
    else:
        items = [str(f) for f in formats]
    out = []
    for f in items:
        f = f.strip().lower()
        if f not in FORMATS:
            raise DukdError(f"unknown export format '{f}' (use {', '.join(FORMATS)})")
        if f not in out:
            out.append(f)
    if "safetensors" not in out:
        out.insert(0, "safetensors")
    return tuple(o for o in FORMATS if o in out)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (_dt.date, _dt.datetime)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict as safetensors (contiguous CPU copies; shared storage unshared)."""
    from safetensors.torch import save_file

    sd = {
        k: v.detach().to("cpu").contiguous().clone()
        for k, v in model.state_dict().items()
        if isinstance(v, Tensor)
    }
    save_file(sd, str(path), metadata={"format": "pt", "dukd_version": __version__})


def _weights_provenance(spec: ModelSpec) -> dict[str, Any]:
    from dukd_cli.weights import sha256_file

    out: dict[str, Any] = {"weights": spec.weights}
    if spec.weights and not str(spec.weights).startswith("hf://"):
        p = Path(spec.weights)
        if p.is_file():
            out["weights"] = str(p.resolve())
            out["weights_sha256"] = sha256_file(p)
    if spec.weights is None:
        out["weights"] = None
        out["note"] = "no weights were given: the parameters are the architecture's random initialisation"
    return out


def build_config(
    spec: ModelSpec, model: torch.nn.Module, provenance: Mapping[str, Any], onnx_info: OnnxExport | None
) -> dict[str, Any]:
    scale = int(spec.scale)
    cfg: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "architecture": spec.arch,
        "arguments": _jsonable(spec.kwargs),
        "scale": scale,
        "preset": spec.preset,
        "parameters": count_parameters(model),
        "window_size": int(getattr(model, "window_size", 0) or 0) or None,
        "input_range": INPUT_RANGE,
        "input": "(N, 3, H, W) float32 RGB in [0, 1]",
        "output": f"(N, 3, {scale}H, {scale}W) float32 RGB, nominally [0, 1] (not clamped)",
        "dukd_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "files": {
            "weights": EXPORT_WEIGHTS,
            "onnx": ONNX_FILE if onnx_info else None,
            "model_card": README_FILE,
        },
        "onnx": onnx_info.to_config() if onnx_info else None,
        "provenance": _jsonable(provenance),
    }
    return cfg


def model_card(cfg: Mapping[str, Any], name: str) -> str:
    """A README.md model card for an exported directory."""
    scale = cfg["scale"]
    prov = cfg.get("provenance") or {}
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
    lines += ["", "## Provenance", ""]
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
    lines += [
        "",
        "## Files",
        "",
        f"- `{EXPORT_WEIGHTS}`: PyTorch weights (safetensors)",
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
    lines += [
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
        "from dukd_cli.models import create_model",
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
    lines += [
        "",
        "The license of the weights follows their source (see Provenance); check it before redistributing.",
        "",
    ]
    return "\n".join(lines)


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished ``tmp`` onto ``dest`` (an existing ``dest`` is replaced only at the very end)."""
    if dest.exists():
        backup = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, backup)
        try:
            os.replace(tmp, dest)
        except BaseException:
            os.replace(backup, dest)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def export_model(
    model: str,
    out_dir: str | os.PathLike,
    *,
    scale: int | None = None,
    weights: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    formats: str | Iterable[str] | None = FORMATS,
    run_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    opset: int = DEFAULT_OPSET,
    onnx_fixed_size: int = 256,
    log: Log = _nolog,
) -> ExportResult:
    """Export ``model`` (a preset, architecture, exported directory or distill run directory) to ``out_dir``.

    ``run_dir``: a distill run directory whose provenance (teacher, method, data, iterations,
    validation) goes into ``config.json``; implied when ``model`` is itself a run directory, whose
    ``student.safetensors`` is then the weights (unless ``weights`` is given).
    """
    fmts = parse_formats(formats)
    if "onnx" in fmts:
        require_onnx()
    dest = Path(out_dir).expanduser()
    kwargs = dict(kwargs or {})

    run: RunInfo | None = None
    name = model
    if is_run_dir(model):
        run = read_run_dir(model)
        if not run.student_name:
            raise DukdError(
                f"{Path(model) / RUN_CONFIG} has no [student] name; cannot tell which network it holds"
            )
        name = run.student_name
        if scale is not None and run.scale is not None and int(scale) != run.scale:
            raise DukdError(f"run {model} trained a x{run.scale} student, but --scale {scale} was given")
        scale = scale if scale is not None else run.scale
        kwargs = {**run.args, **kwargs}
        weights = weights or str(run.weights)
    elif Path(model).is_dir() and (Path(model) / RUN_CONFIG).is_file():
        raise DukdError(
            f"{model} looks like a distill run directory but has no {RUN_WEIGHTS} (did the run finish?)"
        )
    elif run_dir is not None:
        run = read_run_dir(run_dir)

    spec = resolve_spec(name, scale, kwargs=kwargs, weights=weights)
    if dest.exists() and not overwrite:
        raise DukdError(f"{dest} already exists; pass --overwrite to replace it")
    if dest.exists() and not dest.is_dir():
        raise DukdError(f"{dest} exists and is not a directory")
    if spec.directory and dest.resolve() == Path(spec.directory).resolve():
        raise DukdError(f"cannot export {spec.directory} onto itself; choose another -o")
    if run is not None and dest.resolve() == run.directory.resolve():
        raise DukdError("cannot export into the run directory itself; choose another -o")

    log(
        f"building {spec.arch} x{spec.scale}"
        + (f" with weights {spec.weights}" if spec.weights else " (random weights)")
    )
    net = build(spec, device="cpu").float().eval()

    provenance: dict[str, Any] = {**_weights_provenance(spec), "model": str(model)}
    if spec.directory:
        try:
            old = json.loads((Path(spec.directory) / EXPORT_CONFIG).read_text()).get("provenance") or {}
        except (OSError, json.JSONDecodeError):
            old = {}
        if old:
            provenance["exported_from"] = old
    if run is not None:
        provenance.update(run.provenance)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    except OSError as exc:
        raise DukdError(f"cannot create {dest}: {exc.strerror or exc}") from None
    try:
        save_weights(net, tmp / EXPORT_WEIGHTS)
        cfg = build_config(spec, net, provenance, None)
        (tmp / EXPORT_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        _check_reload(net, tmp)
        onnx_info = None
        if "onnx" in fmts:
            log(f"exporting ONNX (opset {opset}) and checking it against PyTorch")
            onnx_info = export_onnx(net, tmp / ONNX_FILE, opset=opset, fixed_size=onnx_fixed_size, log=log)
            cfg = build_config(spec, net, provenance, onnx_info)
            (tmp / EXPORT_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        display = spec.preset or spec.arch
        (tmp / README_FILE).write_text(model_card(cfg, display))
        os.chmod(tmp, 0o777 & ~_umask())
        for f in tmp.iterdir():  # some writers (safetensors) create 0600 files
            os.chmod(f, 0o666 & ~_umask())
        _replace_dir(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (DukdError, KeyboardInterrupt, SystemExit)):
            raise
        raise DukdError(f"export failed: {_first_line(exc)}") from exc
    files = sorted(p.name for p in dest.iterdir())
    return ExportResult(dest, cfg, files, onnx_info)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_reload(net: torch.nn.Module, directory: Path) -> None:
    """Rebuild the model from ``directory`` the way ``--model DIR`` does; outputs must be identical."""
    spec = resolve_spec(str(directory))
    again = build(spec, device="cpu").float().eval()
    x = _example(24, 20, 1, seed=7)
    with torch.inference_mode():
        a, b = net(x), again(x)
    if a.shape != b.shape or not torch.equal(a, b):
        diff = (a - b).abs().max().item() if a.shape == b.shape else float("nan")
        raise DukdError(
            f"the exported directory does not reproduce the model (max abs difference {diff:.3g})"
        )


# --------------------------------------------------------------------------------------------------
# Hugging Face Hub
# --------------------------------------------------------------------------------------------------


def push_to_hub(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload an exported directory to the Hub model repo ``repo_id`` (created if needed); returns its URL.

    The token comes from huggingface_hub's usual places (``HF_TOKEN``, ``hf auth login``) unless given.
    """
    d = Path(directory)
    if not (d / EXPORT_CONFIG).is_file():
        raise DukdError(f"{d} is not an exported model directory (no {EXPORT_CONFIG})")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise DukdError(f"Hub repo id '{repo_id}' must look like OWNER/NAME")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise DukdError("HF_HUB_OFFLINE is set; cannot push to the Hub (unset it to upload)")
    try:
        from huggingface_hub import HfApi
    except ImportError:  # pragma: no cover - a declared dependency
        raise DukdError("pushing to the Hub needs huggingface_hub") from None
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(d),
            repo_type="model",
            commit_message=commit_message or f"Upload {d.name} exported by dukd {__version__}",
        )
    except DukdError:
        raise
    except Exception as exc:
        raise DukdError(f"pushing to Hub repo '{repo_id}' failed: {_first_line(exc)}") from None
    return str(url) if url else f"https://huggingface.co/{repo_id}"
