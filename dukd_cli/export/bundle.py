"""Exported model directories: ``model.safetensors`` + ``config.json`` + ``model.onnx`` + ``README.md``.

An exported directory is a model source everywhere (``--model DIR``, see
:func:`dukd_cli.models.factory.resolve_spec`) and, through :class:`OnnxModel`, runs without PyTorch's model
code in ONNX Runtime (``dukd upscale --runtime onnx``).

``config.json`` keys (format 1)::

    architecture, arguments, scale          how to rebuild the network (read by dukd_cli.models.factory)
    preset, parameters, window_size         informative
    input / output                          "(N, 3, H, W) float32 RGB in [0, 1]" and the output shape
    input_range                             "[0,1] RGB"
    dukd_version, format_version, created
    files                                   {"weights": "model.safetensors", "onnx": "model.onnx" | null}
    onnx                                    opset, exporter, dynamic axes / fixed input size, parity
    spandrel                                the spandrel family model.safetensors loads as (and the
                                            checked max abs difference), or why it cannot
    provenance                              weights source (+ SHA-256); for a distill run: teacher,
                                            method, data, iterations, validation metrics, run dir

Export is checked before anything appears at the destination: the directory is built under a
temporary name beside it, reloaded through the same code path as ``--model DIR`` (outputs must be
identical), the ONNX file is run with ONNX Runtime against PyTorch on random inputs (max abs
difference <= 1e-4 in fp32, at two sizes and batch sizes so that dynamic axes are really dynamic),
and only then renamed into place.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dukd_cli import __version__
from dukd_cli.errors import DukdError
from dukd_cli.export import spandrel as spandrel_layout
from dukd_cli.export.card import README_FILE, model_card
from dukd_cli.export.onnx import (
    DEFAULT_OPSET,
    ONNX_FILE,
    Log,
    OnnxExport,
    _example,
    _first_line,
    _nolog,
    export_onnx,
    require_onnx,
)
from dukd_cli.export.provenance import RunInfo, jsonable, read_run_dir, weights_provenance
from dukd_cli.models.factory import build, count_parameters, resolve_spec
from dukd_cli.models.spec import ModelSpec
from dukd_cli.models.upscaler import size_rules
from dukd_cli.rundir import EXPORT_CONFIG, EXPORT_WEIGHTS, RUN_CONFIG, RUN_WEIGHTS
from dukd_cli.rundir import is_run_dir as models_is_run_dir
from dukd_cli.runtime import stale

if TYPE_CHECKING:
    from dukd_cli.export.calib import CalibData

FORMATS = ("safetensors", "onnx", "onnx-fp16")
DEFAULT_FORMATS = ("safetensors", "onnx")
FORMAT_VERSION = 1
INPUT_RANGE = "[0,1] RGB"


def is_run_dir(path: str | os.PathLike) -> bool:
    """A ``dukd distill`` run directory: ``config.toml`` and ``student.safetensors``."""
    return models_is_run_dir(path) and (Path(path) / RUN_WEIGHTS).is_file()


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
    makes the directory a model source), and ``onnx-fp16`` brings ``onnx`` (its source and reference)."""
    if formats is None:
        items = list(DEFAULT_FORMATS)
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
    if "onnx-fp16" in out and "onnx" not in out:
        out.append("onnx")  # the fp16 file is converted from, and checked beside, model.onnx
    return tuple(o for o in FORMATS if o in out)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict as safetensors (contiguous CPU copies; shared storage unshared)."""
    save_state_dict(model.state_dict(), path)


def save_state_dict(state_dict: Mapping[str, Any], path: Path) -> None:
    """A state dict as safetensors (contiguous CPU copies; shared storage unshared)."""
    from safetensors.torch import save_file

    sd = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items() if isinstance(v, Tensor)
    }
    save_file(sd, str(path), metadata={"format": "pt", "dukd_version": __version__})


def build_config(
    spec: ModelSpec,
    model: torch.nn.Module,
    provenance: Mapping[str, Any],
    onnx_info: OnnxExport | None,
    spandrel: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    scale = int(spec.scale)
    cfg: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "architecture": spec.arch,
        "arguments": jsonable(spec.kwargs),
        "scale": scale,
        "preset": spec.preset,
        "parameters": count_parameters(model),
        "window_size": size_rules(model).window or None,
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
        "spandrel": dict(spandrel) if spandrel is not None else None,
        "provenance": jsonable(provenance),
    }
    return cfg


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
    formats: str | Iterable[str] | None = DEFAULT_FORMATS,
    run_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    opset: int = DEFAULT_OPSET,
    onnx_fixed_size: int = 256,
    log: Log = _nolog,
    quantize: str | None = None,
    calib: Iterable[str | os.PathLike] | None = None,
    calib_count: int | None = None,
    max_drop: float | None = None,
) -> ExportResult:
    """Export ``model`` (a preset, architecture, exported directory or distill run directory) to ``out_dir``.

    ``run_dir``: a distill run directory whose provenance (teacher, method, data, iterations,
    validation) goes into ``config.json``; implied when ``model`` is itself a run directory, whose
    ``student.safetensors`` is then the weights (unless ``weights`` is given).

    ``quantize="int8"`` (ONNX only) also writes ``model.int8.onnx`` (:mod:`dukd_cli.export.int8`),
    calibrated on patches of ``calib`` (folders of HR images) or else of the run's training data,
    and refuses the whole export when its hold-out loss exceeds ``max_drop`` dB.
    """
    fmts = parse_formats(formats)
    if "onnx" in fmts:
        require_onnx()
    dest = Path(out_dir).expanduser()
    name, scale, kwargs, weights, run = _source(model, scale, weights, dict(kwargs or {}), run_dir)
    if quantize is not None:
        _check_quantize(quantize, fmts, max_drop)
    calib_sources = _calib_sources(calib, run) if quantize else None
    spec = resolve_spec(name, scale, kwargs=kwargs, weights=weights)
    _check_destination(dest, spec, run, overwrite)

    log(
        f"building {spec.arch} x{spec.scale}"
        + (f" with weights {spec.weights}" if spec.weights else " (random weights)")
    )
    net = build(spec, device="cpu").float().eval()

    provenance = _provenance(spec, model, run)
    calib_data = None
    if calib_sources:
        from dukd_cli.export.calib import DEFAULT_CALIB_COUNT, calibration_patches

        calib_data = calibration_patches(calib_sources, spec.scale, count=calib_count or DEFAULT_CALIB_COUNT)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stale.sweep(dest.parent)  # what killed exports left here (their PID is in the name)
        tmp = Path(tempfile.mkdtemp(prefix=stale.temp_prefix(dest.name), dir=dest.parent))
    except OSError as exc:
        raise DukdError(f"cannot create {dest}: {exc.strerror or exc}") from None
    layout = spandrel_layout.layout_for(net, spec.arch)
    try:
        save_state_dict(layout.state_dict, tmp / EXPORT_WEIGHTS)  # the layout spandrel reads, where it can
        spandrel_info = _check_spandrel(net, layout, tmp / EXPORT_WEIGHTS, log)
        cfg = build_config(spec, net, provenance, None, spandrel_info)
        (tmp / EXPORT_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        _check_reload(net, tmp)
        onnx_info = None
        if "onnx" in fmts:
            log(f"exporting ONNX (opset {opset}) and checking it against PyTorch")
            onnx_info = export_onnx(net, tmp / ONNX_FILE, opset=opset, fixed_size=onnx_fixed_size, log=log)
            cfg = build_config(spec, net, provenance, onnx_info, spandrel_info)
            qat = run is not None and run.quantize == "int8"
            extra = _extra_onnx(net, spec.arch, tmp, onnx_info, fmts, calib_data, max_drop, log, qat)
            cfg["files"].update({k: v["file"] for k, v in extra.items()})
            cfg.update(extra)
            (tmp / EXPORT_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")
        display = spec.preset or spec.arch
        (tmp / README_FILE).write_text(model_card(cfg, display))
        os.chmod(tmp, 0o777 & ~_umask())
        for f in tmp.iterdir():  # some writers (safetensors) create 0600 files
            os.chmod(f, 0o666 & ~_umask())
        stale.pause("export")
        _replace_dir(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (DukdError, KeyboardInterrupt, SystemExit)):
            raise
        raise DukdError(f"export failed: {_first_line(exc)}") from exc
    files = sorted(p.name for p in dest.iterdir())
    return ExportResult(dest, cfg, files, onnx_info)


def _source(
    model: str,
    scale: int | None,
    weights: str | None,
    kwargs: dict[str, Any],
    run_dir: str | os.PathLike | None,
) -> tuple[str, int | None, dict[str, Any], str | None, RunInfo | None]:
    """What to build: a run directory's student (its name, scale, arguments and weights, which the
    options refine) or ``model`` as given; and the run whose provenance goes into ``config.json``."""
    if is_run_dir(model):
        run = read_run_dir(model)
        if not run.student_name:
            raise DukdError(
                f"{Path(model) / RUN_CONFIG} has no [student] name; cannot tell which network it holds"
            )
        if scale is not None and run.scale is not None and int(scale) != run.scale:
            raise DukdError(f"run {model} trained a x{run.scale} student, but --scale {scale} was given")
        scale = scale if scale is not None else run.scale
        return run.student_name, scale, {**run.args, **kwargs}, weights or str(run.weights), run
    if Path(model).is_dir() and (Path(model) / RUN_CONFIG).is_file():
        raise DukdError(
            f"{model} looks like a distill run directory but has no {RUN_WEIGHTS} (did the run finish?)"
        )
    run = read_run_dir(run_dir) if run_dir is not None else None
    if weights is None and not Path(model).is_dir():
        weights = declared_weights(model, scale, kwargs)
    return model, scale, kwargs, weights, run


def declared_weights(model: str, scale: int | None, kwargs: Mapping[str, Any]) -> str | None:
    """A preset's declared weights at ``scale`` (its file, or its source as ``resolve_spec(pretrained=True)``
    takes it), or None: an architecture, or a preset that declares none at that scale, is exported
    from its random initialisation unless weights are given."""
    from dukd_cli import registry
    from dukd_cli.models.factory import resolve_spec

    spec = resolve_spec(model, scale, kwargs=dict(kwargs), pretrained=False)
    preset = registry.get_preset(model) if spec.preset else None
    if preset is None or not preset.weights.get(spec.scale):
        return None
    declared = registry.source_of(preset.weights[spec.scale])
    return (declared.source or declared.filename) or None


def _check_destination(dest: Path, spec: ModelSpec, run: RunInfo | None, overwrite: bool) -> None:
    """``dest`` may be written: new (or ``overwrite``), a directory, neither the source nor the run."""
    if dest.exists() and not overwrite:
        raise DukdError(f"{dest} already exists; pass --overwrite to replace it")
    if dest.exists() and not dest.is_dir():
        raise DukdError(f"{dest} exists and is not a directory")
    if spec.directory and dest.resolve() == Path(spec.directory).resolve():
        raise DukdError(f"cannot export {spec.directory} onto itself; choose another -o")
    if run is not None and dest.resolve() == run.directory.resolve():
        raise DukdError("cannot export into the run directory itself; choose another -o")


def _provenance(spec: ModelSpec, model: str, run: RunInfo | None) -> dict[str, Any]:
    """``config.json``'s provenance: the weights' source, an exported source's own provenance
    (``exported_from``) and the distill run's record."""
    provenance: dict[str, Any] = {**weights_provenance(spec), "model": str(model)}
    if spec.directory:
        try:
            old = json.loads((Path(spec.directory) / EXPORT_CONFIG).read_text()).get("provenance") or {}
        except (OSError, json.JSONDecodeError):
            old = {}
        if old:
            provenance["exported_from"] = old
    if run is not None:
        provenance.update(run.provenance)
    return provenance


def _check_spandrel(
    net: torch.nn.Module, layout: spandrel_layout.Layout, path: Path, log: Log
) -> dict[str, Any]:
    """``config["spandrel"]``: the family spandrel reads the written file as (checked with spandrel
    where it is installed: a file it refuses or reads as another network is reported as not
    loadable), or why it cannot."""
    from dukd_cli.models import external

    if layout.architecture is None:
        return layout.to_config()
    if not external.available():
        log(f"spandrel is not installed here: the {layout.architecture} layout was written but not checked")
        return layout.to_config()
    log(f"checking model.safetensors with spandrel ({layout.architecture})")
    try:
        diff = spandrel_layout.verify(path, net)
    except DukdError as exc:
        return spandrel_layout.Layout(layout.state_dict, None, str(exc)).to_config()
    return layout.to_config(diff)


def _check_quantize(quantize: str, fmts: tuple[str, ...], max_drop: float | None) -> None:
    """Before any work: what --quantize, --format and --max-drop ask for is possible."""
    from dukd_cli.export.int8 import check_max_drop

    if str(quantize).lower() != "int8":
        raise DukdError(f"--quantize takes int8, not '{quantize}'")
    if "onnx" not in fmts:
        raise DukdError("--quantize int8 quantizes the ONNX model; add onnx to --format")
    if max_drop is not None:
        check_max_drop(float(max_drop))


def _calib_sources(calib: Iterable[str | os.PathLike] | None, run: RunInfo | None) -> list[str]:
    """Folders whose HR images calibrate int8: ``calib``, else the run's ``[data] paths``."""
    if calib:
        out = [str(c) for c in calib]
        for c in out:
            if c != "builtin" and not Path(c).expanduser().exists():
                raise DukdError(f"--calib {c}: no such folder")
        return out
    paths = ((run.provenance.get("data") or {}).get("paths") if run is not None else None) or []
    if not paths:
        raise DukdError(
            "--quantize int8 needs calibration images: pass --calib DIR (a folder of HR images) "
            "or export a distill run directory"
        )
    for c in paths:
        if c != "builtin" and not Path(c).expanduser().exists():
            raise DukdError(f"the run's training data {c} is not here; pass --calib DIR")
    return [str(c) for c in paths]


def _extra_onnx(
    net: torch.nn.Module,
    arch: str,
    tmp: Path,
    onnx_info: OnnxExport,
    fmts: tuple[str, ...],
    calib_data: CalibData | None,
    max_drop: float | None,
    log: Log,
    qat_trained: bool = False,
) -> dict[str, Any]:
    """The fp16 and int8 ONNX files beside ``model.onnx`` in ``tmp``: their config.json entries.
    ``qat_trained``: the weights come from a run that trained through simulated int8, whose biases
    were learnt with the rounded weights (no bias correction for the rounding then)."""
    out: dict[str, Any] = {}
    if "onnx-fp16" in fmts:
        from dukd_cli.export.fp16 import FP16_FILE, export_fp16

        log("converting ONNX to fp16 and checking it against PyTorch")
        from zoo.precision import fp16_verdict

        fp16 = export_fp16(net, tmp / ONNX_FILE, tmp / FP16_FILE, onnx_info.checked_shapes).to_config()
        verdict = fp16_verdict(arch)
        fp16["zoo_fp16_safe"] = (
            {"safe": verdict.safe, "evidence": verdict.evidence}
            if verdict
            else "not measured for this architecture"
        )
        out["onnx_fp16"] = fp16
    if calib_data is not None:
        from dukd_cli.export.int8 import DEFAULT_MAX_DROP, INT8_FILE, quantize_int8

        report = quantize_int8(
            tmp / ONNX_FILE,
            tmp / INT8_FILE,
            calib_data,
            max_drop=DEFAULT_MAX_DROP if max_drop is None else float(max_drop),
            fixed_input_size=onnx_info.fixed_input_size,
            correct_bias=not qat_trained,
            log=log,
        )
        out["onnx_int8"] = report.to_config()
    return out


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
