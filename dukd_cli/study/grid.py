"""A study's plan: one teacher and data, a grid of methods x seeds (x students), the training and
evaluation settings; its presets; the method specs; each cell's distillation configuration.

A *method spec* is a registry name (``scratch``, ``kd``, ``dukd``, ``fakd``, ``csd``, a plugin's),
optionally ``NAME+FEATURE`` for ``--method NAME --feature-loss FEATURE`` (e.g. ``dukd+at``). A
*student* is ``{"label", "name", "args"}`` (a preset or architecture with constructor arguments).

The plan is written to ``STUDY/study.json`` when the study starts and read back when it resumes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dukd_cli.errors import DukdError
from dukd_cli.rundir import RunPaths

if TYPE_CHECKING:
    from dukd_cli.distill.config import DistillConfig

PLAN_FILE = "study.json"
PLAN_FORMAT = "dukd-study"
FEATURE_KEY = "feature_loss"  # the dukd method option behind --feature-loss


@dataclass
class StudyPlan:
    """Everything a study computes with (operational settings such as the device stay out)."""

    teacher: dict[str, Any]
    students: list[dict[str, Any]]
    methods: list[str]
    seeds: list[int]
    data: list[str]
    scale: int
    train: dict[str, Any] = field(default_factory=dict)
    benches: list[str] = field(default_factory=lambda: ["set5"])
    data_dir: str | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Methods whose trained network starts from the teacher's weights (csd at the paper's scale: its
    # 1/width-wide network is the teacher's architecture, and the CSD release starts from it).
    init_from_teacher: list[str] = field(default_factory=list)
    preset: str | None = None
    what: str = ""  # a line saying what the study is (shown above its table)

    def cells(self) -> list[Cell]:
        return [
            Cell(s["label"], m, int(seed)) for s in self.students for m in self.methods for seed in self.seeds
        ]

    def student(self, label: str) -> dict[str, Any]:
        return next(s for s in self.students if s["label"] == label)

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": 1, **asdict(self)}


@dataclass(frozen=True)
class Cell:
    student: str
    method: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.student}/{self.method}/seed{self.seed}"

    def run_dir(self, root: Path) -> Path:
        return Path(root) / "runs" / self.student / self.method / f"seed{self.seed}"


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def shared_root() -> Path:
    """The project's shared data (``$DUKD_SHARED``, default ``../shared``)."""
    return Path(os.environ.get("DUKD_SHARED", "../shared")).expanduser().resolve()


def _paper_table2() -> StudyPlan:
    return StudyPlan(
        teacher={"name": "edsr-l", "weights": None, "args": {}},
        students=[{"label": "edsr-s", "name": "edsr-s", "args": {}}],
        methods=["scratch", "kd", "fakd", "csd", "dukd"],
        seeds=[0, 1, 2],
        data=["div2k"],
        scale=4,
        train={"iters": 250_000, "batch_size": 16, "patch_size": 48},
        benches=["set5", "set14", "bsd100", "urban100"],
        method_options={"csd": {"width": 0.25}},
        init_from_teacher=["csd"],
        preset="paper-table2",
        what="the paper's Table 2 setting (EDSR x4: EDSR-L teacher, EDSR-S student, DIV2K, 250k iterations)",
    )


def _cpu_short() -> StudyPlan:
    root = shared_root()
    return StudyPlan(
        teacher={"name": "imdn", "weights": str(root / "models" / "imdn" / "IMDN_x4.pth"), "args": {}},
        students=[{"label": "edsr-32x4", "name": "edsr", "args": {"n_feats": 32, "n_resblocks": 4}}],
        methods=["scratch", "kd", "fakd", "at", "fitnet", "dukd", "dukd+at", "csd"],
        seeds=[0, 1],
        data=[str(root / "data" / "train" / "t91"), str(root / "data" / "train" / "bsd200")],
        scale=4,
        train={
            "iters": 300,
            "batch_size": 8,
            "patch_size": 24,
            "lr": 5e-4,
            "milestones": [1_000_000],
            "log_every": 50,
            "save_every": 100,
        },
        benches=["set5", "set14", "bsd100"],
        data_dir=str(root / "data" / "benchmarks"),
        method_options={"csd": {"width": 0.25}},
        preset="cpu-short",
        what="CPU-scale short runs (IMDN x4 teacher, EDSR 32x4 student, the 291 images): "
        "not the paper's setting",
    )


PRESETS = {"paper-table2": _paper_table2, "cpu-short": _cpu_short}


def preset_plan(name: str) -> StudyPlan:
    if name not in PRESETS:
        raise DukdError(f"unknown study preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]()


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------

_SPEC_RE = re.compile(r"^[A-Za-z0-9_.-]+(\+[A-Za-z0-9_.-]+)?$")


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``dukd+at`` -> (``dukd``, ``{"feature_loss": "at"}``); ``kd`` -> (``kd``, {})."""
    s = spec.strip()
    if not _SPEC_RE.match(s):
        raise DukdError(f"bad method spec '{spec}': expected NAME or NAME+FEATURE (e.g. kd, dukd+at)")
    base, _, feat = s.partition("+")
    return base, ({FEATURE_KEY: feat} if feat else {})


def parse_student(spec: str) -> dict[str, Any]:
    """``NAME`` or ``NAME:key=value,key=value`` (e.g. ``edsr:n_feats=32,n_resblocks=4``)."""
    from dukd_cli.models.spec import parse_model_args

    name, _, rest = spec.strip().partition(":")
    if not name:
        raise DukdError(f"bad student spec '{spec}': expected NAME or NAME:key=value,...")
    args = parse_model_args([a for a in rest.split(",") if a.strip()]) if rest else {}
    label = name if not args else name + "-" + "-".join(f"{k}{v}" for k, v in args.items())
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(label).name)
    return {"label": label, "name": name, "args": args}


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise DukdError(f"--seeds must be comma-separated integers, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise DukdError(f"--seeds needs distinct integers, got '{text}'")
    return seeds


# --------------------------------------------------------------------------------------------
# The plan on disk
# --------------------------------------------------------------------------------------------


def plan_from_json(d: dict[str, Any], where: str) -> StudyPlan:
    if d.get("format") != PLAN_FORMAT:
        raise DukdError(f"{where} is not a dukd study plan")
    fields = {k: v for k, v in d.items() if k not in ("format", "version")}
    try:
        return StudyPlan(**fields)
    except TypeError as exc:
        raise DukdError(f"{where}: unreadable study plan ({exc})") from None


def load_plan(root: Path) -> StudyPlan | None:
    p = Path(root) / PLAN_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DukdError(f"cannot read {p}: {exc}") from None
    return plan_from_json(d, str(p))


def save_plan(root: Path, plan: StudyPlan) -> None:
    from dukd_cli.runtime.fsutil import atomic_write_text

    Path(root).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(root) / PLAN_FILE, json.dumps(plan.to_json(), indent=1) + "\n")


def is_study_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / PLAN_FILE).is_file()


def plan_differences(saved: StudyPlan, given: StudyPlan) -> list[str]:
    a, b = saved.to_json(), given.to_json()
    return [k for k in a if a[k] != b.get(k)]


# --------------------------------------------------------------------------------------------
# One cell's distillation configuration
# --------------------------------------------------------------------------------------------


def cell_config(
    plan: StudyPlan,
    cell: Cell,
    *,
    device: str = "auto",
    cache_dir: str | None = None,
    workers: int | None = None,
) -> DistillConfig:
    """The :class:`DistillConfig` of one cell (validation off: the study evaluates each finished cell)."""
    from dukd_cli.distill.config import DistillConfig

    cfg = DistillConfig()
    base, extra = parse_method(cell.method)
    student = plan.student(cell.student)
    cfg.teacher.name = plan.teacher.get("name")
    cfg.teacher.weights = plan.teacher.get("weights")
    cfg.teacher.args = dict(plan.teacher.get("args") or {})
    cfg.student.name = student["name"]
    cfg.student.args = dict(student.get("args") or {})
    cfg.student.scale = int(plan.scale)
    cfg.method.name = base
    cfg.method.options = {**dict(plan.method_options.get(base, {})), **extra}
    if base in plan.init_from_teacher and plan.teacher.get("weights"):
        cfg.student.weights = plan.teacher["weights"]
    cfg.data.paths = list(plan.data)
    cfg.data.cache_dir = cache_dir
    cfg.data.workers = workers
    for key, value in plan.train.items():
        cfg.set(f"train.{key}", value)
    cfg.train.seed = int(cell.seed)
    cfg.train.device = device
    cfg.val.every = 0
    from dukd_cli.distill.provenance import record

    record(cfg)  # named data (div2k): its source and revision go into config.toml
    return cfg


def check_cell(plan: StudyPlan, cell: Cell, cfg: DistillConfig) -> None:
    """Resolve a cell without training or downloading: one line naming the cell if it cannot run."""
    from dukd_cli.distill.resolve import resolve

    try:
        resolve(cfg, plan=True)  # also checks what a method trains (csd's channel split)
    except DukdError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DukdError(f"study cell {cell.key}: {first}") from None


# --------------------------------------------------------------------------------------------
# From command-line options
# --------------------------------------------------------------------------------------------


def _absolute(value: str) -> str:
    """Local paths recorded absolute (a study continues from any directory); sources kept as given."""
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() else value


def build_plan(
    *,
    preset: str | None = None,
    methods: list[str] | None = None,
    seeds: str | None = None,
    students: list[str] | None = None,
    teacher: str | None = None,
    teacher_weights: str | None = None,
    scale: int | None = None,
    data: list[str] | None = None,
    iters: int | None = None,
    batch_size: int | None = None,
    patch_size: int | None = None,
    lr: float | None = None,
    bench: str | None = None,
    data_dir: str | None = None,
    csd_width: float | None = None,
    csd_vgg_weights: str | None = None,
) -> StudyPlan | None:
    """The plan the options describe: a preset with the options given over it, or the options alone.
    ``None`` when no option plans anything (continue the saved study)."""
    planning = [
        methods, seeds, students, teacher, teacher_weights, scale, data, iters, batch_size, patch_size, lr,
        bench, data_dir, csd_width, csd_vgg_weights,
    ]  # fmt: skip
    if preset is None and all(v in (None, [], ()) for v in planning):
        return None
    if preset is not None:
        plan = preset_plan(preset)
    else:
        missing = [
            n for n, v in (("--method", methods), ("--student", students), ("--scale", scale)) if not v
        ]
        if missing:
            raise DukdError(
                f"a study without --preset needs {', '.join(missing)} (or start from --preset cpu-short)"
            )
        plan = StudyPlan(
            teacher={"name": None, "weights": None, "args": {}},
            students=[],
            methods=[],
            seeds=[0, 1],
            data=["builtin"],
            scale=int(scale),
        )
    if methods:
        for m in methods:
            parse_method(m)
        if len(set(methods)) != len(methods):
            raise DukdError("--method: each method once")
        plan.methods = list(methods)
    if seeds is not None:
        plan.seeds = parse_seeds(seeds)
    if students:
        plan.students = [parse_student(s) for s in students]
        labels = [s["label"] for s in plan.students]
        if len(set(labels)) != len(labels):
            raise DukdError("--student: each student once")
    if teacher is not None:
        plan.teacher = {
            "name": _absolute(teacher) if Path(teacher).is_file() else teacher,
            "weights": None,
            "args": {},
        }
    if teacher_weights is not None:
        plan.teacher["weights"] = _absolute(teacher_weights)
    if scale is not None:
        plan.scale = int(scale)
    if data:
        plan.data = [_absolute(d) for d in data]
    for key, value in (("iters", iters), ("batch_size", batch_size), ("patch_size", patch_size), ("lr", lr)):
        if value is not None:
            plan.train[key] = value
    if bench is not None:
        plan.benches = [b.strip() for b in bench.split(",") if b.strip()]
    if data_dir is not None:
        plan.data_dir = _absolute(data_dir)
    if csd_width is not None:
        plan.method_options.setdefault("csd", {})["width"] = float(csd_width)
    if csd_vgg_weights is not None:
        plan.method_options.setdefault("csd", {})["vgg_weights"] = _absolute(csd_vgg_weights)
    if not plan.benches:
        raise DukdError("--bench: give at least one set")
    return plan


def describe_plan(plan: StudyPlan, root: Path, *, device: str = "auto") -> list[str]:
    """``--dry-run``: the plan, and each cell's state or the one line that stops it."""
    from dukd_cli.distill.checkpoint import student_iteration
    from dukd_cli.study.grid import is_finished

    t = plan.teacher
    lines = [
        f"study {root}"
        + (f" (preset {plan.preset})" if plan.preset else "")
        + (f": {plan.what}" if plan.what else ""),
        f"teacher: {t.get('name')}" + (f" (weights {t['weights']})" if t.get("weights") else ""),
        "students: "
        + ", ".join(
            f"{s['label']} ({s['name']} {s.get('args') or ''})".replace(" )", ")") for s in plan.students
        ),
        f"methods: {', '.join(plan.methods)}; seeds: {', '.join(map(str, plan.seeds))}; x{plan.scale}",
        f"data: {', '.join(plan.data)}",
        "training: " + (", ".join(f"{k} {v}" for k, v in plan.train.items()) or "the distill defaults"),
        f"evaluated on: {', '.join(plan.benches)}" + (f" in {plan.data_dir}" if plan.data_dir else ""),
    ]
    if plan.method_options:
        lines.append("method options: " + "; ".join(f"{m}: {o}" for m, o in plan.method_options.items()))
    if plan.init_from_teacher:
        lines.append(
            f"trained network starts from the teacher's weights: {', '.join(plan.init_from_teacher)}"
        )
    problems = 0
    for cell in plan.cells():
        run_dir = cell.run_dir(root)
        try:
            check_cell(plan, cell, cell_config(plan, cell, device=device))
        except DukdError as exc:
            problems += 1
            lines.append(f"  {cell.key}: cannot run: {str(exc).split(': ', 1)[-1]}")
            continue
        if is_finished(plan, cell, root):
            state = "finished"
        elif RunPaths(run_dir).state.is_file():
            state = f"resumes at iteration {student_iteration(run_dir / 'student.safetensors')}"
        else:
            state = "to run"
        lines.append(f"  {cell.key}: {state}")
    lines.append(f"{len(plan.cells())} cells" + (f"; {problems} cannot run as planned" if problems else ""))
    return lines


EVAL_FILE = "eval.json"


def read_eval(run_dir: Path) -> dict[str, Any] | None:
    p = run_dir / EVAL_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def plan_iters(plan: StudyPlan) -> int:
    """Each cell's iterations: the plan's, else dukd distill's default."""
    from dukd_cli.distill.config import TrainConfig

    return int(plan.train.get("iters", TrainConfig.iters))


def is_finished(plan: StudyPlan, cell: Cell, root: Path) -> bool:
    rec = read_eval(cell.run_dir(root))
    return (
        rec is not None and rec.get("iteration") == plan_iters(plan) and rec.get("sets") == list(plan.benches)
    )
