"""``dukd distill``: train a small student from a big teacher (DUKD and its baselines)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from dukd_cli.commands._common import console, model_args, warn
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

    out.update(
        _teacher_overrides(
            opts.pop("teacher", None),
            opts.pop("teacher_weights", None),
            opts.pop("teacher_arg", None),
            _absolute,
        )
    )
    for name, value in opts.items():
        if value is None:
            continue
        if name == "data":
            if value:
                out["data.paths"] = [_absolute(str(v)) for v in value]
        elif name == "student" and Path(str(value)).expanduser().is_file():
            out[keymap[name]] = _absolute(str(value))  # a checkpoint file as the model
        elif name in ("student_weights", "data_dir", "cache_dir", "csd_vgg_weights"):
            out[keymap[name]] = _absolute(str(value))
        elif name == "feature_layers":
            out["method.feature_layers"] = [v.strip() for v in str(value).split(",") if v.strip()]
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


def _teacher_overrides(names, weights, args, absolute) -> dict[str, Any]:
    """``--teacher`` (repeatable), ``--teacher-weights`` (once per teacher, in order; ``-``: that
    teacher's default) and ``--teacher-arg [N:]KEY=VALUE`` (teacher N, default the first) as
    configuration keys: the first teacher in ``teacher.*``, the others in ``teacher.extra``."""

    def as_list(v) -> list:
        return [v] if isinstance(v, (str, Path)) else list(v or [])

    names, weights, args = as_list(names), as_list(weights), as_list(args)
    count = max(len(names), 1)
    if weights and len(weights) != count:
        raise DukdError(
            f"--teacher-weights is given {len(weights)} times for {count} teacher(s); give it once per "
            "--teacher, in order ('-' keeps that teacher's default weights)"
        )
    per: list[list[str]] = [[] for _ in range(count)]
    for item in args:
        head, sep, rest = str(item).partition(":")
        if sep and head.isdigit() and "=" not in head:
            k = int(head)
            if not 1 <= k <= count:
                raise DukdError(f"--teacher-arg {item}: there is no teacher {k} (teachers: 1 to {count})")
            per[k - 1].append(rest)
        else:
            per[0].append(item)

    def name_of(v: str) -> str:
        return absolute(v) if Path(v).expanduser().exists() else v  # a file or run directory: absolute

    def weights_of(k: int) -> str | None:
        w = weights[k] if weights else None
        return None if w in (None, "-") else absolute(str(w))

    out: dict[str, Any] = {}
    if names:
        out["teacher.name"] = name_of(str(names[0]))
        out["teacher.extra"] = [
            {"name": name_of(str(n)), "weights": weights_of(k), "args": model_args(per[k])}
            for k, n in enumerate(names[1:], start=1)
        ]
    if weights_of(0) is not None:
        out["teacher.weights"] = weights_of(0)
    if per[0]:
        out["teacher.args"] = model_args(per[0])
    return out


def _default_out(cfg) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    s = Path(str(cfg.student.name)).name
    return Path("runs") / f"{cfg.method.name}-{s}-x{cfg.student.scale}-{stamp}"


def distill_cmd(
    teacher: list[str] = typer.Option(
        None,
        "--teacher",
        "-t",
        help="Teacher: preset, architecture, exported model or run directory, or a checkpoint file of any "
        "architecture the zoo or spandrel detects (e.g. RRDB_x4.pth). Repeatable (kd, dukd): several "
        "teachers combined by --teacher-mix.",
    ),
    teacher_weights: list[str] = typer.Option(
        None,
        "--teacher-weights",
        help="Teacher weights: file, hf://OWNER/REPO/FILE@REV, or preset. Default: the preset's declared source. "
        "With several --teacher: once per teacher, in order ('-' keeps that teacher's default).",
    ),
    teacher_arg: list[str] = typer.Option(
        None,
        "--teacher-arg",
        help="Teacher constructor argument key=value (repeatable); N:key=value for the N-th --teacher.",
    ),
    teacher_mix: str = typer.Option(
        None,
        "--teacher-mix",
        help="Several teachers: 'mean' (default: the mean of their outputs) or 'best' (per sample, the teacher "
        "closest to HR on the LR patch; it also labels that sample's upcycled inputs).",
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
        None,
        "--method",
        "-m",
        help="scratch | kd | dukd | fakd | fitnet | at | fsp | csd, or a plugin's method. Default: dukd.",
    ),
    affinity: str = typer.Option(
        None, "--affinity", help="fakd: spatial (default; FAKD's own), channel or batch affinity."
    ),
    feature_loss: str = typer.Option(
        None,
        "--feature-loss",
        help="dukd: add a feature term on the original pair: at, fitnet, fsp, spatial (fakd), channel, batch.",
    ),
    feature_weight: float = typer.Option(
        None, "--feature-weight", help="Weight of the feature term (fakd, fitnet, at, fsp, dukd; default 10)."
    ),
    feature_layers: str = typer.Option(
        None,
        "--feature-layers",
        help="Modules to read features from, comma-separated (e.g. layers.0,layers.2,conv_after_body); default: "
        "the release's positions for EDSR/RCAN, else the network's feature_taps().",
    ),
    feature_grad: bool = typer.Option(
        None,
        "--feature-grad/--no-feature-grad",
        help="Fix: the feature term trains the student (authors: detached, as released).",
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
    csd_width: float = typer.Option(
        None,
        "--csd-width",
        help="csd: the student's fraction of the trained network's channels (default 0.25, the paper's EDSR "
        "rows); --student names the student, csd trains a network 1/width times wider and ships its first channels.",
    ),
    csd_vgg_weights: str = typer.Option(
        None,
        "--csd-vgg-weights",
        help="csd: VGG-19 weights for the contrastive term (file or source; default torchvision's "
        "vgg19-dcbb9e9d.pth, fetched once and hash-checked).",
    ),
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
    quantize: str = typer.Option(
        None,
        "--quantize",
        help="int8: quantization-aware training. The student (from --init-from, --student-weights or its "
        "preset's weights) trains with int8-simulated weights and activations, labelled by the fp32 teacher "
        "(default: the fp32 student itself); student.safetensors stays fp32 for the int8 ONNX export.",
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
        "ending with a before/after table (minutes on a laptop CPU). Takes --iters (default 200), "
        "--batch-size, --lr, --seed, --device, --precision, --out, --data-dir (Set5 for the table), --cache-dir.",
    ),
) -> None:
    """Distil a student from a teacher: DUKD (default), KD, FAKD, FitNet, AT, FSP, or train from scratch.

    Example: dukd distill --teacher edsr-l --student edsr-s --scale 4 --data DIV2K/

    RUN_DIR gets config.toml, student.safetensors (EMA weights), student_best.safetensors, state.pt
    (resume) and metrics.jsonl. Ctrl-C or SIGTERM saves and exits (130, 143); continue with --resume
    RUN_DIR. Several GPUs:
    torchrun --nproc_per_node=N -m dukd_cli distill ...
    """
    from dukd_cli.distill import config as cfgmod
    from dukd_cli.distill import validate
    from dukd_cli.distill.resolve import resolve
    from dukd_cli.distill.trainer import Trainer
    from dukd_cli.runtime import threads as threads_mod

    overrides = _overrides(
        teacher=teacher,
        teacher_weights=teacher_weights,
        teacher_arg=teacher_arg,
        teacher_mix=teacher_mix,
        affinity=affinity,
        feature_loss=feature_loss,
        feature_weight=feature_weight,
        feature_layers=feature_layers,
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
        csd_width=csd_width,
        csd_vgg_weights=csd_vgg_weights,
        quantize=quantize,
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
        "--teacher-mix": teacher_mix,
        "--affinity": affinity,
        "--feature-loss": feature_loss,
        "--feature-weight": feature_weight,
        "--feature-layers": feature_layers,
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
        "--csd-width": csd_width,
        "--csd-vgg-weights": csd_vgg_weights,
        "--data": data,
        "--patch-size": patch_size,
        "--milestones": milestones,
        "--gamma": gamma,
        "--ema-decay": ema_decay,
        "--grad-clip": grad_clip,
        "--quantize": quantize,
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
            feature_grad=feature_grad,
            init_from=init_from,
        )
    )
    given = [k for k, v in other.items() if v not in (None, [], ())]
    csd_given = [k for k in ("--csd-width", "--csd-vgg-weights") if k in given]
    if csd_given and method is not None and method != "csd":
        raise DukdError(
            f"{' and '.join(csd_given)} apply to --method csd only (this run is --method {method})"
        )
    if demo and given:
        raise DukdError(
            f"--demo trains the shipped pair with fixed settings; it does not take {', '.join(given)} "
            "(drop --demo for a real run)"
        )
    if demo:
        _run_demo(out, data_dir, demo_opts)
        return
    if not given:  # nothing to distil: say what to give (the demo takes minutes; never start it unasked)
        raise DukdError(
            "nothing to distil: give --teacher, --student and --data (see 'dukd distill --help'), "
            "or run 'dukd distill --demo' for a short demo on the shipped models"
        )

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
            feature_grad,
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
    _fit(Trainer(res, run_dir))  # resolved once, above: the trainer does not resolve again


def _fix_options(**opts: Any) -> dict[str, Any]:
    """The recipe options as the --demo refusal names them."""
    return {"--" + k.replace("_", "-"): v for k, v in opts.items()}


def _recipe_overrides(
    recipe,
    true_inverse,
    eval_teacher,
    clamp_zoom_out,
    ema_warmup,
    zoom_out_aug,
    init_from,
    student_weights,
    feature_grad=None,
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
        ("method.feature_grad", feature_grad),
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


def _run_demo(out, data_dir, opts: dict[str, Any]) -> None:
    from dukd_cli.commands.zoo import format_params
    from dukd_cli.distill.demo import DEMO_ITERS, run_demo

    kwargs = {k: v for k, v in opts.items() if v is not None}
    kwargs.setdefault("device", "cpu")
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
    from dukd_cli.distill.plancheck import check_teacher_file, size_warning
    from dukd_cli.distill.resolve import parameter_counts

    checked = check_teacher_file(res.teacher)  # a file that does not fit fails here, as the run would
    counts = parameter_counts(res)
    header = f"dukd distill --dry-run: resolved configuration\nrun directory: {run_dir}"
    console.print(cfgmod.to_toml(res.cfg, header), markup=False, highlight=False, soft_wrap=True)
    table = Table(title="models", title_justify="left")
    table.add_column("role", style="bold")
    table.add_column("name")
    table.add_column("architecture")
    table.add_column("weights")
    table.add_column("parameters", justify="right")
    teachers = res.teachers or ([res.teacher] if res.teacher is not None else [])
    roles = [("teacher" if k == 1 else f"teacher {k}", spec) for k, spec in enumerate(teachers, start=1)]
    if len(teachers) > 1:
        console.print(f"teachers: {len(teachers)}, combined by --teacher-mix {res.cfg.teacher.mix}")
    for role, spec in (*roles, ("student", res.student)):
        if spec is None:
            continue
        n = counts[role]
        table.add_row(role, spec.name, spec.arch, _weights_cell(role, spec), f"{format_params(n)} ({n:,})")
    console.print(table)
    trained_spec = getattr(res.method_cls, "trained_spec", None)
    trained = trained_spec(res.student, res.cfg.method.options) if trained_spec else res.student
    if trained is not res.student:  # e.g. csd: a wider network is trained, the student is part of it
        from dukd_cli.models.factory import count_parameters_of

        n = count_parameters_of(trained.arch, trained.scale, trained.kwargs)
        args = ", ".join(f"{k}={v}" for k, v in trained.kwargs.items())
        console.print(
            f"trained network: {trained.arch} ({args}), {format_params(n)} ({n:,}); "
            f"student.safetensors holds the student above, a part of it",
            markup=False,
            highlight=False,
        )
    from dukd_cli.distill.provenance import data_lines, plan_lines

    # teacher file and data: where they come from (nothing is downloaded); then the recipe
    if res.teacher is not None and not res.teacher.weights:
        lines = ["teacher file: none declared: pass --teacher-weights FILE", *data_lines(res.cfg)]
    else:
        lines = plan_lines(res)
    at = len(lines) - len(data_lines(res.cfg))  # the other teachers' files after the first one's
    lines[at:at] = _other_teacher_lines(res)
    from dukd_cli.distill.qat import plan_line

    qat_line = plan_line(res.cfg)
    for line in [*lines, *_recipe_lines(res), *([qat_line] if qat_line else [])]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if checked:
        console.print(
            f"teacher file checked: {res.teacher.weights} loads into {res.teacher.name}",
            markup=False,
            soft_wrap=True,
        )
    if counts.get("teacher") and not qat_line:
        console.print(
            f"compression: the student has {counts['student'] / counts['teacher']:.1%} of the teacher's parameters"
        )
    larger = size_warning(counts)
    if larger:
        warn(escape(larger))


def _other_teacher_lines(res) -> list[str]:
    """The files of teachers 2, 3, ... (as the first one's line: where they come from, nothing downloaded)."""
    from types import SimpleNamespace

    from dukd_cli.distill.provenance import teacher_lines

    out: list[str] = []
    for k, spec in enumerate(res.teachers[1:], start=2):
        more = (
            teacher_lines(SimpleNamespace(teacher=spec)) if spec.weights else ["teacher file: none declared"]
        )
        out += [ln.replace("teacher file:", f"teacher {k} file:", 1) for ln in more]
    return out


def _weights_cell(role: str, spec) -> str:
    if spec.weights:
        return str(spec.weights)
    return "none declared: pass --teacher-weights FILE" if role.startswith("teacher") else "(random init)"


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
