"""The distillation trainer: resumable, mixed-precision, DDP-ready.

A :class:`Trainer` takes a configuration resolved once (:class:`~dukd_cli.distill.resolve.Resolved`,
or a :class:`~dukd_cli.distill.config.DistillConfig` it resolves itself, once, in :meth:`Trainer.setup`),
builds a :class:`~dukd_cli.distill.session.Session` from it (device, models, EMA, optimiser, method)
and runs the loop over it.

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
checkpoint committed by the rename of state.pt (see :mod:`dukd_cli.distill.checkpoint`; its content:
:mod:`dukd_cli.distill.trainstate`). Ctrl-C and SIGTERM stop after the current iteration and save
(:mod:`dukd_cli.distill.signals`). The learning-rate schedule is a pure
function of the iteration (``lr * gamma ** #milestones passed``), so it needs no saved state.
On the CPU with a fixed seed a run resumed at iteration K ends bit-identical to an uninterrupted
run (the data stream is a function of the iteration; see :mod:`dukd_cli.distill.data`).
"""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.markup import escape
from torch.utils.data import DataLoader

from dukd_cli.distill import checkpoint as ckpt
from dukd_cli.distill import data as datamod
from dukd_cli.distill import ddp, qat, runlog, trainstate
from dukd_cli.distill.config import DistillConfig
from dukd_cli.distill.display import Display
from dukd_cli.distill.meter import LossMeter
from dukd_cli.distill.methods import Batch, Method
from dukd_cli.distill.resolve import Resolved, resolve
from dukd_cli.distill.schedule import ema_decay_at, lr_at
from dukd_cli.distill.session import Session, build_session
from dukd_cli.distill.signals import StopSignals
from dukd_cli.distill.workdir import RunDirectory
from dukd_cli.errors import DukdError
from dukd_cli.runtime import threads

if TYPE_CHECKING:
    from dukd_cli.distill.agreement import Probe

__all__ = ["FitResult", "NonFiniteLossError", "Trainer"]


class NonFiniteLossError(DukdError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


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


def _training_set(cfg: DistillConfig, dist: ddp.DistInfo) -> datamod.TrainingSet:
    """The training images, prepared: rank 0 fills the cache first, the others then find it ready."""
    t = cfg.train
    if dist.is_main:
        trainset = datamod.prepare(cfg.data.paths, cfg.student.scale, t.patch_size, cfg.data.cache_dir)
    ddp.barrier(dist)
    if not dist.is_main:
        trainset = datamod.prepare(cfg.data.paths, cfg.student.scale, t.patch_size, cfg.data.cache_dir)
    return trainset


def _validation_on(cfg: DistillConfig, notes: list[str]) -> bool:
    """Whether this run validates, checked now, not at the first validation hours later. A benchmark
    folder named with --data-dir must exist (error); the default lookup finding nothing turns
    validation off for this run, with a note (training itself does not need it)."""
    if not cfg.val.every:
        return False
    from dukd_cli.evaluate.protocol import resolve_benches

    try:
        resolve_benches([cfg.val.bench], cfg.val.data_dir)
    except DukdError as exc:
        if cfg.val.data_dir:
            raise
        notes.append(f"validation off for this run: {exc}")
        return False
    return True


def _title(res: Resolved) -> str:
    """The progress display's title: method, student, teacher(s)."""
    title = f"distill {res.cfg.method.name}: {res.student.name} x{res.student.scale}"
    if res.teacher is not None:
        title += " <- " + " + ".join(t.name for t in res.teachers)
    return title


class Trainer:
    """Distil a student from a teacher as configured.

    ``cfg``: the run's :class:`Resolved` configuration (what ``dukd distill`` passes: resolved once,
    by the command), or a :class:`DistillConfig` that :meth:`setup` resolves (with ``method_cls``
    instead of the registered method, if given). With ``resume`` the run directory's own
    configuration is read back (``overrides`` applied) and resolved in :meth:`setup`.

    ``callbacks`` run after every completed iteration (``cb(trainer, iteration)``); raising
    ``KeyboardInterrupt`` there behaves like Ctrl-C (checkpoint, clean exit). SIGTERM (what
    schedulers send before killing) is handled like Ctrl-C.
    """

    def __init__(
        self,
        cfg: DistillConfig | Resolved,
        run_dir: str | Path,
        *,
        resume: bool = False,
        overrides: dict[str, Any] | None = None,
        method_cls: type[Method] | None = None,
        callbacks: Sequence[Callback] = (),
        display: Display | None = None,
    ) -> None:
        if resume and isinstance(cfg, Resolved):
            raise TypeError("--resume reads the run's configuration back: pass a DistillConfig")
        self.workdir = RunDirectory(run_dir, resume=resume)
        self.paths = self.workdir.paths
        self.resume = resume
        self.callbacks = list(callbacks)
        self.method_cls_override = method_cls
        self.resolved: Resolved | None = cfg if isinstance(cfg, Resolved) else None
        self.notes: list[str] = []
        self.clock = time.monotonic  # --save-every-min's clock (tests replace it)
        self.display = display if display is not None else Display()
        self.stop = StopSignals(self.display.message)
        self._session: Session | None = None
        # Progress, restored on resume; what the loop, validation and checkpoints keep.
        self.iteration = 0
        self.best_psnr: float | None = None
        self.best_iteration: int | None = None
        self.last_val: dict[str, float] | None = None
        self.saved_iteration: int | None = None
        # Set by setup(): the data, the run log, validation and the loop's accumulators.
        self.trainset: datamod.TrainingSet
        self.dataset: datamod.PatchDataset
        self.workers = 0
        self.val_enabled = False
        self.log: runlog.RunLog
        self.meter: LossMeter
        self._prefetch: bool | None = None  # None: one batch ahead on CUDA (tests force it on the CPU)
        self._agreement_probe: Probe | None = None
        self._probe_built = False
        self._info_loss = ""
        self._t_save = 0.0
        self._t_log, self._it_log = 0.0, 0
        self.cfg: DistillConfig = self.workdir.open(cfg.cfg if isinstance(cfg, Resolved) else cfg, overrides)

    def release(self) -> None:
        """Let another process write the run directory (done by :meth:`fit` when it returns)."""
        self.workdir.release()

    @property
    def session(self) -> Session:
        """The built models, optimiser and method (after :meth:`setup`)."""
        if self._session is None:
            raise RuntimeError("Trainer.setup() has not run yet")
        return self._session

    # -- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        """Resolve (unless given resolved), build the session, restore a resumed run, prepare the
        data and the run directory."""
        if self.resolved is None:  # the library's path: resolved here, once
            self.resolved = resolve(self.cfg, self.method_cls_override)
        self._session = s = build_session(self.resolved, resume=self.resume)
        self.cfg = s.cfg
        self.notes.extend(s.notes)
        if s.main:
            self.notes += self.workdir.sweep()
        else:
            self.display.enabled = False
        state = None
        if self.resume:
            progress, state, notes = trainstate.resume(s, self.paths)
            self.iteration, self.best_psnr, self.best_iteration = astuple(progress)
            self.notes += notes
        self.trainset = _training_set(self.cfg, s.dist)
        self.val_enabled = s.main and _validation_on(self.cfg, self.notes)
        workers = self.cfg.data.workers
        self.workers = int(workers if workers is not None else threads.default_workers(s.device.type))
        t = self.cfg.train
        self.dataset = datamod.PatchDataset(
            self.trainset.items, self.cfg.student.scale, t.patch_size, int(t.seed)
        )
        if s.main:
            precision = "bf16" if s.amp_dtype == torch.bfloat16 else "fp32"
            self.workdir.start(self.cfg, s.device, self.iteration, precision)
        tb_dir = self.paths.root / "tensorboard" if s.main and self.cfg.train.tensorboard else None
        self.log = runlog.RunLog(self.paths.metrics, tb_dir, purge_step=self.iteration + 1)
        self.meter = LossMeter(s.device)
        if state is not None:  # the log sums since the last log step: the logged means match
            self.meter.load(state, s.dist.rank)

    # -- checkpoints and validation ----------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Write state.pt and student.safetensors as one checkpoint (collective under DDP: every rank
        calls it). Random generators and log accumulators are saved per rank."""
        s = self.session
        mine = {"rng": ckpt.rng_state(s.generator, s.device), "log": self.meter.pack()}
        per_rank = ddp.gather_objects(mine, s.dist)
        if not s.main:
            return
        progress = trainstate.Progress(self.iteration, self.best_psnr, self.best_iteration)
        ckpt.write_checkpoint(
            self.paths,
            trainstate.pack(s, progress, per_rank),
            trainstate.metadata(s, self.iteration),
            kept=self.saved_iteration,
            student=s.shipped_state(),
        )
        self.saved_iteration = self.iteration
        self._t_save = self.clock()

    def _probe(self) -> Probe | None:
        """The teacher-agreement probe, built at the first validation (``None``: nothing to compare)."""
        if not self._probe_built:
            from dukd_cli.distill import agreement

            self._probe_built = True
            try:
                self._agreement_probe = agreement.build_probe(self.session, self.dataset)
            except DukdError as exc:  # training goes on; the report will say the agreement is missing
                self.display.message(f"[yellow]note:[/] teacher agreement not logged: {exc}")
                self._agreement_probe = None
        return self._agreement_probe

    def validate(self) -> dict[str, float] | None:
        v = self.cfg.val
        if not self.val_enabled:
            return None
        from dukd_cli.distill import agreement
        from dukd_cli.evaluate.protocol import evaluate

        probe = self._probe()  # student-vs-teacher PSNR (paper Fig. 5), reusing these forwards
        student = self.session.shipped()
        res = evaluate(
            student,
            int(self.cfg.student.scale),
            [v.bench],
            data_dir=v.data_dir,
            device=self.session.device,
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
            meta = {**trainstate.metadata(self.session, self.iteration), "val_psnr": f"{r.psnr:.4f}"}
            ckpt.save_safetensors(student, self.paths.best, meta)
        return out

    # -- one iteration -----------------------------------------------------------------------------

    def device_batch(self, lr_u8: torch.Tensor, hr_u8: torch.Tensor) -> Batch:
        return Batch(*self.session.to_device(lr_u8, hr_u8), self.iteration)

    def batches(
        self, loader: DataLoader, ahead: bool | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The loader's batches as device tensors, the next one in flight on CUDA (see distill.fast)."""
        from dukd_cli.distill.fast import DevicePrefetcher

        ahead = self._prefetch if ahead is None else ahead
        return DevicePrefetcher(iter(loader), self.session.to_device, self.session.device, ahead=ahead)

    def make_loader(self, start_iter: int | None = None) -> DataLoader:
        t, s = self.cfg.train, self.session
        return datamod.make_loader(
            self.dataset,
            t.batch_size,
            t.seed,
            start_iter=self.iteration if start_iter is None else start_iter,
            world=s.dist.world,
            rank=s.dist.rank,
            workers=self.workers,
            pin_memory=s.device.type == "cuda",
        )

    def _groups(self, batch: Batch) -> Iterator[dict[str, torch.Tensor]]:
        gen = self.session.method.losses(batch)
        while True:
            with self.session.autocast():
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
            torch.nn.utils.clip_grad_norm_(self.session.clip_params, self.cfg.train.grad_clip)
        self.session.optimizer.step()

    def train_step(self, batch: Batch) -> None:
        s = self.session
        s.optimizer.zero_grad(set_to_none=True)
        if self.cfg.train.quantize:
            qat.set_observing(s.student_module, self.iteration < int(self.cfg.train.qat_observe))
        for g in s.optimizer.param_groups:
            g["lr"] = lr_at(self.cfg, self.iteration)
        if self.cfg.method.update == "single":
            terms: dict[str, torch.Tensor] = {}
            for group in self._groups(batch):
                terms.update(group)
            loss = sum(terms.values())
            self.meter.add(terms, loss, self.iteration)
            self._step(loss)
        else:
            for group in self._groups(batch):
                loss = sum(group.values())
                self.meter.add(group, loss, self.iteration)
                self._step(loss)
        s.ema.update(ema_decay_at(self.cfg, self.iteration))

    def _check_finite(self) -> None:
        flag = self.meter.first_bad()
        if ddp.any_flag(flag >= 0, self.session.dist, self.session.device):
            where = f"at iteration {flag}" if flag >= 0 else "on another rank"
            kept = self.saved_iteration
            keep = (
                f"the last good checkpoint (iteration {kept}) is kept"
                if kept
                else "no checkpoint was written"
            )
            raise NonFiniteLossError(
                f"the loss became NaN/inf {where}; training stopped and {keep} in {self.paths.root}. "
                "Try a lower --lr, --grad-clip, or --precision fp32"
            )

    # -- the loop --------------------------------------------------------------------------------

    def fit(self) -> FitResult:
        """Train to ``train.iters`` (calls :meth:`setup` first unless already done)."""
        try:
            if self._session is None:
                self.setup()
            return self._fit()
        finally:
            self.release()

    def _fit(self) -> FitResult:
        total = int(self.cfg.train.iters)
        self.saved_iteration = self.iteration if self.resume else None
        self._t_save = self.clock()
        self.stop.install()
        loader = self.make_loader()
        self._start_display(total)
        consistent, interrupted = True, False
        self._t_log, self._it_log = time.perf_counter(), self.iteration
        data_iter = self.batches(loader)
        try:
            while self.iteration < total:
                lr, hr = next(data_iter)
                consistent = False
                self.train_step(Batch(lr, hr, self.iteration))
                self.iteration += 1
                self.meter.steps += 1
                consistent = True
                if self._after_iteration(total):
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
            if not consistent:
                self.display.stop()
                self.display.message(
                    f"[yellow]aborted mid-iteration; the last checkpoint (iteration {self.saved_iteration}) is kept[/]"
                )
                self._teardown()
                return self._result(self.saved_iteration or 0, interrupted=True)
        except BaseException:
            self.display.stop()
            self._teardown()
            raise
        return self._finish(interrupted)

    def _start_display(self, total: int) -> None:
        self.display.start(total, self.iteration, _title(self.session.resolved))
        for n in self.notes:
            self.display.message(f"[yellow]note:[/] {escape(n)}")
        if self.session.main and self.trainset.skipped:
            self.display.message(f"[yellow]note:[/] {escape(self.trainset.summary())}")

    def _after_iteration(self, total: int) -> bool:
        """Callbacks, then at their intervals: log, validate, checkpoint. True: stop (a signal)."""
        cfg, t, s = self.cfg, self.cfg.train, self.session
        it = self.iteration
        check_every = 1 if not s.dist.enabled else max(1, min(t.log_every, 10))
        for cb in self.callbacks:
            cb(self, it)
        record: dict[str, Any] = {}
        is_log = it % max(1, t.log_every) == 0 or it == total
        is_save = it % max(1, t.save_every) == 0 or it == total or self._time_to_save(it, check_every)
        is_val = bool(cfg.val.every) and (it % cfg.val.every == 0 or it == total)
        if is_log or is_save or is_val or s.device.type == "cpu":
            self._check_finite()
        if is_log:
            record.update(self._log_step(it, total))
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
        if record and s.main:
            record.setdefault("iteration", it)
            self.log.write(record)
        if is_save:
            self.save_checkpoint()
        return it % check_every == 0 and ddp.any_flag(self.stop.requested, s.dist, s.device)

    def _log_step(self, it: int, total: int) -> dict[str, Any]:
        """The mean losses since the last log step (over every rank), the learning rate, the speed."""
        s = self.session
        now = time.perf_counter()
        speed = (it - self._it_log) / max(now - self._t_log, 1e-9)
        self._t_log, self._it_log = now, it
        values = self.meter.means(s.dist)
        loss = values.pop("loss", float("nan"))
        lr = lr_at(self.cfg, it - 1)
        self._info_loss = f"loss {loss:.4f}"
        self.display.update(it, total, speed, self._info())
        terms = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        self.display.log(f"it {it}/{total}  loss {loss:.4f} ({terms})  lr {lr:.2e}  {speed:.2f} it/s")
        return {"iteration": it, "loss": loss, "losses": values, "lr": lr, "it_s": speed}

    def _info(self) -> str:
        info = self._info_loss
        if self.last_val:
            info += f"  {self.last_val['val_bench']} {self.last_val['val_psnr']:.2f} dB"
        return info.strip()

    def _time_to_save(self, it: int, check_every: int) -> bool:
        """``--save-every-min``: a checkpoint when that many minutes passed since the last one (decided
        by rank 0's clock under DDP, at the iterations where ranks already agree on stopping)."""
        minutes = float(getattr(self.cfg.train, "save_every_min", 0) or 0)
        if minutes <= 0 or it % check_every:
            return False
        due = self.clock() - self._t_save >= minutes * 60.0
        return ddp.any_flag(due and self.session.main, self.session.dist, self.session.device)

    def _finish(self, interrupted: bool) -> FitResult:
        if interrupted and self.saved_iteration != self.iteration:
            self.save_checkpoint()
        self.display.stop()
        if interrupted:
            self.display.message(
                f"[yellow]interrupted{self.stop.by()} at iteration {self.iteration}; saved. "
                f"Continue with --resume {escape(str(self.paths.root))}[/]"
            )
        # Every rank leaves together, once rank 0 has written the last checkpoint: a rank that exits
        # early tears its connections down under the others.
        ddp.barrier(self.session.dist)
        self._teardown()
        return self._result(self.iteration, interrupted=interrupted)

    def _result(self, iteration: int, *, interrupted: bool) -> FitResult:
        return FitResult(
            self.paths.root,
            iteration,
            interrupted,
            self.best_psnr,
            self.last_val,
            self.notes,
            self.session.main,
            self.stop.signum,
        )

    def _teardown(self) -> None:
        self.stop.restore()
        self.session.method.close()
        self.log.close()
        if self.session.dist.enabled:
            self.session.drop_ddp()
            gc.collect()
