"""Resolving a distillation run before anything is trained: the device, the method class, the
student and teacher specs (nothing is downloaded), and building the frozen teacher and the student."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dukd_cli import registry
from dukd_cli.distill import recipes
from dukd_cli.distill.config import DistillConfig
from dukd_cli.distill.methods import UPDATES, Method, model_family
from dukd_cli.errors import DukdError, WeightsError
from dukd_cli.models.factory import build_with_report, instantiate, resolve_spec
from dukd_cli.models.spec import ModelSpec, is_model_dir

# --------------------------------------------------------------------------------------------
# Resolving models and the method
# --------------------------------------------------------------------------------------------


def select_device(name: str | None) -> torch.device:
    """``auto``: CUDA when available, else the CPU; otherwise the named device (checked)."""
    try:
        from dukd_cli.upscale.inference import select_device as shared
    except ImportError:
        shared = None
    if shared is not None:
        return shared(name or "auto")
    n = (name or "auto").lower()
    if n == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(n)
    except RuntimeError:
        raise DukdError(f"unknown device '{name}' (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DukdError(f"device '{name}' asked for, but CUDA is not available")
    return dev


def get_method_class(name: str) -> type[Method]:
    cls = registry.get_method(name)
    if not isinstance(cls, type) or not callable(getattr(cls, "losses", None)):
        raise DukdError(f"method '{name}' is not a distillation method class (it has no losses())")
    return cls


@dataclass
class Resolved:
    """A configuration with everything decided: model specs, the method class, its options."""

    cfg: DistillConfig
    student: ModelSpec
    teacher: ModelSpec | None  # the first teacher
    method_cls: type[Method]
    family: str | None
    teachers: list[ModelSpec] = field(default_factory=list)  # every teacher, the first included


def _meta_model(spec: ModelSpec) -> nn.Module | None:
    try:
        with torch.device("meta"):
            return instantiate(spec.arch, registry.get_architecture(spec.arch), spec.scale, spec.kwargs)
    except DukdError:
        raise
    except Exception:
        return None


def _is_checkpoint(name: str) -> bool:
    from dukd_cli.models.checkpoint import is_checkpoint_source

    return is_checkpoint_source(name)


def resolve(
    cfg: DistillConfig,
    method_cls: type[Method] | None = None,
    *,
    plan: bool = False,
) -> Resolved:
    """Decide the scale, model specs and method options of ``cfg`` (nothing is downloaded or trained).

    ``plan`` (``--dry-run``): a teacher without weights is no error; its spec keeps ``weights=None``.
    """
    cfg = cfg.copy()
    if cfg.method.update not in UPDATES:
        raise DukdError(f"--update must be one of {', '.join(UPDATES)}, got '{cfg.method.update}'")
    method_cls = method_cls or get_method_class(cfg.method.name)
    recipes.apply_recipe(cfg, getattr(method_cls, "options", {}))
    if not cfg.student.name:
        raise DukdError(
            "no student given: pass --student NAME (a preset, an architecture or an exported model)"
        )
    scale = cfg.student.scale
    if (
        scale is None
        and cfg.teacher.name
        and (is_model_dir(cfg.teacher.name) or _is_checkpoint(cfg.teacher.name))
    ):
        scale = resolve_spec(cfg.teacher.name, None).scale  # a teacher that knows its scale sets it
    if scale is None and is_model_dir(cfg.student.name):
        scale = resolve_spec(cfg.student.name, None).scale
    if scale is None:  # a one-scale preset (dukd-student-x4, dukd-teacher-x4) knows its scale
        scale = _only_scale(cfg.student.name) or _only_scale(cfg.teacher.name)
    if scale is None:
        raise DukdError("no scale given: pass --scale (2, 3, 4, ...)")
    from dukd_cli.distill import qat

    qat.resolve_config(cfg, scale, method_cls.needs_teacher)  # --quantize: fp32 start, self-teacher
    s_spec = resolve_spec(cfg.student.name, scale, kwargs=cfg.student.args, weights=cfg.student.weights)
    t_spec = None
    t_specs: list[ModelSpec] = []
    if cfg.teacher.extra:
        from dukd_cli.distill.teachers import check_mix

        cfg.teacher.mix = check_mix(cfg.teacher.mix)
        if not getattr(method_cls, "multi_teacher", False):
            raise DukdError(
                f"method '{cfg.method.name}' takes one teacher; several (--teacher repeated) work with kd and dukd"
            )
    elif cfg.teacher.mix is not None:
        raise DukdError("--teacher-mix combines several teachers; give --teacher more than once")
    if method_cls.needs_teacher:
        if not cfg.teacher.name:
            raise DukdError(f"method '{cfg.method.name}' needs a teacher: pass --teacher NAME")
        t_spec = _teacher_spec(cfg.teacher.name, cfg.teacher.weights, cfg.teacher.args, scale, s_spec, plan)
        cfg.teacher.weights = t_spec.weights  # the resolved config records the source actually used
        t_specs = [t_spec]
        for k, more in enumerate(cfg.teacher.extra, start=2):
            if not isinstance(more, dict) or not more.get("name"):
                raise DukdError(f"[teacher] extra entry {k - 1} must be a table with a name")
            spec = _teacher_spec(
                str(more["name"]), more.get("weights"), dict(more.get("args") or {}), scale, s_spec, plan, k
            )
            more["weights"] = spec.weights
            t_specs.append(spec)
    cfg.student.scale = s_spec.scale
    family = model_family(_meta_model(s_spec), s_spec.arch)  # built on the meta device: nothing allocated
    cfg.method.options = method_cls.resolve_options(cfg.method.options, family=family, scale=s_spec.scale)
    t = cfg.train
    if t.iters < 1 or t.batch_size < 1 or t.patch_size < 1:
        raise DukdError("--iters, --batch-size and --patch-size must be positive")
    if not 0.0 <= t.ema_decay < 1.0:
        raise DukdError(f"--ema-decay must be in [0, 1), got {t.ema_decay}")
    if t.precision not in ("auto", "bf16", "fp32"):
        raise DukdError(f"--precision must be auto, bf16 or fp32, got '{t.precision}'")
    t.milestones = sorted(int(m) for m in t.milestones)
    trained_spec = getattr(method_cls, "trained_spec", None)
    if trained_spec is not None:  # a method that trains a larger network checks the student now (csd)
        trained_spec(s_spec, cfg.method.options)
    return Resolved(cfg, s_spec, t_spec, method_cls, family, t_specs)


def _teacher_spec(
    name: str,
    weights: str | None,
    args: dict[str, Any],
    scale: int,
    s_spec: ModelSpec,
    plan: bool,
    number: int = 1,
) -> ModelSpec:
    """One teacher's spec: its scale checked against the student's, its weights decided."""
    which = "the teacher" if number == 1 else f"teacher {number}"
    t_scale = None if is_model_dir(name) else scale
    t_spec = resolve_spec(name, t_scale, kwargs=args, weights=weights)
    if t_spec.scale != s_spec.scale:
        raise DukdError(
            f"{which} is x{t_spec.scale} but the student is x{s_spec.scale}; distillation needs both at one scale"
        )
    if t_spec.weights is None:
        preset = registry.get_preset(name)
        if preset is not None and preset.weights.get(scale):
            # the preset's declared source, with the constructor arguments that file needs
            t_spec = resolve_spec(name, t_scale, kwargs=args, pretrained=True)
        elif not plan:  # a dry run instead says that none is declared
            what = (
                f"preset '{name}' declares no weights at x{scale}"
                if preset
                else f"'{name}' has no default weights"
            )
            raise DukdError(f"{which} needs trained weights: {what}; pass them with --teacher-weights SOURCE")
    return t_spec


def build_teachers(specs: list[ModelSpec], mix: str | None, device: torch.device) -> nn.Module:
    """One frozen teacher, or several combined in a :class:`~dukd_cli.distill.teachers.TeacherPanel`."""
    if len(specs) == 1:
        return build_teacher(specs[0], device)
    from dukd_cli.distill.teachers import TeacherPanel

    return TeacherPanel([build_teacher(s, device) for s in specs], mix or "mean").eval().requires_grad_(False)


def _only_scale(name: str | None) -> int | None:
    """The scale of a preset that exists at one scale only; else None."""
    preset = registry.get_preset(str(name)) if name else None
    return preset.scales[0] if preset is not None and len(preset.scales) == 1 else None


def build_teacher(spec: ModelSpec, device: torch.device) -> nn.Module:
    """Build and freeze the teacher: eval mode, no gradients (it also runs under no_grad)."""
    from dukd_cli.models import mismatch, options

    try:
        with mismatch.hints(options.TEACHER):
            model, _ = build_with_report(spec, strict=True)
    except mismatch.ExplainedMismatch:
        raise
    except WeightsError as exc:
        first = str(exc).strip().splitlines()[0]
        advice = (
            "" if "--teacher-weights" in first else ". Pass a local checkpoint with --teacher-weights PATH"
        )
        raise DukdError(
            f"cannot load the teacher's weights ({spec.weights}): {first.rstrip('.')}{advice}"
        ) from None
    model.eval().requires_grad_(False)
    return model.to(device)


def build_student(spec: ModelSpec, strict: bool, device: torch.device) -> tuple[nn.Module, str | None]:
    from dukd_cli.models import mismatch, options

    with mismatch.hints(options.STUDENT):
        model, report = build_with_report(spec, strict=strict)
    note = None
    if report is not None and not report.ok:
        note = f"student initialised non-strictly from {spec.weights}: {len(report.loaded)} tensors loaded, {report.summary()}"
    return model.to(device).train(), note


def parameter_counts(res: Resolved) -> dict[str, int | None]:
    """Teacher and student parameter counts (built on the meta device: nothing is allocated)."""
    from dukd_cli.models.factory import count_parameters_of

    out: dict[str, int | None] = {
        "student": count_parameters_of(res.student.arch, res.student.scale, res.student.kwargs)
    }
    out["teacher"] = (
        count_parameters_of(res.teacher.arch, res.teacher.scale, res.teacher.kwargs)
        if res.teacher is not None
        else None
    )
    for k, spec in enumerate(res.teachers[1:], start=2):
        out[f"teacher {k}"] = count_parameters_of(spec.arch, spec.scale, spec.kwargs)
    return out
