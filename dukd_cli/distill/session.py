"""A training session: everything a resolved configuration builds before the first iteration.

:func:`build_session` takes a :class:`~dukd_cli.distill.resolve.Resolved` (nothing is resolved
again here) and builds, in this order: the device and the process group (DDP), the student (or the
larger network a method trains, csd), fake-quant layers (``--quantize``), the frozen teacher(s),
the channels-last layout, the DDP wrapper, the EMA copy, ``torch.compile``, the optimiser, the
seeded generators and the method. The order is part of the reproducibility contract: the student's
initial weights are drawn right after ``torch.manual_seed(seed)``, and the per-rank streams are
seeded after every model is built.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dukd_cli.distill import ddp, qat
from dukd_cli.distill.config import DistillConfig
from dukd_cli.distill.ema import Ema
from dukd_cli.distill.methods import Method, MethodContext
from dukd_cli.distill.resolve import Resolved, build_student, build_teachers, select_device
from dukd_cli.distill.schedule import derive_seed
from dukd_cli.errors import DukdError
from dukd_cli.models.spec import ModelSpec


@dataclass
class Session:
    """The built models, optimiser and method of one run (see :func:`build_session`)."""

    resolved: Resolved
    dist: ddp.DistInfo
    device: torch.device
    student_module: nn.Module  # the network trained, unwrapped (checkpoints, EMA, optimiser)
    student: nn.Module  # what the method calls: the DDP wrapper under several processes
    teacher: nn.Module | None
    ema: Ema
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the method's, the same on every rank
    method: Method
    method_modules: nn.Module | None  # a method's own trainable modules (feature adapters)
    clip_params: list[nn.Parameter]  # what --grad-clip clips: the student's and the method's
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]  # the teacher's and the losses'
    notes: list[str] = field(default_factory=list)

    @property
    def cfg(self) -> DistillConfig:
        return self.resolved.cfg

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def to_device(self, lr_u8: torch.Tensor, hr_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 patches from the loader -> float [0, 1] on the training device (converted there)."""
        lr = lr_u8.to(self.device, non_blocking=True).float().div_(255.0)
        hr = hr_u8.to(self.device, non_blocking=True).float().div_(255.0)
        if self.memory_format is torch.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
            hr = hr.contiguous(memory_format=torch.channels_last)
        return lr, hr

    def shipped(self) -> nn.Module:
        """The student the run delivers from the EMA (the EMA itself unless the method ships a part)."""
        shipped = getattr(self.method, "shipped", None)
        return shipped(self.ema.model) if shipped is not None else self.ema.model

    def shipped_state(self) -> dict[str, torch.Tensor] | None:
        """student.safetensors' tensors when they are not the EMA's own (``None``: the EMA's)."""
        model = self.shipped()
        return None if model is self.ema.model else model.state_dict()

    def drop_ddp(self) -> None:
        """Let go of the DDP wrapper (it holds the process group), so that ``ddp.shutdown()`` frees
        the group (and joins gloo's threads) while the interpreter is alive, not during its
        finalisation, where gloo aborts the process."""
        self.student = self.student_module
        self.method.student = self.student_module


def _autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on the training device, or a no-op in fp32."""
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _start_device(name: str | None) -> tuple[torch.device, ddp.DistInfo]:
    dev = select_device(name)
    dist = ddp.init(dev.type)
    if dist.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev, dist


def _trained_spec(res: Resolved, resume: bool) -> ModelSpec:
    """The network trained: the student, or a larger one the method ships part of (csd)."""
    trained_spec = getattr(res.method_cls, "trained_spec", None)
    spec = trained_spec(res.student, res.cfg.method.options) if trained_spec else res.student
    if resume:  # the saved state replaces the initial weights: do not read them again
        spec = ModelSpec(**{**spec.__dict__, "weights": None})
    return spec


def check_batch(cfg: DistillConfig, student: nn.Module, teacher: nn.Module | None, dev: torch.device) -> None:
    """Refuse (one line) a batch whose patches and activations cannot fit in the device's memory."""
    from dukd_cli.models.sizeguard import check_batch as check
    from dukd_cli.upscale.inference import bytes_per_input_pixel

    t = cfg.train
    per_pixel = bytes_per_input_pixel(student)
    if teacher is not None:
        per_pixel = max(per_pixel, bytes_per_input_pixel(teacher))  # its forward: no graph kept
    check(int(t.batch_size), int(t.patch_size), int(cfg.student.scale), per_pixel, dev)


def _models(
    res: Resolved, dev: torch.device, resume: bool, notes: list[str]
) -> tuple[nn.Module, nn.Module | None]:
    """The student (seeded initial weights) and the frozen teacher(s), in the layout trained."""
    cfg = res.cfg
    torch.manual_seed(int(cfg.train.seed))  # identical initial weights on every rank
    student, note = build_student(_trained_spec(res, resume), cfg.student.strict, dev)
    if note:
        notes.append(note)
    if cfg.train.quantize:  # before the EMA copy and the optimiser: same parameters, fake-quant layers
        qat.prepare(student)
    teacher = build_teachers(res.teachers, cfg.teacher.mix, dev) if res.teacher is not None else None
    check_batch(cfg, student, teacher, dev)  # before the data is prepared and anything is written
    if teacher is not None and not cfg.train.eval_teacher:
        teacher.train()  # as released (still frozen, still under no_grad: no graph, same numbers)
    if cfg.train.channels_last:  # before the optimiser and the EMA copy: they follow the parameters' layout
        student.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    return student, teacher


def _compile(
    cfg: DistillConfig, student: nn.Module, teacher: nn.Module | None, fmt: torch.memory_format
) -> None:
    """``--compile``: the student and the teacher compiled in place (after the EMA copy, so the
    EMA, the optimiser and checkpoints keep using the same, uncompiled parameters)."""
    if not cfg.train.compile:
        return
    from dukd_cli.distill import fast

    fast.compile_module(student, memory_format=fmt)
    if teacher is not None:
        fast.compile_module(teacher, memory_format=fmt)


def _seed_streams(seed: int, dist: ddp.DistInfo, dev: torch.device) -> torch.Generator:
    """The method's generator is the same on every rank (methods draw for the global batch and keep
    their slice); the global RNGs (dropout, drop-path) are per rank."""
    generator = torch.Generator().manual_seed(derive_seed(seed, 2))
    torch.manual_seed(derive_seed(seed, 3, dist.rank))
    np.random.seed(derive_seed(seed, 4, dist.rank))
    random.seed(derive_seed(seed, 5, dist.rank))
    if dev.type == "cuda":
        torch.cuda.manual_seed(derive_seed(seed, 6, dist.rank))
    return generator


def _method_modules(method: Method, dist: ddp.DistInfo, name: str) -> nn.Module | None:
    """A method's own trainable modules (feature adapters): they join the optimiser, the gradient
    clip and the checkpoint (state.pt ``method``); they are not part of the exported student."""
    extra = method.trainable() if callable(getattr(method, "trainable", None)) else None
    if extra is not None and list(extra.parameters()) and dist.enabled:
        raise DukdError(
            f"method '{name}' trains feature adapters (teacher and student widths differ), "
            "which do not run under several processes yet; run on one process or match the widths"
        )
    return extra


def build_session(res: Resolved, *, resume: bool = False) -> Session:
    """Build a run's device, models, EMA, optimiser and method from its resolved configuration."""
    cfg = res.cfg
    t = cfg.train
    dev, dist = _start_device(t.device)
    notes: list[str] = []
    student, teacher = _models(res, dev, resume, notes)
    prec = t.precision  # decided by the recipe when not given
    amp = torch.bfloat16 if (prec == "bf16" or (prec == "auto" and dev.type == "cuda")) else None
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    wrapped: nn.Module = student
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(student, device_ids=[dev.index] if dev.type == "cuda" else None)
    ema = Ema(student)
    _compile(cfg, student, teacher, fmt)
    # The fused CUDA kernel is the fastest Adam there; the CPU keeps the default (bit-reproducible).
    optimizer = torch.optim.Adam(
        student.parameters(),
        lr=t.lr,
        betas=tuple(t.betas),
        eps=t.eps,
        fused=True if dev.type == "cuda" else None,
    )
    generator = _seed_streams(int(t.seed), dist, dev)
    autocast = functools.partial(_autocast, dev.type, amp)
    ctx = MethodContext(
        device=dev,
        scale=int(cfg.student.scale),
        update=cfg.method.update,
        generator=generator,
        teacher_autocast=autocast,
        world=dist.world,
        rank=dist.rank,
    )
    method = res.method_cls(wrapped, teacher, cfg.method.options, ctx, student_module=student)
    extra = _method_modules(method, dist, cfg.method.name)
    clip_params = list(student.parameters())
    if extra is not None and list(extra.parameters()):
        optimizer.add_param_group({"params": list(extra.parameters())})
        clip_params += list(extra.parameters())
    session = Session(
        resolved=res,
        dist=dist,
        device=dev,
        student_module=student,
        student=wrapped,
        teacher=teacher,
        ema=ema,
        optimizer=optimizer,
        generator=generator,
        method=method,
        method_modules=extra,
        clip_params=clip_params,
        amp_dtype=amp,
        memory_format=fmt,
        autocast=autocast,
        notes=notes,
    )
    decided: Callable[[], dict[str, Any]] | None = getattr(method, "decided_options", None)
    if callable(decided):  # e.g. the feature positions used
        cfg.method.options.update(decided())
    return session
