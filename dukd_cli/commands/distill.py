"""``dukd distill``: train a small student from a big teacher (DUKD and its baselines)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from dukd_cli.commands._common import console, model_args
from dukd_cli.errors import DukdError

UPDATE_HELP = (
    "How each iteration updates the student: 'two-step' (default) takes one optimiser step on "
    "L_rec + L_kd, then a second on the upcycled terms after a fresh student forward, without zeroing "
    "the gradients in between (the second step applies both): the update of the authors' released code. "
    "'single' sums every term into one loss and takes one step (the paper's Eq. 4; fuses the LR and "
    "zoom-in forwards). Methods with one loss group (scratch, kd, fakd) are the same under both."
)
RECIPE_HELP = (
    "'dukd' (default): the released iteration with our fixes (true inverses, eval-mode teacher, clamped "
    "zoom-out, EMA warm-up, bf16 autocast on CUDA); 'authors': the released iteration as released (fp32). "
    "Each fix has its own option (--true-inverse, --eval-teacher, --clamp-zoom-out, --ema-warmup, "
    "--precision); an option given explicitly wins over the recipe. --dry-run lists the fixes in force."
)
ZOOM_OUT_HELP = (
    "Use DUKD's zoom-out input (the LR patch shrunk by 1/s, labelled by the teacher, ground truth the LR patch). "
    "Default as released: on, except for RCAN x2/x4 and SwinIR-family students (for SwinIR a 48 px patch "
    "zoomed out at x4 is 12 px, which the 8 px attention windows pad to 16)."
)


def _split_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise DukdError(f"--milestones must be comma-separated integers, got '{text}'") from None


def _overrides(**opts: Any) -> dict[str, Any]:
    """Map CLI options (None: not given) to dotted configuration keys."""
    from dukd_cli.distill.validate import KEYMAP as keymap

    out: dict[str, Any] = {}

    def _absolute(v: str) -> str:
        # Local paths are recorded absolute, so --resume works from any directory.
        return str(Path(v).expanduser().resolve()) if v != "builtin" and Path(v).expanduser().exists() else v

    for name, value in opts.items():
        if value is None:
            continue
        if name == "data":
            if value:
                out["data.paths"] = [_absolute(str(v)) for v in value]
        elif name in ("teacher", "student") and Path(str(value)).expanduser().is_file():
            out[keymap[name]] = _absolute(str(value))  # a checkpoint file as the model
        elif name in ("teacher_weights", "student_weights", "data_dir", "cache_dir"):
            out[keymap[name]] = _absolute(str(value))
        elif name == "teacher_arg":
            if value:
                out["teacher.args"] = model_args(value)
        elif name == "student_arg":
            if value:
                out["student.args"] = model_args(value)
        elif name == "method_opt":
            for k, v in model_args(value).items():
                out[f"method.{k}"] = v
        elif name == "milestones":
            out["train.milestones"] = _split_ints(value)
        elif name == "non_strict":
            if value:
                out["student.strict"] = False
        else:
            out[keymap[name]] = value
    return out


def _default_out(cfg) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    s = Path(str(cfg.student.name)).name
    return Path("runs") / f"{cfg.method.name}-{s}-x{cfg.student.scale}-{stamp}"


def distill_cmd(
    teacher: str = typer.Option(
        None,
        "--teacher",
        "-t",
        help="Teacher: preset, architecture, exported model directory, or a checkpoint file of any architecture "
        "the zoo or spandrel detects (e.g. RRDB_x4.pth).",
    ),
    teacher_weights: str = typer.Option(
        None,
        "--teacher-weights",
        help="Teacher weights: file, hf://OWNER/REPO/FILE@REV, or preset. Default: the preset's declared source.",
    ),
    teacher_arg: list[str] = typer.Option(
        None, "--teacher-arg", help="Teacher constructor argument key=value (repeatable)."
    ),
    student: str = typer.Option(
        None, "--student", "-s", help="Student: preset, architecture or exported model directory."
    ),
    student_weights: str = typer.Option(
        None, "--student-weights", help="Initialise the student from these weights."
    ),
    student_arg: list[str] = typer.Option(
        None, "--student-arg", help="Student constructor argument key=value (repeatable)."
    ),
    non_strict: bool = typer.Option(
        False,
        "--non-strict",
        help="Load --student-weights non-strictly (e.g. an x2 student initialising an x4 one).",
    ),
    scale: int = typer.Option(None, "--scale", help="Upscaling factor (teacher and student must share it)."),
    method: str = typer.Option(
        None, "--method", "-m", help="scratch | kd | dukd | fakd, or a plugin's method. Default: dukd."
    ),
    update: str = typer.Option(None, "--update", help=UPDATE_HELP),
    recipe: str = typer.Option(None, "--recipe", help=RECIPE_HELP),
    true_inverse: bool = typer.Option(
        None,
        "--true-inverse/--no-true-inverse",
        help="dukd fix: D^-1 = true inverses in reverse order (authors: the same operations again).",
    ),
    eval_teacher: bool = typer.Option(
        None,
        "--eval-teacher/--no-eval-teacher",
        help="Fix: the teacher in eval mode (authors: train mode, under no_grad).",
    ),
    clamp_zoom_out: bool = typer.Option(
        None,
        "--clamp-zoom-out/--no-clamp-zoom-out",
        help="dukd fix: clamp the zoom-out input to [0, 1] (authors: unclamped).",
    ),
    ema_warmup: bool = typer.Option(
        None,
        "--ema-warmup/--no-ema-warmup",
        help="Fix: EMA decay min(d, (1+t)/(10+t)) (authors: d from iteration 1).",
    ),
    zoom_out_aug: bool = typer.Option(
        None,
        "--zoom-out-aug/--no-zoom-out-aug",
        help="dukd extension: augment the zoom-out input too (default off, as released).",
    ),
    init_from: Path = typer.Option(
        None,
        "--init-from",
        help="Start the student from another run's EMA student (RUN_DIR/student.safetensors), non-strictly (e.g. x2 -> x4).",
    ),
    aug_prob: float = typer.Option(
        None,
        "--aug-prob",
        help="dukd: per-operation per-sample probability of the invertible augmentations (default 0.3; 0 for RCAN x4).",
    ),
    w_pix: float = typer.Option(
        None,
        "--w-pix",
        help="Weight of the ground-truth terms (dukd default per student family: 5 EDSR/SwinIR, 1 RCAN x2/x4, 2 RCAN x3; else 1).",
    ),
    w_kd: float = typer.Option(None, "--w-kd", help="Weight of the teacher terms (kd, dukd; default 1)."),
    zoom_in_tiles: int = typer.Option(
        None,
        "--zoom-in-tiles",
        help="dukd: zoom-in tiles per sample (default 2 for EDSR x2, else 1; 0 disables).",
    ),
    zoom_out: bool = typer.Option(None, "--zoom-out/--no-zoom-out", help=ZOOM_OUT_HELP),
    method_opt: list[str] = typer.Option(
        None, "--method-opt", help="Any method option key=value (repeatable), e.g. max_side=48 for fakd."
    ),
    data: list[str] = typer.Option(
        None,
        "--data",
        "-d",
        help="Training data (repeatable): 'div2k' (DIV2K's 800 images, fetched once; the default with a teacher), "
        "HR folder, DIV2K folder, HR/+LR/ folder, or 'builtin' (scikit-image's photos).",
    ),
    iters: int = typer.Option(
        None, "--iters", help="Total iterations (default 250000). On --resume it may be raised."
    ),
    batch_size: int = typer.Option(
        None, "--batch-size", help="Patches per iteration per process (default 16)."
    ),
    patch_size: int = typer.Option(None, "--patch-size", help="LR patch side in pixels (default 48)."),
    seed: int = typer.Option(
        None, "--seed", help="Random seed (default 0); runs on the CPU are bit-reproducible."
    ),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4)."),
    milestones: str = typer.Option(
        None, "--milestones", help="Iterations where the lr is multiplied by --gamma (default 100000,200000)."
    ),
    gamma: float = typer.Option(
        None, "--gamma", help="Learning-rate decay factor at each milestone (default 0.1)."
    ),
    ema_decay: float = typer.Option(
        None, "--ema-decay", help="Decay of the student's EMA (default 0.999, with warm-up)."
    ),
    grad_clip: float = typer.Option(
        None, "--grad-clip", help="Clip the gradient norm to this value (default 0: off)."
    ),
    precision: str = typer.Option(
        None, "--precision", help="auto (bf16 autocast on CUDA, fp32 elsewhere), bf16 or fp32."
    ),
    channels_last: bool = typer.Option(
        None,
        "--channels-last/--no-channels-last",
        help="Channels-last (NHWC) memory format for the networks and batches: faster convolutions on most "
        "CPUs and GPUs; same numbers up to rounding (default off).",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Run directory (default runs/<method>-<student>-x<scale>-<time>)."
    ),
    resume: Path = typer.Option(
        None, "--resume", help="Continue the run in this directory (options given again must agree)."
    ),
    val_every: int = typer.Option(
        None,
        "--val-every",
        help="Validate the EMA student every N iterations and at the end (default 5000; 0: never).",
    ),
    val_bench: str = typer.Option(None, "--val-bench", help="Benchmark for validation (default set5)."),
    val_max_images: int = typer.Option(
        None, "--val-max-images", help="Validate on at most this many images."
    ),
    data_dir: str = typer.Option(
        None, "--data-dir", help="Folder holding the benchmark sets (default: $DUKD_DATA, then the cache)."
    ),
    device: str = typer.Option(
        None,
        "--device",
        help="auto, cpu, cuda, cuda:N (default auto). Under torchrun each rank uses cuda:LOCAL_RANK.",
    ),
    workers: int = typer.Option(
        None, "--workers", help="Data worker processes (default 0 on the CPU, min(8, cores/2) on CUDA)."
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        help="CPU threads for the whole process (torch, resizing, minus one per --workers process); "
        "default and maximum: the cores this process may use (CPU affinity, cgroup quota).",
    ),
    compile: bool = typer.Option(
        None,
        "--compile/--no-compile",
        help="torch.compile the student and the teacher (meant for CUDA; the first iterations compile; "
        "checkpoints, EMA and --resume are unaffected; default off).",
    ),
    cache_dir: str = typer.Option(
        None,
        "--cache-dir",
        help="Cache of decoded training images and LR images (default $DUKD_CACHE or ~/.cache/dukd).",
    ),
    log_every: int = typer.Option(
        None, "--log-every", help="Log to metrics.jsonl and the console every N iterations (default 100)."
    ),
    save_every: int = typer.Option(
        None, "--save-every", help="Checkpoint every N iterations (default 1000), and at the end."
    ),
    save_every_min: float = typer.Option(
        None,
        "--save-every-min",
        help="Also checkpoint when this many minutes passed since the last checkpoint (default 0: off).",
    ),
    tensorboard: bool = typer.Option(
        None,
        "--tensorboard/--no-tensorboard",
        help="Also log to RUN_DIR/tensorboard (pip install 'dukd\\[tensorboard]').",
    ),
    config: Path = typer.Option(
        None,
        "--config",
        help="TOML configuration file (same tables as RUN_DIR/config.toml); options override it.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the resolved configuration and parameter counts; train nothing."
    ),
    demo: bool = typer.Option(
        False,
        "--demo",
        help="A short CPU distillation from the shipped teacher (dukd-teacher-x4) on the built-in photos, "
        "ending with a before/after table; also what a bare 'dukd distill' runs. Takes --iters (default 200), "
        "--batch-size, --lr, --seed, --device, --precision, --out, --data-dir (Set5 for the table), --cache-dir.",
    ),
) -> None:
    """Distil a student from a teacher: DUKD (default), KD, FAKD, or train from scratch.

    Example: dukd distill --teacher edsr-l --student edsr-s --scale 4 --data DIV2K/

    RUN_DIR gets config.toml, student.safetensors (EMA weights), student_best.safetensors, state.pt
    (resume) and metrics.jsonl. Ctrl-C or SIGTERM saves and exits (130, 143); continue with --resume
    RUN_DIR. Several GPUs:
    torchrun --nproc_per_node=N -m dukd_cli distill ...
    """
    from dukd_cli import threads as threads_mod
    from dukd_cli.distill import config as cfgmod
    from dukd_cli.distill import validate
    from dukd_cli.distill.trainer import Trainer, resolve

    overrides = _overrides(
        teacher=teacher,
        teacher_weights=teacher_weights,
        teacher_arg=teacher_arg,
        student=student,
        student_weights=student_weights,
        student_arg=student_arg,
        non_strict=non_strict,
        scale=scale,
        method=method,
        update=update,
        aug_prob=aug_prob,
        w_pix=w_pix,
        w_kd=w_kd,
        zoom_in_tiles=zoom_in_tiles,
        zoom_out=zoom_out,
        method_opt=method_opt,
        data=data,
        iters=iters,
        batch_size=batch_size,
        patch_size=patch_size,
        seed=seed,
        lr=lr,
        milestones=milestones,
        gamma=gamma,
        ema_decay=ema_decay,
        grad_clip=grad_clip,
        precision=precision,
        channels_last=channels_last,
        compile=compile,
        device=device,
        workers=workers,
        cache_dir=cache_dir,
        val_every=val_every,
        val_bench=val_bench,
        val_max_images=val_max_images,
        data_dir=data_dir,
        log_every=log_every,
        save_every=save_every,
        save_every_min=save_every_min,
        tensorboard=tensorboard,
    )
    validate.check_options(overrides)  # every value once, before anything else happens
    budget = threads_mod.apply(threads_mod.plan(threads, workers=workers or 0))
    if budget.note:
        console.print(f"[yellow]note:[/] {budget.note}")
    demo_opts = {
        "iters": iters,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": device,
        "precision": precision,
        "channels_last": channels_last,
        "cache_dir": cache_dir,
        "workers": workers,
        "log_every": log_every,
    }
    other = {
        "--teacher": teacher,
        "--teacher-weights": teacher_weights,
        "--teacher-arg": teacher_arg,
        "--student": student,
        "--student-weights": student_weights,
        "--student-arg": student_arg,
        "--non-strict": non_strict or None,
        "--scale": scale,
        "--method": method,
        "--update": update,
        "--aug-prob": aug_prob,
        "--w-pix": w_pix,
        "--w-kd": w_kd,
        "--zoom-in-tiles": zoom_in_tiles,
        "--zoom-out": zoom_out,
        "--method-opt": method_opt,
        "--data": data,
        "--patch-size": patch_size,
        "--milestones": milestones,
        "--gamma": gamma,
        "--ema-decay": ema_decay,
        "--grad-clip": grad_clip,
        "--resume": resume,
        "--val-every": val_every,
        "--val-bench": val_bench,
        "--val-max-images": val_max_images,
        "--save-every": save_every,
        "--save-every-min": save_every_min,
        "--tensorboard": tensorboard,
        "--compile": compile,
        "--config": config,
        "--dry-run": dry_run or None,
    }
    other.update(
        _fix_options(
            recipe=recipe,
            true_inverse=true_inverse,
            eval_teacher=eval_teacher,
            clamp_zoom_out=clamp_zoom_out,
            ema_warmup=ema_warmup,
            zoom_out_aug=zoom_out_aug,
            init_from=init_from,
        )
    )
    given = [k for k, v in other.items() if v not in (None, [], ())]
    if demo and given:
        raise DukdError(
            f"--demo trains the shipped pair with fixed settings; it does not take {', '.join(given)} "
            "(drop --demo for a real run)"
        )
    if demo or not given:
        _run_demo(out, data_dir, demo_opts, implicit=not demo)
        return

    overrides.update(
        _recipe_overrides(
            recipe,
            true_inverse,
            eval_teacher,
            clamp_zoom_out,
            ema_warmup,
            zoom_out_aug,
            init_from,
            student_weights,
        )
    )
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise DukdError(
                "--resume continues a run in its own directory; drop --out (or give the same one)"
            )
        if config is not None:
            raise DukdError("--resume reads the run's own config.toml; drop --config")
        trainer = Trainer(cfgmod.DistillConfig(), resume, resume=True, overrides=overrides)
        if dry_run:
            trainer.release()
            _print_plan(resolve(trainer.cfg, plan=True), resume)
            return
        _fit(trainer)
        return

    cfg = cfgmod.load(config) if config is not None else cfgmod.DistillConfig()
    for key, value in overrides.items():
        cfg.set(key, value)
    from dukd_cli.distill.provenance import apply_data_defaults

    config_data = config is not None and "paths" in cfgmod.load_toml(config).get("data", {})
    apply_data_defaults(cfg, data_given=bool(data) or config_data)  # a teacher and no --data: DIV2K
    res = resolve(cfg, plan=dry_run)
    if res.teacher is None and cfg.teacher.name:
        console.print(
            f"[yellow]note:[/] method '{cfg.method.name}' trains without a teacher; --teacher serves "
            "only to log the teacher agreement at validation (for dukd report)"
        )
    run_dir = out if out is not None else _default_out(res.cfg)
    if dry_run:
        _print_plan(res, run_dir)
        return
    _fit(Trainer(cfg, run_dir))


def _fix_options(**opts: Any) -> dict[str, Any]:
    """The recipe options as the --demo refusal names them."""
    return {"--" + k.replace("_", "-"): v for k, v in opts.items()}


def _recipe_overrides(
    recipe, true_inverse, eval_teacher, clamp_zoom_out, ema_warmup, zoom_out_aug, init_from, student_weights
) -> dict[str, Any]:
    """Configuration keys of the recipe options (None: not given) and of --init-from."""
    out: dict[str, Any] = {}
    for key, value in (
        ("method.recipe", recipe),
        ("method.true_inverse", true_inverse),
        ("train.eval_teacher", eval_teacher),
        ("method.clamp_zoom_out", clamp_zoom_out),
        ("train.ema_warmup", ema_warmup),
        ("method.zoom_out_aug", zoom_out_aug),
    ):
        if value is not None:
            out[key] = value
    if init_from is not None:
        from dukd_cli.distill.recipes import init_weights

        if student_weights is not None:
            raise DukdError("--init-from and --student-weights both initialise the student; give one")
        out["student.weights"] = init_weights(init_from)
        out["student.strict"] = False
    return out


def _run_demo(out, data_dir, opts: dict[str, Any], implicit: bool) -> None:
    from dukd_cli.commands.zoo import format_params
    from dukd_cli.distill.demo import DEMO_ITERS, run_demo

    kwargs = {k: v for k, v in opts.items() if v is not None}
    kwargs.setdefault("device", "cpu")
    if implicit:
        console.print(
            "[bold]dukd distill demo[/]: no --student, --teacher or --data given, so this is the built-in demo "
            "(see 'dukd distill --help' for real runs)."
        )
    console.print(
        f"Distilling the shipped teacher into a fresh 0.16 M-parameter student with DUKD: "
        f"{kwargs.get('iters', DEMO_ITERS)} iterations on scikit-image's sample photos, on {kwargs['device']}."
    )
    result = run_demo(out, data_dir=data_dir, on_status=lambda m: console.print(f"[dim]{m}[/]"), **kwargs)
    if result.interrupted:
        console.print(
            f"[yellow]interrupted[/] after {result.iterations} iterations; the run is in {result.run_dir}"
        )
        raise typer.Exit(result.exit_code or 130)
    table = Table(title=f"x4 on {result.bench} (PSNR/SSIM on Y, as dukd evaluate)", title_justify="left")
    table.add_column("model", style="bold")
    table.add_column("what")
    table.add_column("params", justify="right")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    for r in result.rows:
        params = format_params(r.params) if r.params else "-"
        table.add_row(r.name, r.detail, params, f"{r.psnr:.2f}", f"{r.ssim:.4f}")
    console.print(table)
    console.print(
        f"run directory: {result.run_dir} (student.safetensors; config.toml reruns it with "
        f"'dukd distill --config {result.run_dir / 'config.toml'} --out NEW_DIR')"
    )


def _print_plan(res, run_dir) -> None:
    from dukd_cli.commands.zoo import format_params
    from dukd_cli.distill import config as cfgmod
    from dukd_cli.distill.trainer import parameter_counts

    counts = parameter_counts(res)
    header = f"dukd distill --dry-run: resolved configuration\nrun directory: {run_dir}"
    console.print(cfgmod.to_toml(res.cfg, header), markup=False, highlight=False, soft_wrap=True)
    table = Table(title="models", title_justify="left")
    table.add_column("role", style="bold")
    table.add_column("name")
    table.add_column("architecture")
    table.add_column("weights")
    table.add_column("parameters", justify="right")
    for role, spec in (("teacher", res.teacher), ("student", res.student)):
        if spec is None:
            continue
        n = counts[role]
        table.add_row(role, spec.name, spec.arch, _weights_cell(role, spec), f"{format_params(n)} ({n:,})")
    console.print(table)
    from dukd_cli.distill.provenance import data_lines, plan_lines

    # teacher file and data: where they come from (nothing is downloaded); then the recipe
    if res.teacher is not None and not res.teacher.weights:
        lines = ["teacher file: none declared: pass --teacher-weights FILE", *data_lines(res.cfg)]
    else:
        lines = plan_lines(res)
    for line in [*lines, *_recipe_lines(res)]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if counts.get("teacher"):
        console.print(
            f"compression: the student has {counts['student'] / counts['teacher']:.1%} of the teacher's parameters"
        )


def _weights_cell(role: str, spec) -> str:
    if spec.weights:
        return str(spec.weights)
    return "none declared: pass --teacher-weights FILE" if role == "teacher" else "(random init)"


def _recipe_lines(res) -> list[str]:
    from dukd_cli.distill.recipes import describe, method_summary

    lines = describe(res.cfg, getattr(res.method_cls, "options", {}))
    summary = method_summary(res.cfg)
    return lines + ([summary] if summary else [])


def _fit(trainer) -> None:
    from dukd_cli.distill import ddp

    try:
        result = trainer.fit()
    finally:
        ddp.shutdown()
    _report(result)


def _report(result) -> None:
    if not result.main:
        if result.interrupted:
            raise typer.Exit(result.exit_code)
        return
    if not result.interrupted:
        msg = f"[green]done:[/] {result.iteration} iterations; student weights in {result.run_dir / 'student.safetensors'}"
        if result.last_val:
            msg += f"; {result.last_val['val_bench']} {result.last_val['val_psnr']:.2f} dB (EMA)"
        console.print(msg)
    if result.interrupted:
        raise typer.Exit(result.exit_code)
