"""``dukd distill``'s options, each declared once: its flags, its type, its help, the configuration
key it sets, and whether ``--demo`` takes it.

Everything else is derived from :data:`TABLE`: the command's parameters (``dukd_cli.commands.distill``
builds its Typer signature from it), :data:`dukd_cli.distill.validate.KEYMAP` (option -> key, and
so the option named in messages), the ``--demo`` refusal, the configuration overrides
(:func:`to_overrides`), the flags ``--dry-run`` names for the recipe's fixes
(``dukd_cli.distill.recipes``) and the options ``dukd study`` shares with ``dukd distill``
(``dukd_cli.commands.study`` takes them from here, with :attr:`Opt.help` and without
:attr:`Opt.distill_only`). Adding an option is one :class:`Opt` here (plus the configuration field,
when it is a new one). No Typer here: the library stays importable without the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError
from dukd_cli.rundir import RunPaths


@dataclass(frozen=True)
class Opt:
    """One option of ``dukd distill``."""

    name: str  #: the Python parameter name (``teacher_weights``)
    flags: tuple[str, ...]  #: as Typer takes them: ``("--teacher", "-t")``, ``("--zoom-out/--no-zoom-out",)``
    help: str  #: what the option means in every command that takes it (``dukd study`` takes some)
    type: type = str  #: str, int, float, bool or Path
    key: str | None = None  #: the configuration key it sets (None: it sets none, or several: see ``kind``)
    kind: str = ""  #: how the value becomes configuration ("" = as given; see :data:`_CONVERT`)
    many: bool = False  #: repeatable (a list)
    default: Any = None  #: None: not given (the configuration's value applies)
    demo: bool = False  #: ``--demo`` takes it (every other option given with --demo is refused)
    #: what holds for ``dukd distill``'s own run only (several teachers, --resume, torchrun), after ``help``
    distill_only: str = ""

    @property
    def distill_help(self) -> str:
        """The help ``dukd distill`` shows: :attr:`help`, then :attr:`distill_only`."""
        return f"{self.help} {self.distill_only}" if self.distill_only else self.help

    @property
    def flag(self) -> str:
        """The long flag as messages name it (``--zoom-out`` for ``--zoom-out/--no-zoom-out``)."""
        return self.flags[0].split("/")[0]


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

#: Every option, in the order ``dukd distill --help`` lists them.
TABLE: tuple[Opt, ...] = (
    # the teacher(s): the three together become teacher.* and teacher.extra (kind "teacher")
    Opt("teacher", ("--teacher", "-t"), many=True, key="teacher.name", kind="teacher",
        help="Teacher: preset, architecture, exported model or run directory, or a checkpoint file of any "
        "architecture the zoo or spandrel detects (e.g. RRDB_x4.pth).",
        distill_only="Repeatable (kd, dukd): several teachers combined by --teacher-mix."),
    Opt("teacher_weights", ("--teacher-weights",), many=True, key="teacher.weights", kind="teacher",
        help="Teacher weights: file, hf://OWNER/REPO/FILE@REV, or preset. Default: the preset's declared source.",
        distill_only="With several --teacher: once per teacher, in order ('-' keeps that teacher's default)."),
    Opt("teacher_arg", ("--teacher-arg",), many=True, key="teacher.args", kind="teacher",
        help="Teacher constructor argument key=value (repeatable); N:key=value for the N-th --teacher."),
    Opt("teacher_mix", ("--teacher-mix",), key="teacher.mix",
        help="Several teachers: 'mean' (default: the mean of their outputs) or 'best' (per sample, the teacher "
        "closest to HR on the LR patch; it also labels that sample's upcycled inputs)."),
    # the student
    Opt("student", ("--student", "-s"), key="student.name", kind="model",
        help="Student: preset, architecture or exported model directory."),
    Opt("student_weights", ("--student-weights",), key="student.weights", kind="path",
        help="Initialise the student from these weights."),
    Opt("student_arg", ("--student-arg",), many=True, key="student.args", kind="args",
        help="Student constructor argument key=value (repeatable)."),
    Opt("non_strict", ("--non-strict",), type=bool, default=False, key="student.strict", kind="negate",
        help="Load --student-weights non-strictly (e.g. an x2 student initialising an x4 one)."),
    Opt("scale", ("--scale",), type=int, key="student.scale",
        help="Upscaling factor (teacher and student must share it)."),
    # the method
    Opt("method", ("--method", "-m"), key="method.name",
        help="scratch | kd | dukd | fakd | fitnet | at | fsp | csd, or a plugin's method. Default: dukd."),
    Opt("affinity", ("--affinity",), key="method.affinity",
        help="fakd: spatial (default; FAKD's own), channel or batch affinity."),
    Opt("feature_loss", ("--feature-loss",), key="method.feature_loss",
        help="dukd: add a feature term on the original pair: at, fitnet, fsp, spatial (fakd), channel, batch."),
    Opt("feature_weight", ("--feature-weight",), type=float, key="method.w_feat",
        help="Weight of the feature term (fakd, fitnet, at, fsp, dukd; default 10)."),
    Opt("feature_layers", ("--feature-layers",), key="method.feature_layers", kind="csv",
        help="Modules to read features from, comma-separated (e.g. layers.0,layers.2,conv_after_body); default: "
        "the release's positions for EDSR/RCAN, else the network's feature_taps()."),
    Opt("feature_grad", ("--feature-grad/--no-feature-grad",), type=bool, key="method.feature_grad",
        help="Fix: the feature term trains the student (authors: detached, as released)."),
    Opt("update", ("--update",), key="method.update", help=UPDATE_HELP),
    Opt("recipe", ("--recipe",), key="method.recipe", help=RECIPE_HELP),
    Opt("true_inverse", ("--true-inverse/--no-true-inverse",), type=bool, key="method.true_inverse",
        help="dukd fix: D^-1 = true inverses in reverse order (authors: the same operations again)."),
    Opt("eval_teacher", ("--eval-teacher/--no-eval-teacher",), type=bool, key="train.eval_teacher",
        help="Fix: the teacher in eval mode (authors: train mode, under no_grad)."),
    Opt("clamp_zoom_out", ("--clamp-zoom-out/--no-clamp-zoom-out",), type=bool, key="method.clamp_zoom_out",
        help="dukd fix: clamp the zoom-out input to [0, 1] (authors: unclamped)."),
    Opt("ema_warmup", ("--ema-warmup/--no-ema-warmup",), type=bool, key="train.ema_warmup",
        help="Fix: EMA decay min(d, (1+t)/(10+t)) (authors: d from iteration 1)."),
    Opt("zoom_out_aug", ("--zoom-out-aug/--no-zoom-out-aug",), type=bool, key="method.zoom_out_aug",
        help="dukd extension: augment the zoom-out input too (default off, as released)."),
    Opt("init_from", ("--init-from",), type=Path, kind="init",
        help="Start the student from another run's EMA student (RUN_DIR/student.safetensors), non-strictly (e.g. x2 -> x4)."),
    Opt("aug_prob", ("--aug-prob",), type=float, key="method.aug_prob",
        help="dukd: per-operation per-sample probability of the invertible augmentations (default 0.3; 0 for RCAN x4)."),
    Opt("w_pix", ("--w-pix",), type=float, key="method.w_pix",
        help="Weight of the ground-truth terms (dukd default per student family: 5 EDSR/SwinIR, 1 RCAN x2/x4, 2 RCAN x3; else 1)."),
    Opt("w_kd", ("--w-kd",), type=float, key="method.w_kd",
        help="Weight of the teacher terms (kd, dukd; default 1)."),
    Opt("zoom_in_tiles", ("--zoom-in-tiles",), type=int, key="method.zoom_in_tiles",
        help="dukd: zoom-in tiles per sample (default 2 for EDSR x2, else 1; 0 disables)."),
    Opt("zoom_out", ("--zoom-out/--no-zoom-out",), type=bool, key="method.zoom_out", help=ZOOM_OUT_HELP),
    Opt("csd_width", ("--csd-width",), type=float, key="method.width",
        help="csd: the student's fraction of the trained network's channels (default 0.25, the paper's EDSR "
        "rows); --student names the student, csd trains a network 1/width times wider and ships its first channels."),
    Opt("csd_vgg_weights", ("--csd-vgg-weights",), key="method.vgg_weights", kind="path",
        help="csd: VGG-19 weights for the contrastive term (file or source; default torchvision's "
        "vgg19-dcbb9e9d.pth, fetched once and hash-checked)."),
    Opt("method_opt", ("--method-opt",), many=True, kind="method_opts",
        help="Any method option key=value (repeatable), e.g. max_side=48 for fakd."),
    # data and training
    Opt("data", ("--data", "-d"), many=True, key="data.paths", kind="paths",
        help="Training data (repeatable): 'div2k' (DIV2K's 800 images, fetched once), HR folder, DIV2K folder, "
        "HR/+LR/ folder, or 'builtin' (scikit-image's photos).",
        distill_only="Default with a teacher: 'div2k'."),
    Opt("iters", ("--iters",), type=int, key="train.iters", demo=True,
        help="Total iterations (default 250000).", distill_only="On --resume it may be raised."),
    Opt("batch_size", ("--batch-size",), type=int, key="train.batch_size", demo=True,
        help="Patches per iteration per process (default 16)."),
    Opt("patch_size", ("--patch-size",), type=int, key="train.patch_size",
        help="LR patch side in pixels (default 48)."),
    Opt("seed", ("--seed",), type=int, key="train.seed", demo=True,
        help="Random seed (default 0); runs on the CPU are bit-reproducible."),
    Opt("lr", ("--lr",), type=float, key="train.lr", demo=True, help="Adam learning rate (default 1e-4)."),
    Opt("milestones", ("--milestones",), key="train.milestones", kind="ints",
        help="Iterations where the lr is multiplied by --gamma (default 100000,200000)."),
    Opt("gamma", ("--gamma",), type=float, key="train.gamma",
        help="Learning-rate decay factor at each milestone (default 0.1)."),
    Opt("ema_decay", ("--ema-decay",), type=float, key="train.ema_decay",
        help="Decay of the student's EMA (default 0.999, with warm-up)."),
    Opt("grad_clip", ("--grad-clip",), type=float, key="train.grad_clip",
        help="Clip the gradient norm to this value (default 0: off)."),
    Opt("precision", ("--precision",), key="train.precision", demo=True,
        help="auto (bf16 autocast on CUDA, fp32 elsewhere), bf16 or fp32."),
    Opt("channels_last", ("--channels-last/--no-channels-last",), type=bool, key="train.channels_last", demo=True,
        help="Channels-last (NHWC) memory format for the networks and batches: faster convolutions on most "
        "CPUs and GPUs; same numbers up to rounding (default off)."),
    Opt("quantize", ("--quantize",), key="train.quantize",
        help="int8: quantization-aware training. The student (from --init-from, --student-weights or its "
        "preset's weights) trains with int8-simulated weights and activations, labelled by the fp32 teacher "
        "(default: the fp32 student itself); student.safetensors stays fp32 for the int8 ONNX export."),
    # the run
    Opt("out", ("--out", "-o"), type=Path, demo=True,
        help="Run directory (default runs/<method>-<student>-x<scale>-<time>)."),
    Opt("resume", ("--resume",), type=Path,
        help="Continue the run in this directory (options given again must agree)."),
    Opt("val_every", ("--val-every",), type=int, key="val.every",
        help="Validate the EMA student every N iterations and at the end (default 5000; 0: never)."),
    Opt("val_bench", ("--val-bench",), key="val.bench", help="Benchmark for validation (default set5)."),
    Opt("val_max_images", ("--val-max-images",), type=int, key="val.max_images",
        help="Validate on at most this many images."),
    Opt("data_dir", ("--data-dir",), key="val.data_dir", kind="path", demo=True,
        help="Folder holding the benchmark sets (default: $DUKD_DATA, then the cache)."),
    Opt("device", ("--device",), key="train.device", demo=True,
        help="auto, cpu, cuda, cuda:N (default auto).",
        distill_only="Under torchrun each rank uses cuda:LOCAL_RANK."),
    Opt("workers", ("--workers",), type=int, key="data.workers", demo=True,
        help="Data worker processes (default 0 on the CPU, min(8, cores/2) on CUDA)."),
    Opt("threads", ("--threads",), type=int, demo=True,
        help="CPU threads for the whole process (torch, resizing, minus one per --workers process); "
        "default and maximum: the cores this process may use (CPU affinity, cgroup quota)."),
    Opt("compile", ("--compile/--no-compile",), type=bool, key="train.compile",
        help="torch.compile the student and the teacher (meant for CUDA; the first iterations compile; "
        "checkpoints, EMA and --resume are unaffected; default off)."),
    Opt("cache_dir", ("--cache-dir",), key="data.cache_dir", kind="path", demo=True,
        help="Cache of decoded training images and LR images (default $DUKD_CACHE or ~/.cache/dukd)."),
    Opt("log_every", ("--log-every",), type=int, key="train.log_every", demo=True,
        help="Log to metrics.jsonl and the console every N iterations (default 100)."),
    Opt("save_every", ("--save-every",), type=int, key="train.save_every",
        help="Checkpoint every N iterations (default 1000), and at the end."),
    Opt("save_every_min", ("--save-every-min",), type=float, key="train.save_every_min",
        help="Also checkpoint when this many minutes passed since the last checkpoint (default 0: off)."),
    Opt("tensorboard", ("--tensorboard/--no-tensorboard",), type=bool, key="train.tensorboard",
        help="Also log to RUN_DIR/tensorboard (pip install 'dukd\\[tensorboard]')."),
    Opt("config", ("--config",), type=Path,
        help="TOML configuration file (same tables as RUN_DIR/config.toml); options override it."),
    Opt("dry_run", ("--dry-run",), type=bool, default=False,
        help="Print the resolved configuration and parameter counts; train nothing."),
    Opt("demo", ("--demo",), type=bool, default=False, demo=True,
        help="A short CPU distillation from the shipped teacher (dukd-teacher-x4) on the built-in photos, "
        "ending with a before/after table (minutes on a laptop CPU). Takes --iters (default 200), "
        "--batch-size, --lr, --seed, --device, --precision, --out, --data-dir (Set5 for the table), --cache-dir."),
)  # fmt: skip

BY_NAME: dict[str, Opt] = {o.name: o for o in TABLE}
#: The option that sets each configuration key (``dukd_cli.distill.recipes`` names its fixes' flags so).
BY_KEY: dict[str, Opt] = {o.key: o for o in TABLE if o.key is not None}

#: Options the demo takes that are not configuration of its run (the command handles them itself).
_DEMO_OWN = ("out", "data_dir", "threads", "demo")


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options given (neither None, empty, nor their default), by name, in the table's order."""
    out = {}
    for o in TABLE:
        v = values.get(o.name, o.default)
        if v is not None and v != o.default and v not in ([], ()):
            out[o.name] = v
    return out


def refused_by_demo(values: Mapping[str, Any]) -> list[str]:
    """The flags given that ``--demo`` does not take (they make a real run: none given, nothing to run)."""
    return [BY_NAME[n].flag for n in given(values) if not BY_NAME[n].demo]


def demo_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options given that configure the demo's run (``run_demo``'s keyword arguments)."""
    return {n: v for n, v in given(values).items() if BY_NAME[n].demo and n not in _DEMO_OWN}


# --------------------------------------------------------------------------------------------
# Values as configuration keys
# --------------------------------------------------------------------------------------------


def _absolute(v: Any) -> str:
    # Local paths are recorded absolute, so --resume works from any directory.
    v = str(v)
    return str(Path(v).expanduser().resolve()) if v != "builtin" and Path(v).expanduser().exists() else v


def _model_args(items: Any) -> dict[str, Any]:
    from dukd_cli.models.spec import parse_model_args

    return parse_model_args(items)


def split_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise DukdError(f"--milestones must be comma-separated integers, got '{text}'") from None


#: kind -> (option, value) -> {configuration key: value}
_CONVERT: dict[str, Callable[[Opt, Any], dict[str, Any]]] = {
    "": lambda o, v: {o.key: v},
    "path": lambda o, v: {o.key: _absolute(v)},
    "model": lambda o, v: {o.key: _absolute(v) if Path(str(v)).expanduser().is_file() else v},
    "paths": lambda o, v: {o.key: [_absolute(x) for x in v]} if v else {},
    "args": lambda o, v: {o.key: _model_args(v)} if v else {},
    "csv": lambda o, v: {o.key: [x.strip() for x in str(v).split(",") if x.strip()]},
    "ints": lambda o, v: {o.key: split_ints(v)},
    "negate": lambda o, v: {o.key: False} if v else {},
    "method_opts": lambda o, v: {f"method.{k}": x for k, x in _model_args(v).items()},
}


def to_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options given (by parameter name; None: not given) as dotted configuration keys.

    The teachers come first; ``--method-opt`` next, so that an option of its own (``--aug-prob``)
    wins over ``--method-opt aug_prob=...``. ``--init-from`` reads a run directory: see
    :func:`init_overrides`, called once the command knows it runs."""
    out: dict[str, Any] = teacher_overrides(
        values.get("teacher"), values.get("teacher_weights"), values.get("teacher_arg")
    )
    rest = [o for o in TABLE if o.kind == "method_opts"] + [o for o in TABLE if o.kind != "method_opts"]
    for o in rest:
        v = values.get(o.name)
        if v is None or o.kind in ("teacher", "init") or o.key is None and o.kind == "":
            continue
        out.update(_CONVERT[o.kind](o, v))
    return out


def init_overrides(init_from: Path | None, student_weights: str | None) -> dict[str, Any]:
    """``--init-from RUN_DIR``: the student's weights from that run, loaded non-strictly."""
    if init_from is None:
        return {}
    if student_weights is not None:
        raise DukdError("--init-from and --student-weights both initialise the student; give one")
    return {"student.weights": init_weights(init_from), "student.strict": False}


def teacher_overrides(names: Any, weights: Any, args: Any) -> dict[str, Any]:
    """``--teacher`` (repeatable), ``--teacher-weights`` (once per teacher, in order; ``-``: that
    teacher's default) and ``--teacher-arg [N:]KEY=VALUE`` (teacher N, default the first) as
    configuration keys: the first teacher in ``teacher.*``, the others in ``teacher.extra``."""

    def as_list(v: Any) -> list[Any]:
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
        return _absolute(v) if Path(v).expanduser().exists() else v  # a file or run directory: absolute

    def weights_of(k: int) -> str | None:
        w = weights[k] if weights else None
        return None if w in (None, "-") else _absolute(str(w))

    out: dict[str, Any] = {}
    if names:
        out["teacher.name"] = name_of(str(names[0]))
        out["teacher.extra"] = [
            {"name": name_of(str(n)), "weights": weights_of(k), "args": _model_args(per[k])}
            for k, n in enumerate(names[1:], start=1)
        ]
    if weights_of(0) is not None:
        out["teacher.weights"] = weights_of(0)
    if per[0]:
        out["teacher.args"] = _model_args(per[0])
    return out


def init_weights(run_dir: str | Path) -> str:
    """``--init-from RUN_DIR``: that run's EMA student (``student.safetensors``), as an absolute path."""
    root = Path(run_dir).expanduser()
    w = RunPaths(root).student
    if not root.is_dir():
        raise DukdError(f"--init-from {run_dir}: no such run directory")
    if not w.is_file():
        raise DukdError(
            f"--init-from {run_dir}: the run has no student.safetensors (has it saved a checkpoint yet?)"
        )
    return str(w.resolve())
