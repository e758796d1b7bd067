"""``dukd distill --demo``: a short DUKD distillation from the shipped teacher, with a before/after table.

Nothing is downloaded: the teacher is the shipped ``dukd-teacher-x4`` (EDSR-baseline), the student
is ``dukd-student-x4``'s architecture (EDSR, 32 channels, 4 blocks) from a random initialisation,
and the training images are scikit-image's sample photographs. Two of those photographs are held
out and never trained on; the table measures every model on them (or on Set5, when the benchmark
lookup finds it) exactly as ``dukd evaluate`` does: Y channel, ``scale`` pixels of border cropped,
MATLAB bicubic LR.

The rows: MATLAB bicubic, the student before training, the student after the demo's iterations,
the teacher, and the shipped student (same architecture, trained by the full recipe on 291 images).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dukd_cli.errors import DukdError
from dukd_cli.registry import DEFAULT_STUDENT, DEFAULT_TEACHER
from dukd_cli.rundir import RunPaths

if TYPE_CHECKING:
    from dukd_cli.data.benchmarks import BenchSet

SCALE = 4
HOLDOUT = ("chelsea.png", "coffee.png")  # built-in photographs the demo never trains on
DEMO_ITERS = 200
DEMO_BATCH = 8
DEMO_LR = 1e-3


@dataclass
class DemoRow:
    name: str
    detail: str
    params: int | None
    psnr: float
    ssim: float


@dataclass
class DemoResult:
    run_dir: Path
    bench: str  # what the table was measured on
    iterations: int
    train_seconds: float
    rows: list[DemoRow] = field(default_factory=list)
    interrupted: bool = False
    exit_code: int = 0  # 130 after Ctrl-C, 143 after SIGTERM


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX512-BF16 / AMX): then bf16 autocast is
    about 2.5x faster than fp32 here; elsewhere it is emulated and slower, so the demo stays fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def demo_precision(device: torch.device) -> str:
    if device.type == "cuda":
        return "auto"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def default_run_dir() -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"demo-{stamp}"


def training_photos() -> list[str]:
    """The built-in photographs the demo trains on (all but :data:`HOLDOUT`), as file paths."""
    from dukd_cli.data.discover import builtin_sources

    paths = [s.hr for s in builtin_sources()]
    train = [str(p) for p in paths if p.name not in HOLDOUT]
    if not train:
        raise DukdError("scikit-image's sample photographs were not found; the demo needs them")
    return train


def holdout_set(run_dir: Path, data_dir: str | os.PathLike | None = None) -> BenchSet:
    """The set the table is measured on: Set5 when the benchmark lookup finds it, else the
    held-out photographs (copied into ``run_dir/holdout/`` so the set is a plain folder)."""
    from dukd_cli.data.benchmarks import BenchSet, find_set
    from dukd_cli.data.discover import builtin_sources

    try:
        return find_set("set5", data_dir)
    except DukdError:
        pass
    folder = run_dir / "holdout"
    folder.mkdir(parents=True, exist_ok=True)
    found = 0
    for s in builtin_sources():
        if s.hr.name in HOLDOUT:
            shutil.copyfile(s.hr, folder / s.hr.name)
            found += 1
    if not found:
        raise DukdError("the held-out sample photographs were not found in scikit-image's data folder")
    return BenchSet("held-out photos", folder, folder, None)


def demo_config(
    *,
    iters: int = DEMO_ITERS,
    batch_size: int = DEMO_BATCH,
    lr: float = DEMO_LR,
    seed: int = 0,
    device: str = "cpu",
    precision: str | None = None,
    channels_last: bool = True,
    cache_dir: str | None = None,
    workers: int | None = None,
    log_every: int | None = None,
):
    """The demo's distillation configuration (a normal :class:`DistillConfig`: the run directory's
    ``config.toml`` reproduces it with ``dukd distill --config``)."""
    from dukd_cli.distill.config import DistillConfig
    from dukd_cli.upscale.inference import select_device

    if iters < 1:
        raise DukdError("--iters must be positive")
    dev = select_device(device)
    cfg = DistillConfig()
    cfg.student.name = DEFAULT_STUDENT  # its architecture, from a random initialisation
    cfg.student.scale = SCALE
    cfg.teacher.name = DEFAULT_TEACHER  # the shipped weights (the preset's declared source)
    cfg.method.name = "dukd"
    cfg.data.paths = training_photos()
    cfg.data.cache_dir = cache_dir
    cfg.data.workers = workers
    t = cfg.train
    t.iters = int(iters)
    t.batch_size = int(batch_size)
    t.patch_size = 48
    t.lr = float(lr)
    t.milestones = [max(1, int(iters * 0.75))]
    t.gamma = 0.2
    t.seed = int(seed)
    t.device = device
    t.precision = precision or demo_precision(dev)
    t.channels_last = channels_last
    t.log_every = log_every or max(1, min(50, iters // 8))
    t.save_every = iters
    cfg.val.every = 0  # the table at the end is the validation
    return cfg


def _measure(model: torch.nn.Module | str, bench: BenchSet, device: str) -> tuple[float, float]:
    from dukd_cli.evaluate.protocol import evaluate

    (r,) = evaluate(model, SCALE, [bench], device=device, progress=False)
    return r.psnr, r.ssim


def run_demo(
    run_dir: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    on_status: Callable[[str], None] | None = None,
    **config_kwargs: Any,
) -> DemoResult:
    """Distil for a few hundred iterations and measure bicubic, the student before and after,
    the teacher and the shipped student on one held-out set."""
    from dukd_cli.distill import ddp
    from dukd_cli.distill.resolve import resolve
    from dukd_cli.distill.trainer import Trainer
    from dukd_cli.models.factory import build, count_parameters, resolve_spec

    say = on_status or (lambda _m: None)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    cfg = demo_config(**config_kwargs)
    res = resolve(cfg)
    device = cfg.train.device
    if run_dir.exists() and any(run_dir.iterdir()):
        raise DukdError(f"{run_dir} already exists and is not empty; pass another --out")
    bench = holdout_set(run_dir, data_dir)

    # The student exactly as the trainer will initialise it (same seed, same spec).
    torch.manual_seed(int(cfg.train.seed))
    before = build(res.student)
    n_student = count_parameters(before)
    say(f"measuring bicubic and the untrained student on {bench.name}")
    rows = [DemoRow("bicubic", "MATLAB imresize", None, *_measure("bicubic", bench, device))]
    rows.append(
        DemoRow("student, before", "random initialisation", n_student, *_measure(before, bench, device))
    )
    del before

    t0 = time.perf_counter()
    trainer = Trainer(res, run_dir)
    try:
        fit = trainer.fit()
    finally:
        ddp.shutdown()
    seconds = time.perf_counter() - t0
    result = DemoResult(
        run_dir,
        bench.name,
        fit.iteration,
        seconds,
        rows,
        interrupted=fit.interrupted,
        exit_code=fit.exit_code,
    )
    if fit.interrupted:
        return result

    after = build(resolve_spec(DEFAULT_STUDENT, SCALE, weights=str(RunPaths(run_dir).student)))
    rows.append(
        DemoRow(
            "student, after",
            f"{fit.iteration} DUKD iteration{'' if fit.iteration == 1 else 's'} ({seconds:.0f} s)",
            n_student,
            *_measure(after, bench, device),
        )
    )
    teacher = trainer.session.teacher
    rows.append(
        DemoRow("teacher", DEFAULT_TEACHER, count_parameters(teacher), *_measure(teacher, bench, device))
    )
    shipped = build(resolve_spec(DEFAULT_STUDENT, SCALE, pretrained=True))
    rows.append(
        DemoRow(
            "shipped student",
            f"{DEFAULT_STUDENT} (full recipe)",
            n_student,
            *_measure(shipped, bench, device),
        )
    )
    return result
