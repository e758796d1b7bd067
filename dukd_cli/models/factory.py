"""Build models by name: presets, registry architectures, and exported model directories.

This is the one place that turns what a user types (``--model edsr-s --arg n_feats=32 --weights
X``) into a ready ``torch.nn.Module``. Every command and the Python API go through it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from dukd_cli import registry
from dukd_cli.errors import DukdError, StateDictMismatchError
from dukd_cli.models.spec import ModelSpec, _check_kwargs, factory_arguments, is_export_dir
from dukd_cli.models.weights import LoadReport, load_weights
from dukd_cli.rundir import EXPORT_CONFIG, EXPORT_WEIGHTS, RUN_CONFIG, RUN_WEIGHTS, is_run_dir
from dukd_cli.sources.superimage import expand_repo, is_repo_source


def resolve_run_spec(
    directory: str | os.PathLike,
    scale: int | None = None,
    *,
    kwargs: Mapping[str, Any] | None = None,
    weights: str | None = None,
) -> ModelSpec:
    """The student a distill run directory trained: its ``config.toml`` [student] table (name, scale,
    constructor arguments) with ``student.safetensors`` as the weights (unless ``weights`` is given)."""
    from dukd_cli.rundir import load_toml

    d = Path(directory)
    table = load_toml(d / RUN_CONFIG).get("student")
    student = dict(table) if isinstance(table, Mapping) else {}
    name, run_scale = student.get("name"), student.get("scale")
    if not name or not isinstance(run_scale, int):
        raise DukdError(f"{d / RUN_CONFIG} has no [student] name and scale; not a complete dukd distill run")
    if scale is not None and int(scale) != run_scale:
        raise DukdError(f"run {d} trained a x{run_scale} student, but x{scale} was asked for")
    if weights is None:
        if not (d / RUN_WEIGHTS).is_file():
            raise DukdError(f"run {d} has no {RUN_WEIGHTS} yet (a run writes it at its first checkpoint)")
        weights = str(d / RUN_WEIGHTS)
    args = student.get("args")
    merged = {**(dict(args) if isinstance(args, Mapping) else {}), **dict(kwargs or {})}
    merged = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}
    inner = resolve_spec(str(name), run_scale, kwargs=merged, weights=weights)
    return ModelSpec(
        str(d),
        inner.arch,
        inner.scale,
        inner.kwargs,
        inner.weights,
        inner.preset,
        inner.provider,
        inner.directory,
    )


def _read_export_config(directory: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((directory / EXPORT_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DukdError(f"cannot read {directory / EXPORT_CONFIG}: {exc}") from None
    for key in ("architecture", "scale"):
        if key not in cfg:
            raise DukdError(f"{directory / EXPORT_CONFIG} lacks '{key}'; not a dukd export directory")
    return cfg


def resolve_spec(
    name: str,
    scale: int | None = None,
    *,
    kwargs: Mapping[str, Any] | None = None,
    weights: str | None = None,
    pretrained: bool = False,
) -> ModelSpec:
    """Resolve a model name into a :class:`ModelSpec` without building anything.

    Lookup order: an exported model directory (holding ``config.json``), a distill run directory
    (``config.toml``; see :func:`resolve_run_spec`), a checkpoint file or ``hf://`` / ``https://``
    file (its architecture detected from the file: :mod:`dukd_cli.models.checkpoint`), a preset, an
    architecture.
    ``pretrained=True`` with no explicit ``weights`` takes the preset's declared source for the scale
    (an error where there is none); an explicit ``weights`` always wins.
    """
    kwargs = dict(kwargs or {})
    repo_arch = weights_given = None
    if weights is not None and is_repo_source(weights):
        # A super-image repository by id: its config.json gives the network and its semantics.
        # The spec keeps the repository id (re-read on --resume); weights.resolve picks the scale's file.
        weights_given = weights
        _file, repo_arch, scale, repo_kwargs = expand_repo(weights, scale)
        kwargs = {**repo_kwargs, **kwargs}
    if is_export_dir(name):
        directory = Path(name)
        cfg = _read_export_config(directory)
        exp_scale = int(cfg["scale"])
        if scale is not None and int(scale) != exp_scale:
            raise DukdError(f"model directory {name} is x{exp_scale}, but x{scale} was asked for")
        merged = {**cfg.get("arguments", {}), **kwargs}
        arch = cfg["architecture"]
        w = weights or (str(directory / EXPORT_WEIGHTS) if (directory / EXPORT_WEIGHTS).is_file() else None)
        if w is None:
            raise DukdError(f"model directory {name} has no {EXPORT_WEIGHTS}")
        if arch == "spandrel":  # its network comes from the weights: the directory's own file
            merged["source"] = w
        entry = registry.entry(registry.ARCH_GROUP, arch)
        return ModelSpec(
            str(name), arch, exp_scale, merged, w, None, entry.provider if entry else "?", str(directory)
        )
    if is_run_dir(name):
        return resolve_run_spec(name, scale, kwargs=kwargs, weights=weights)

    checkpoint = _checkpoint_spec(name, scale, kwargs, weights)
    if checkpoint is not None:
        return checkpoint

    if scale is None:
        only = registry.get_preset(str(name))
        if (
            only is not None and len(only.scales) == 1
        ):  # a one-scale preset (e.g. dukd-student-x4) knows its scale
            scale = only.scales[0]
        elif only is None and registry.entry(registry.ARCH_GROUP, str(name)) is None:
            _unknown(str(name))
        else:
            raise DukdError(f"a scale is needed to build '{name}' (e.g. --scale 4)")
    scale = int(scale)
    preset = registry.get_preset(name)
    if preset is not None:
        if scale not in preset.scales:
            raise DukdError(f"preset '{name}' exists at x{', x'.join(map(str, preset.scales))}, not x{scale}")
        merged = {**dict(preset.kwargs), **kwargs}
        w = weights
        declared = preset.weights.get(scale)
        ws = registry.source_of(declared) if declared else None
        declared_ref = (ws.source or ws.filename) if ws is not None else None  # no source: its file name
        if w is None and pretrained:
            if not declared_ref:
                from dukd_cli.models.options import weights_advice

                raise DukdError(
                    f"preset '{name}' declares no pretrained weights at x{scale}; {weights_advice('SOURCE')}"
                )
            w = declared_ref
        # Only a request for the declared file attaches it (its source, its file name or the preset's
        # own name); no weights asked (w None) is a random initialisation, even where the declared
        # file has no published name (ws.filename None).
        if ws is not None and declared_ref and w is not None and w in (ws.source, ws.filename, name):
            # The declared file's own semantics (e.g. input range) go with it, whoever names it.
            merged = {**dict(preset.kwargs), **dict(ws.kwargs), **kwargs}
            w = declared_ref
        if repo_arch is not None and preset.arch != repo_arch:
            raise DukdError(
                f"{weights_given} holds a {repo_arch} model, but preset '{name}' is {preset.arch}"
            )
        entry = registry.entry(registry.PRESET_GROUP, name)
        return ModelSpec(name, preset.arch, scale, merged, w, name, entry.provider if entry else "?")

    if registry.entry(registry.ARCH_GROUP, name) is None:
        _unknown(name)
    if weights is None and pretrained:
        from dukd_cli.models.options import weights_advice

        raise DukdError(f"'{name}' is an architecture with no default weights; {weights_advice('SOURCE')}")
    if repo_arch is not None and name != repo_arch:
        raise DukdError(f"{weights_given} holds a {repo_arch} model, not '{name}'")
    entry = registry.entry(registry.ARCH_GROUP, name)
    return ModelSpec(name, name, scale, kwargs, weights, None, entry.provider if entry else "?")


def _checkpoint_spec(
    name: str, scale: int | None, kwargs: Mapping[str, Any], weights: str | None
) -> ModelSpec | None:
    """A checkpoint file (or hf:// file) named as the model: its architecture detected from the file."""
    from dukd_cli.models.checkpoint import is_checkpoint_source, resolve_checkpoint_spec

    if not is_checkpoint_source(name):
        return None
    return resolve_checkpoint_spec(str(name), scale, kwargs, weights)


def _unknown(name: str) -> None:
    """Raise the error for a name that is no model: a folder that is neither kind of model directory,
    or the architecture lookup's message (with suggestions)."""
    if Path(name).is_dir():
        raise DukdError(
            f"{name} is a folder but neither an exported model ({EXPORT_CONFIG}) nor a distill run ({RUN_CONFIG})"
        )
    missing = _missing_file_message(name)
    if missing:
        raise DukdError(missing)
    registry.get_architecture(name)


def _missing_file_message(name: str) -> str | None:
    """For a name that is a path (a separator, or a checkpoint's suffix) to nothing: the line that
    says so (with the file of that name in another letter case, when its folder has one); else None."""
    from dukd_cli.models.checkpoint import CHECKPOINT_SUFFIXES

    p = Path(name).expanduser()
    looks_like_path = any(sep in name for sep in ("/", os.sep)) or p.suffix.lower() in CHECKPOINT_SUFFIXES
    if not looks_like_path or p.exists() or "://" in name:
        return None
    folder = p.parent
    if not folder.is_dir():
        return f"{name}: no such file (its folder {folder} does not exist either)"
    try:
        near = [c.name for c in folder.iterdir() if c.name.lower() == p.name.lower()]
    except OSError:
        near = []
    hint = f"; did you mean {folder / near[0]}?" if near else ""
    return f"{name}: no such file{hint}"


def build(
    spec: ModelSpec, *, strict: bool = True, device: str | torch.device | None = None
) -> torch.nn.Module:
    """Instantiate ``spec`` and load its weights (if any)."""
    model, _ = build_with_report(spec, strict=strict, device=device)
    return model


def build_with_report(
    spec: ModelSpec, *, strict: bool = True, device: str | torch.device | None = None
) -> tuple[torch.nn.Module, LoadReport | None]:
    factory = registry.get_architecture(spec.arch)
    _check_kwargs(spec.arch, factory, spec.kwargs)
    model = instantiate(spec.arch, factory, spec.scale, spec.kwargs)
    report = None
    if spec.weights:
        try:
            report = load_weights(model, spec.weights, strict=strict, scale=spec.scale)
        except StateDictMismatchError as exc:
            from dukd_cli.models.mismatch import explain

            raise explain(exc, spec) from None
    model.eval()
    if device is not None:
        model.to(device)
    return model, report


def instantiate(arch: str, factory: Any, scale: int, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """Call an architecture factory, turning its failures into one readable line; a network too large
    for this machine is refused while it is built, before its memory is taken (:mod:`dukd_cli.models.sizeguard`)."""
    from dukd_cli.models.sizeguard import BuildBudget

    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        with BuildBudget(f"'{arch}' at x{scale}" + (f" with {args}" if args else "")):
            model = factory(scale, **kwargs)
    except DukdError:
        raise
    except (TypeError, ValueError, AssertionError, NotImplementedError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DukdError(f"cannot build '{arch}' at x{scale} with {dict(kwargs)}: {msg}") from None
    if not isinstance(model, torch.nn.Module):
        raise DukdError(f"architecture '{arch}' returned {type(model).__name__}, not a torch.nn.Module")
    if getattr(model, "scale", None) is None:
        model.scale = int(scale)
    elif int(model.scale) != int(scale):
        raise DukdError(f"architecture '{arch}' built a x{model.scale} model when x{scale} was asked for")
    return model


def create_model(
    name: str,
    scale: int | None = None,
    *,
    weights: str | None = None,
    pretrained: bool = False,
    strict: bool = True,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build a model by name, timm-style: ``create_model("edsr-s", 4, weights="student.safetensors")``."""
    spec = resolve_spec(name, scale, kwargs=kwargs, weights=weights, pretrained=pretrained)
    return build(spec, strict=strict, device=device)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded), as SR papers count them."""
    return sum(p.numel() for p in model.parameters())


def count_parameters_of(arch: str, scale: int, kwargs: Mapping[str, Any]) -> int:
    """Parameter count without allocating memory (meta device), falling back to the CPU."""
    factory = registry.get_architecture(arch)
    _check_kwargs(arch, factory, kwargs)
    try:
        with torch.device("meta"):
            model = instantiate(arch, factory, scale, kwargs)
    except DukdError:
        raise
    except Exception:
        model = instantiate(arch, factory, scale, kwargs)
    return count_parameters(model)


def supported_scales(
    arch: str, kwargs: Mapping[str, Any] | None = None, candidates: Iterable[int] = (2, 3, 4, 8)
) -> tuple[int, ...]:
    """Scales an architecture builds at (probed on the meta device)."""
    factory = registry.get_architecture(arch)
    ok = []
    for s in candidates:
        try:
            with torch.device("meta"):
                instantiate(arch, factory, s, kwargs or {})
            ok.append(s)
        except Exception:
            try:
                instantiate(arch, factory, s, kwargs or {})
                ok.append(s)
            except Exception:
                pass
    return tuple(ok)


def describe(name: str, scale: int, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything `dukd zoo info` prints, as plain data."""
    spec = resolve_spec(name, scale, kwargs=kwargs)
    factory = registry.get_architecture(spec.arch)
    defaults, _ = factory_arguments(factory)
    arguments = {**defaults, **spec.kwargs}
    params = count_parameters_of(spec.arch, spec.scale, spec.kwargs)
    preset = registry.get_preset(name) if spec.preset else None
    arch_entry = registry.entry(registry.ARCH_GROUP, spec.arch)
    info: dict[str, Any] = {
        "name": name,
        "kind": "preset" if preset else ("export" if spec.directory else "architecture"),
        "architecture": spec.arch,
        "provider": spec.provider,
        "architecture_provider": arch_entry.provider if arch_entry else "?",
        "factory": arch_entry.value if arch_entry else "?",
        "scale": spec.scale,
        "arguments": _jsonable(arguments),
        "params": int(params),
        "params_m": f"{params / 1e6:.2f} M",
    }
    if preset is not None:
        info["scales"] = list(preset.scales)
        info["weights"] = {}
        for s, w in sorted(preset.weights.items()):
            ws = registry.source_of(w)
            info["weights"][f"x{s}"] = {
                "source": ws.source,
                "arguments": _jsonable(dict(ws.kwargs)),
                "verified": ws.verified,
                **({"notes": ws.notes} if ws.notes else {}),
                **_file_info(ws),
            }
        info["description"] = preset.description
        if preset.notes:
            info["notes"] = preset.notes
    elif spec.directory:
        info["weights"] = {f"x{spec.scale}": spec.weights}
    elif spec.detected is not None:
        info["kind"] = "checkpoint"
        info["weights"] = {f"x{spec.scale}": spec.weights}
        info["detected"] = _jsonable(spec.detected)
    else:
        info["weights"] = {}
    return info


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _file_info(ws: registry.WeightSource) -> dict[str, Any]:
    """What `dukd zoo info` shows of a declared file beyond its first source (only what is known)."""
    out: dict[str, Any] = {}
    for key in ("filename", "sha256", "published_by"):
        if getattr(ws, key):
            out[key] = getattr(ws, key)
    if ws.mirrors:
        out["mirrors"] = list(ws.mirrors)
    if ws.published:
        out["published"] = {b: list(v) for b, v in ws.published.items()}
    if ws.alternatives:
        out["alternatives"] = [
            {"source": a.source, "notes": a.notes, "arguments": _jsonable(dict(a.kwargs))}
            for a in ws.alternatives
        ]
    return out
