"""The distillation trainer: resumable, mixed-precision, DDP-ready.

One iteration: a batch of LR/HR patches (uint8, made by worker processes) moves to the device and
becomes float; the method yields loss groups; the trainer runs backward and the optimiser step(s)
(``--update``), updates the EMA of the student, and, at their intervals, logs, validates (the EMA
weights, through the shared evaluator) and checkpoints.

Run directory (``--out``)::

    config.toml                 the resolved configuration (what --resume reads back)
    state.pt                    full training state: student, EMA, optimiser, RNG states (torch, CUDA,
                                numpy, python, the method's generator; per rank), iteration, best PSNR
    student.safetensors         EMA weights of the student (the deliverable; updated at every checkpoint)
    student_best.safetensors    EMA weights at the best validation PSNR
    metrics.jsonl               one JSON object per log step (iteration, losses, lr, it/s, validation)

Every file is written to a temporary name and renamed; state.pt and student.safetensors form one
checkpoint committed by the rename of state.pt (see :mod:`dukd_cli.distill.checkpoint`). Ctrl-C and
SIGTERM stop after the current iteration and save. The learning-rate schedule is a pure
function of the iteration (``lr * gamma ** #milestones passed``), so it needs no saved state.
On the CPU with a fixed seed a run resumed at iteration K ends bit-identical to an uninterrupted
run (the data stream is a function of the iteration; see :mod:`dukd_cli.distill.data`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape

from dukd_cli.distill import checkpoint as ckpt
from dukd_cli.distill import config as cfgmod
from dukd_cli.distill import data as datamod
from dukd_cli.distill import ddp, qat, runlog
from dukd_cli.distill.checkpoint import STATE_FORMAT, STATE_VERSION, save_safetensors
from dukd_cli.distill.config import DistillConfig
from dukd_cli.distill.display import Display
from dukd_cli.distill.methods import Batch, Method, MethodContext
from dukd_cli.distill.resolve import (
    build_student,
    build_teachers,
    resolve,
    select_device,
)
from dukd_cli.distill.schedule import derive_seed, ema_decay_at, lr_at
from dukd_cli.errors import DukdError
from dukd_cli.models.spec import ModelSpec
from dukd_cli.rundir import RunPaths
from dukd_cli.runtime import threads
from dukd_cli.runtime.fsutil import atomic_write_text, check_writable_dir
from dukd_cli.runtime.runlock import RunLock

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "FitResult",
    "NonFiniteLossError",
    "RunPaths",
    "Trainer",
    "resolve",
    "save_safetensors",
]


class NonFiniteLossError(DukdError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    run_dir: Path
    iteration: int
    interrupted: bool = False
    best_psnr: float | None = None
    last_val: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    main: bool = True  # rank 0 (the process that reports)
    signal: int | None = None  # the signal that stopped the run (SIGINT, SIGTERM), if any

    @property
    def exit_code(self) -> int:
        """What the CLI exits with: 0 when the run completed, else 128 + the signal (130, 143)."""
        return 0 if not self.interrupted else 128 + int(self.signal or signal.SIGINT)


Callback = Callable[["Trainer", int], None]


class Trainer:
    """Distil a student from a teacher as configured.

    ``callbacks`` run after every completed iteration (``cb(trainer, iteration)``); raising
    ``KeyboardInterrupt`` there behaves like Ctrl-C (checkpoint, clean exit). SIGTERM (what
    schedulers send before killing) is handled like Ctrl-C.
    """

    def __init__(
        self,
        cfg: DistillConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        overrides: dict[str, Any] | None = None,
        method_cls: type[Method] | None = None,
        callbacks: Sequence[Callback] = (),
        display: Display | None = None,
    ) -> None:
        self.paths = RunPaths(Path(run_dir))
        self.resume = resume
        self.callbacks = list(callbacks)
        self.method_cls_override = method_cls
        self.notes: list[str] = []
        self.clock = time.monotonic  # --save-every-min's clock (tests replace it)
        self._lock: RunLock | None = None
        if resume:
            self._check_run_dir(run_dir)  # before the lock: --resume of nothing creates no folder
        main = ddp.env_info().is_main
        if main:  # rank 0 alone writes the run directory (other nodes may not see it)
            check_writable_dir(self.paths.root)  # now, not after the data is prepared
            # One writer per run directory, taken before anything is written into it.
            self._lock = RunLock(self.paths.root).acquire()
        try:
            self._check_run_dir(run_dir)  # under the lock: a run may have ended in there meanwhile
            if resume:
                saved = cfgmod.load(self.paths.config)
                done = int(self._load_state()["iteration"])
                cfg = cfgmod.check_resume(saved, overrides or {}, done)
            if main and cfg.train.tensorboard:
                runlog.summary_writer_class()  # a missing extra is said before anything is written
        except BaseException:
            self.release()
            raise
        self.cfg = cfg
        self.display = display if display is not None else Display()

    def _check_run_dir(self, run_dir) -> None:
        if self.resume:
            if not self.paths.state.is_file() or not self.paths.config.is_file():
                raise DukdError(f"{run_dir} holds no run to resume (no state.pt / config.toml)")
        elif self.paths.state.is_file():
            raise DukdError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir}, or pick another --out"
            )

    def release(self) -> None:
        """Let another process write the run directory (done by :meth:`fit` when it returns)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _load_state(self) -> dict:
        return ckpt.read_state(self.paths.state)

    # -- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        dev = select_device(cfg.train.device)
        self.dist = ddp.init(dev.type)
        if self.dist.enabled and dev.type == "cuda":
            dev = torch.device("cuda", self.dist.local_rank)
        self.device = dev
        self.main = self.dist.is_main
        if not self.main:
            self.display.enabled = False
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        seed = int(cfg.train.seed)
        # Identical initial weights on every rank, then per-rank streams.
        torch.manual_seed(seed)
        res0 = resolve(cfg, self.method_cls_override)
        # The network trained: the student, or a larger one the method ships part of (csd).
        trained_spec = getattr(res0.method_cls, "trained_spec", None)
        s_spec = trained_spec(res0.student, res0.cfg.method.options) if trained_spec else res0.student
        if self.resume:  # the saved state replaces the initial weights: do not read them again
            s_spec = ModelSpec(**{**s_spec.__dict__, "weights": None})
        student, note = build_student(s_spec, cfg.student.strict, dev)
        if note:
            self.notes.append(note)
        res = resolve(cfg, self.method_cls_override, student_model=student)
        self.resolved = res
        self.cfg = cfg = res.cfg
        if cfg.train.quantize:  # before the EMA copy and the optimiser: same parameters, fake-quant layers
            qat.prepare(student)
        teacher = build_teachers(res.teachers, cfg.teacher.mix, dev) if res.teacher is not None else None
        self._check_batch(student, teacher, dev)  # before the data is prepared and anything is written
        if teacher is not None and not cfg.train.eval_teacher:
            teacher.train()  # as released (still frozen, still under no_grad: no graph, same numbers)
        prec = cfg.train.precision  # decided by the recipe when not given
        self.amp_dtype = (
            torch.bfloat16 if (prec == "bf16" or (prec == "auto" and dev.type == "cuda")) else None
        )
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        if (
            cfg.train.channels_last
        ):  # before the optimiser and the EMA copy: they follow the parameters' layout
            student.to(memory_format=torch.channels_last)
            if teacher is not None:
                teacher.to(memory_format=torch.channels_last)
        self.student_module = student
        self.teacher = teacher
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.student = DDP(student, device_ids=[dev.index] if dev.type == "cuda" else None)
        else:
            self.student = student
        self.ema = copy.deepcopy(student).eval().requires_grad_(False)
        self.ema_params = list(self.ema.parameters())
        self.params = list(student.parameters())
        self.ema_buffers = list(self.ema.buffers())
        self.buffers = list(student.buffers())
        self._compile_models()

        t = cfg.train
        # The fused CUDA kernel is the fastest Adam there; the CPU keeps the default (bit-reproducible).
        self.optimizer = torch.optim.Adam(
            student.parameters(),
            lr=t.lr,
            betas=tuple(t.betas),
            eps=t.eps,
            fused=True if dev.type == "cuda" else None,
        )
        # The method's generator is the same on every rank (methods draw for the global batch and
        # keep their slice); the global RNGs (dropout, drop-path) are per rank.
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 2))
        torch.manual_seed(derive_seed(seed, 3, self.dist.rank))
        np.random.seed(derive_seed(seed, 4, self.dist.rank))
        random.seed(derive_seed(seed, 5, self.dist.rank))
        if dev.type == "cuda":
            torch.cuda.manual_seed(derive_seed(seed, 6, self.dist.rank))

        amp = self.amp_dtype

        def teacher_autocast():
            return torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext()

        self.autocast = teacher_autocast
        ctx = MethodContext(
            device=dev,
            scale=int(cfg.student.scale),
            update=cfg.method.update,
            generator=self.generator,
            teacher_autocast=teacher_autocast,
            world=self.dist.world,
            rank=self.dist.rank,
        )
        self.method = res.method_cls(self.student, teacher, cfg.method.options, ctx, student_module=student)
        self._add_method_modules()
        decided = getattr(self.method, "decided_options", None)  # e.g. the feature positions used
        if callable(decided):
            cfg.method.options.update(decided())

        self.iteration = 0
        self.best_psnr: float | None = None
        self.best_iteration: int | None = None
        self.last_val: dict[str, float] | None = None
        state = None
        if self.main:
            stale = ckpt.remove_stale_temps(self.paths.root)
            if stale:
                self.notes.append(
                    f"removed {len(stale)} temporary file(s) of an interrupted write: {', '.join(stale)}"
                )
        if self.resume:
            state = self._load_state()
            self._restore(state)
            if self.main and ckpt.sync_student(
                self.paths, state, self._metadata(), student=self._shipped_state()
            ):
                self.notes.append(
                    f"student.safetensors was behind state.pt (a checkpoint interrupted mid-write); rewritten "
                    f"from iteration {self.iteration}"
                )

        # Data: rank 0 fills the cache first, the others then find it ready.
        if self.main:
            self.trainset = datamod.prepare(
                cfg.data.paths, cfg.student.scale, t.patch_size, cfg.data.cache_dir
            )
        ddp.barrier(self.dist)
        if not self.main:
            self.trainset = datamod.prepare(
                cfg.data.paths, cfg.student.scale, t.patch_size, cfg.data.cache_dir
            )
        self.val_enabled = bool(cfg.val.every) and self.main
        if self.val_enabled:
            # Check now, not at the first validation hours later. A benchmark folder named with
            # --data-dir must exist (error); the default lookup finding nothing turns validation
            # off for this run, with a warning (training itself does not need it).
            from dukd_cli.evaluate.protocol import resolve_benches

            try:
                resolve_benches([cfg.val.bench], cfg.val.data_dir)
            except DukdError as exc:
                if cfg.val.data_dir:
                    raise
                self.val_enabled = False
                self.notes.append(f"validation off for this run: {exc}")
        workers = cfg.data.workers
        if workers is None:
            workers = threads.default_workers(dev.type)
        self.workers = int(workers)
        self.dataset = datamod.PatchDataset(self.trainset.items, cfg.student.scale, t.patch_size, seed)

        if self.main:
            try:
                self.paths.root.mkdir(parents=True, exist_ok=True)
                header = "dukd distill: resolved configuration (read back by --resume)"
                atomic_write_text(self.paths.config, cfgmod.to_toml(cfg, header))
                from dukd_cli.distill.runinfo import record_session

                record_session(  # hardware, start time and the precision used, for dukd report
                    self.paths.root,
                    self.device,
                    self.iteration,
                    precision="bf16" if self.amp_dtype == torch.bfloat16 else "fp32",
                )
                if self.resume:
                    runlog.truncate(self.paths.metrics, self.iteration)
            except OSError as exc:
                raise DukdError(
                    f"cannot write to the run directory {self.paths.root}: {exc.strerror or exc}"
                ) from None
        tb_dir = self.paths.root / "tensorboard" if self.main and cfg.train.tensorboard else None
        self.log = runlog.RunLog(self.paths.metrics, tb_dir, purge_step=self.iteration + 1)
        # Loss sums since the last log step; restored on resume so the logged means match an uninterrupted run.
        self._acc: dict[str, torch.Tensor] = {}
        self._acc_n = 0
        if state is not None:
            self._acc, self._acc_n = ckpt.unpack_log(state, self.dist.rank, self.device)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self._prefetch: bool | None = None  # None: one batch ahead on CUDA (tests force it on the CPU)
        self._ready = True

    def _add_method_modules(self) -> None:
        """A method's own trainable modules (feature adapters) join the optimiser, the gradient clip
        and the checkpoint (state.pt ``method``); they are not part of the exported student."""
        extra = self.method.trainable() if callable(getattr(self.method, "trainable", None)) else None
        self.method_modules = extra
        if extra is None or not list(extra.parameters()):
            return
        if self.dist.enabled:
            raise DukdError(
                f"method '{self.cfg.method.name}' trains feature adapters (teacher and student widths differ), "
                "which do not run under several processes yet; run on one process or match the widths"
            )
        self.optimizer.add_param_group({"params": list(extra.parameters())})
        self.clip_params = self.params + list(extra.parameters())

    def _check_batch(self, student, teacher, dev: torch.device) -> None:
        """Refuse (one line) a batch whose patches and activations cannot fit in the device's memory."""
        from dukd_cli.models.sizeguard import check_batch
        from dukd_cli.upscale.inference import bytes_per_input_pixel

        t = self.cfg.train
        per_pixel = bytes_per_input_pixel(student)
        if teacher is not None:
            per_pixel = max(per_pixel, bytes_per_input_pixel(teacher))  # its forward: no graph kept
        check_batch(int(t.batch_size), int(t.patch_size), int(self.cfg.student.scale), per_pixel, dev)

    def _restore(self, st: dict) -> None:
        if int(st.get("world", 1)) != self.dist.world:
            raise DukdError(
                f"the run was trained with {st.get('world', 1)} process(es); resume it with the same number"
            )
        try:
            self.student_module.load_state_dict(st["student"])
            if self.method_modules is not None and "method" in st:
                self.method_modules.load_state_dict(st["method"])
            self.ema.load_state_dict(st["ema"])
            if self.cfg.train.quantize:  # the activation ranges are no state-dict keys
                qat.load_observer_state(self.student_module, st["qat"]["student"])
                qat.load_observer_state(self.ema, st["qat"]["ema"])
            self.optimizer.load_state_dict(st["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            s = self.cfg.student
            raise DukdError(
                f"{self.paths.state} does not fit the student of {self.paths.config} ({s.name} x{s.scale}): "
                f"it holds another architecture's weights ({_first_line(exc)})"
            ) from None
        self.iteration = int(st["iteration"])
        best = st.get("best") or {}
        self.best_psnr = best.get("psnr")
        self.best_iteration = best.get("iteration")
        ckpt.set_rng_state(st["rng"][self.dist.rank], self.generator, self.device)

    def _rng_state(self) -> dict:
        return ckpt.rng_state(self.generator, self.device)

    # -- checkpoints ---------------------------------------------------------------------------

    def _metadata(self) -> dict[str, str]:
        s = self.resolved.student
        return {
            "format": "dukd-student",
            "architecture": s.arch,
            "scale": str(s.scale),
            "arguments": json.dumps(cfgmod._from_toml(s.kwargs), default=str),
            "iteration": str(self.iteration),
            "method": self.cfg.method.name,
        }

    def save_checkpoint(self) -> None:
        """Write state.pt and student.safetensors as one checkpoint (collective under DDP: every rank
        calls it). Random generators and log accumulators are saved per rank."""
        per_rank = ddp.gather_objects(
            {"rng": self._rng_state(), "log": ckpt.pack_log(self._acc, self._acc_n)}, self.dist
        )
        if not self.main:
            return
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "iteration": self.iteration,
            "world": self.dist.world,
            "student": self.student_module.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": [r["rng"] for r in per_rank],
            # The data stream is a function of the iteration; recorded for readers of the file.
            "data": {"next_sample": self.iteration * self.cfg.train.batch_size * self.dist.world},
            "best": {"psnr": self.best_psnr, "iteration": self.best_iteration},
            "log": [r["log"] for r in per_rank],
        }
        if self.method_modules is not None:
            state["method"] = self.method_modules.state_dict()
        if self.cfg.train.quantize:  # the activation ranges are no state-dict keys
            state["qat"] = {
                "student": qat.observer_state(self.student_module),
                "ema": qat.observer_state(self.ema),
            }
        ckpt.write_checkpoint(
            self.paths,
            state,
            self._metadata(),
            kept=getattr(self, "saved_iteration", None),
            student=self._shipped_state(),
        )
        self.saved_iteration = self.iteration
        self._t_save = self.clock()

    def _shipped(self) -> torch.nn.Module:
        """The student the run delivers from the EMA (the EMA itself unless the method ships a part)."""
        shipped = getattr(self.method, "shipped", None)
        return shipped(self.ema) if shipped is not None else self.ema

    def _shipped_state(self) -> dict[str, torch.Tensor] | None:
        """student.safetensors' tensors when they are not the EMA's own (``None``: the EMA's)."""
        model = self._shipped()
        return None if model is self.ema else model.state_dict()

    def _write_metrics(self, record: dict[str, Any]) -> None:
        if self.main:
            self.log.write(record)

    # -- validation ------------------------------------------------------------------------------

    def validate(self) -> dict[str, float] | None:
        v = self.cfg.val
        if not self.val_enabled:
            return None
        from dukd_cli.distill import agreement
        from dukd_cli.evaluate.protocol import evaluate

        probe = agreement.probe_for(self)  # student-vs-teacher PSNR (paper Fig. 5), reusing these forwards
        student = self._shipped()
        res = evaluate(
            student,
            int(self.cfg.student.scale),
            [v.bench],
            data_dir=v.data_dir,
            device=self.device,
            precision="fp32",
            max_images=v.max_images,
            reference=probe.reference if probe else None,
        )
        r = res[0]
        out = {"val_bench": r.bench, "val_psnr": float(r.psnr), "val_ssim": float(r.ssim)}
        out.update(agreement.record(probe, student, r))
        self.last_val = out
        if self.best_psnr is None or r.psnr > self.best_psnr:
            self.best_psnr, self.best_iteration = float(r.psnr), self.iteration
            save_safetensors(student, self.paths.best, {**self._metadata(), "val_psnr": f"{r.psnr:.4f}"})
        return out

    # -- the loop --------------------------------------------------------------------------------

    def _compile_models(self) -> None:
        """``--compile``: the student and the teacher compiled in place (after the EMA copy, so the
        EMA, the optimiser and checkpoints keep using the same, uncompiled parameters)."""
        if not self.cfg.train.compile:
            return
        from dukd_cli.distill import fast

        fast.compile_module(self.student_module, memory_format=self.memory_format)
        if self.teacher is not None:
            fast.compile_module(self.teacher, memory_format=self.memory_format)

    def to_device(self, lr_u8: torch.Tensor, hr_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 patches from the loader -> float [0, 1] on the training device (converted there)."""
        lr = lr_u8.to(self.device, non_blocking=True).float().div_(255.0)
        hr = hr_u8.to(self.device, non_blocking=True).float().div_(255.0)
        if self.memory_format is torch.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
            hr = hr.contiguous(memory_format=torch.channels_last)
        return lr, hr

    def device_batch(self, lr_u8: torch.Tensor, hr_u8: torch.Tensor) -> Batch:
        return Batch(*self.to_device(lr_u8, hr_u8), self.iteration)

    def batches(self, loader, ahead: bool | None = None):
        """The loader's batches as device tensors, the next one in flight on CUDA (see distill.fast)."""
        from dukd_cli.distill.fast import DevicePrefetcher

        return DevicePrefetcher(
            iter(loader), self.to_device, self.device, ahead=self._prefetch if ahead is None else ahead
        )

    def make_loader(self, start_iter: int | None = None):
        t = self.cfg.train
        return datamod.make_loader(
            self.dataset,
            t.batch_size,
            t.seed,
            start_iter=self.iteration if start_iter is None else start_iter,
            world=self.dist.world,
            rank=self.dist.rank,
            workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )

    def _groups(self, batch: Batch):
        gen = self.method.losses(batch)
        while True:
            with self.autocast():
                try:
                    group = next(gen)
                except StopIteration:
                    return
            yield group

    def _step(self, loss: torch.Tensor) -> None:
        """Backward and one optimiser step. The gradients are NOT zeroed here: under two-step the
        second step applies ``g1 + g2`` (as released); :meth:`train_step` zeroes them once per iteration."""
        loss.backward()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(
                getattr(self, "clip_params", self.params), self.cfg.train.grad_clip
            )
        self.optimizer.step()

    def train_step(self, batch: Batch) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.train.quantize:
            qat.set_observing(self.student_module, self.iteration < int(self.cfg.train.qat_observe))
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(self.cfg, self.iteration)
        if self.cfg.method.update == "single":
            terms: dict[str, torch.Tensor] = {}
            for group in self._groups(batch):
                terms.update(group)
            loss = sum(terms.values())
            self._track(terms, loss)
            self._step(loss)
        else:
            for group in self._groups(batch):
                loss = sum(group.values())
                self._track(group, loss)
                self._step(loss)
        with torch.no_grad():
            d = ema_decay_at(self.cfg, self.iteration)
            # ema = ema * d + p * (1 - d), in that form (BasicSR's model_ema; lerp rounds differently)
            torch._foreach_mul_(self.ema_params, d)
            torch._foreach_add_(self.ema_params, self.params, alpha=1.0 - d)
            for eb, b in zip(self.ema_buffers, self.buffers, strict=True):
                eb.copy_(b)

    def _track(self, terms: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        with torch.no_grad():
            for k, v in terms.items():
                v = v.detach().float()
                self._acc[k] = self._acc[k] + v if k in self._acc else v
            lf = loss.detach().float()
            self._acc["loss"] = self._acc["loss"] + lf if "loss" in self._acc else lf
            bad = ~torch.isfinite(lf)
            self._first_bad = torch.where(bad & (self._first_bad < 0), self.iteration + 1, self._first_bad)

    def _check_finite(self) -> None:
        flag = int(self._first_bad.item()) if self._first_bad is not None else -1
        if ddp.any_flag(flag >= 0, self.dist, self.device):
            where = f"at iteration {flag}" if flag >= 0 else "on another rank"
            kept = getattr(self, "saved_iteration", None)
            keep = (
                f"the last good checkpoint (iteration {kept}) is kept"
                if kept
                else "no checkpoint was written"
            )
            raise NonFiniteLossError(
                f"the loss became NaN/inf {where}; training stopped and {keep} in {self.paths.root}. "
                "Try a lower --lr, --grad-clip, or --precision fp32"
            )

    def _info(self) -> str:
        info = getattr(self, "_info_loss", "")
        if self.last_val:
            info += f"  {self.last_val['val_bench']} {self.last_val['val_psnr']:.2f} dB"
        return info.strip()

    def _on_signal(self, signum, frame) -> None:
        """Ctrl-C or SIGTERM: finish this iteration, save, exit; the same signal again aborts at once."""
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self._stop_signal = signum
        self.display.message(
            f"[yellow]{name}: stopping after this iteration and saving ({name} again to abort)[/]"
        )

    def _install_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _time_to_save(self, it: int, check_every: int) -> bool:
        """``--save-every-min``: a checkpoint when that many minutes passed since the last one (decided
        by rank 0's clock under DDP, at the iterations where ranks already agree on stopping)."""
        minutes = float(getattr(self.cfg.train, "save_every_min", 0) or 0)
        if minutes <= 0 or it % check_every:
            return False
        due = self.clock() - self._t_save >= minutes * 60.0
        return ddp.any_flag(due and self.main, self.dist, self.device)

    def fit(self) -> FitResult:
        """Train to ``train.iters`` (calls :meth:`setup` first unless already done)."""
        try:
            if not getattr(self, "_ready", False):
                self.setup()
            return self._fit()
        finally:
            self.release()

    def _fit(self) -> FitResult:
        cfg, t = self.cfg, self.cfg.train
        total = int(t.iters)
        self._stop_requested = False
        self._stop_signal = None
        self.saved_iteration = self.iteration if self.resume else None
        self._t_save = self.clock()
        interrupted = False
        old_handler = self._install_handlers()
        loader = self.make_loader()
        s = self.resolved.student
        title = f"distill {self.cfg.method.name}: {s.name} x{s.scale}"
        if self.resolved.teacher is not None:
            title += " <- " + " + ".join(t.name for t in self.resolved.teachers)
        self.display.start(total, self.iteration, title)
        for n in self.notes:
            self.display.message(f"[yellow]note:[/] {escape(n)}")
        if self.main and self.trainset.skipped:
            self.display.message(f"[yellow]note:[/] {escape(self.trainset.summary())}")
        consistent = True
        t_log, it_log = time.perf_counter(), self.iteration
        check_every = 1 if not self.dist.enabled else max(1, min(t.log_every, 10))
        data_iter = self.batches(loader)
        try:
            while self.iteration < total:
                lr, hr = next(data_iter)
                consistent = False
                self.train_step(Batch(lr, hr, self.iteration))
                self.iteration += 1
                self._acc_n += 1
                consistent = True
                it = self.iteration
                for cb in self.callbacks:
                    cb(self, it)
                record: dict[str, Any] = {}
                is_log = it % max(1, t.log_every) == 0 or it == total
                is_save = it % max(1, t.save_every) == 0 or it == total or self._time_to_save(it, check_every)
                is_val = bool(cfg.val.every) and (it % cfg.val.every == 0 or it == total)
                if is_log or is_save or is_val or self.device.type == "cpu":
                    self._check_finite()
                if is_log:
                    now = time.perf_counter()
                    speed = (it - it_log) / max(now - t_log, 1e-9)
                    t_log, it_log = now, it
                    steps = max(1, self._acc_n)
                    values = {k: float(v.item()) / steps for k, v in self._acc.items()}
                    values = ddp.mean_scalars(values, self.dist, self.device)
                    self._acc, self._acc_n = {}, 0
                    record.update(
                        {
                            "iteration": it,
                            "loss": values.pop("loss", float("nan")),
                            "losses": values,
                            "lr": lr_at(cfg, it - 1),
                            "it_s": speed,
                        }
                    )
                    self._info_loss = f"loss {record['loss']:.4f}"
                    self.display.update(it, total, speed, self._info())
                    terms = " ".join(f"{k} {v:.4f}" for k, v in values.items())
                    self.display.log(
                        f"it {it}/{total}  loss {record['loss']:.4f} ({terms})  lr {record['lr']:.2e}  {speed:.2f} it/s"
                    )
                else:
                    self.display.update(it, total)
                if is_val:
                    val = self.validate()
                    if val:
                        record.update({"iteration": it, **val})
                        self.display.log(
                            f"it {it}: {val['val_bench']} PSNR {val['val_psnr']:.2f} dB, SSIM {val['val_ssim']:.4f}"
                        )
                        self.display.update(it, total, info=self._info())
                if record:
                    record.setdefault("iteration", it)
                    self._write_metrics(record)
                if is_save:
                    self.save_checkpoint()
                if it % check_every == 0 and ddp.any_flag(self._stop_requested, self.dist, self.device):
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
            if not consistent:
                self.display.stop()
                self.display.message(
                    f"[yellow]aborted mid-iteration; the last checkpoint (iteration {self.saved_iteration}) is kept[/]"
                )
                self._teardown(old_handler)
                return self._result(self.saved_iteration or 0, interrupted=True)
        except BaseException:
            self.display.stop()
            self._teardown(old_handler)
            raise
        if interrupted and self.saved_iteration != self.iteration:
            self.save_checkpoint()
        self.display.stop()
        if interrupted:
            by = (
                f" by {signal.Signals(self._stop_signal).name}" if self._stop_signal == signal.SIGTERM else ""
            )
            self.display.message(
                f"[yellow]interrupted{by} at iteration {self.iteration}; saved. "
                f"Continue with --resume {escape(str(self.paths.root))}[/]"
            )
        # Every rank leaves together, once rank 0 has written the last checkpoint: a rank that exits
        # early tears its connections down under the others.
        ddp.barrier(self.dist)
        self._teardown(old_handler)
        return self._result(self.iteration, interrupted=interrupted)

    def _result(self, iteration: int, *, interrupted: bool) -> FitResult:
        return FitResult(
            self.paths.root,
            iteration,
            interrupted,
            self.best_psnr,
            self.last_val,
            self.notes,
            self.main,
            self._stop_signal,
        )

    def _teardown(self, old_handlers: dict) -> None:
        for sig, old in old_handlers.items():
            if old is not None:
                signal.signal(sig, old)
        self.method.close()
        self.log.close()
        if self.dist.enabled:
            # The DDP wrapper holds the process group: drop it now, so that ``ddp.shutdown()`` frees the
            # group (and joins gloo's threads) while the interpreter is alive, not during its
            # finalisation, where gloo aborts the process ("terminate called without an active
            # exception").
            self.student = self.student_module
            self.method.student = self.student_module
            gc.collect()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
