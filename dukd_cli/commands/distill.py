"""``dukd distill``: train a small student from a big teacher (DUKD and its baselines).

Its options are declared once, in :data:`dukd_cli.distill.options.TABLE` (flags, type, help, the
configuration key, whether ``--demo`` takes it); the command's parameters are built from it."""

from __future__ import annotations

import inspect
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from dukd_cli.commands._common import console, warn
from dukd_cli.commands._options import table_parameter
from dukd_cli.distill.options import TABLE
from dukd_cli.errors import DukdError

if TYPE_CHECKING:  # torch-heavy: for the annotations only
    from dukd_cli.distill import FitResult, Trainer
    from dukd_cli.distill.resolve import Resolved
    from dukd_cli.models.spec import ModelSpec


def _default_out(cfg: Any) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    s = Path(str(cfg.student.name)).name
    return Path("runs") / f"{cfg.method.name}-{s}-x{cfg.student.scale}-{stamp}"


def distill_cmd(**opts: Any) -> None:
    """Distil a student from a teacher: DUKD (default), KD, FAKD, FitNet, AT, FSP, or train from scratch.

    Example: dukd distill --teacher edsr-l --student edsr-s --scale 4 --data DIV2K/

    RUN_DIR gets config.toml, student.safetensors (EMA weights), student_best.safetensors, state.pt
    (resume) and metrics.jsonl. Ctrl-C or SIGTERM saves and exits (130, 143); continue with --resume
    RUN_DIR. Several GPUs:
    torchrun --nproc_per_node=N -m dukd_cli distill ...
    """
    from dukd_cli.distill import config as cfgmod
    from dukd_cli.distill import options, validate
    from dukd_cli.distill.resolve import resolve
    from dukd_cli.distill.trainer import Trainer
    from dukd_cli.runtime import threads as threads_mod

    opts = _values(opts)
    out, resume, config, data, dry_run = (opts[k] for k in ("out", "resume", "config", "data", "dry_run"))
    overrides = options.to_overrides(opts)
    validate.check_options(overrides)  # every value once, before anything else happens
    budget = threads_mod.apply(threads_mod.plan(opts["threads"], workers=opts["workers"] or 0))
    if budget.note:
        console.print(f"[yellow]note:[/] {budget.note}")
    given = options.refused_by_demo(opts)  # the options of a real run
    csd_given = [k for k in ("--csd-width", "--csd-vgg-weights") if k in given]
    method = opts["method"]
    if csd_given and method is not None and method != "csd":
        raise DukdError(
            f"{' and '.join(csd_given)} apply to --method csd only (this run is --method {method})"
        )
    if opts["demo"] and given:
        raise DukdError(
            f"--demo trains the shipped pair with fixed settings; it does not take {', '.join(given)} "
            "(drop --demo for a real run)"
        )
    if opts["demo"]:
        _run_demo(out, opts["data_dir"], options.demo_settings(opts))
        return
    if not given:  # nothing to distil: say what to give (the demo takes minutes; never start it unasked)
        raise DukdError(
            "nothing to distil: give --teacher, --student and --data (see 'dukd distill --help'), "
            "or run 'dukd distill --demo' for a short demo on the shipped models"
        )

    overrides.update(options.init_overrides(opts["init_from"], opts["student_weights"]))
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


def _values(opts: dict[str, Any]) -> dict[str, Any]:
    """Every option of the table by name (those not passed: their default); any other name is an error."""
    unknown = sorted(set(opts) - {o.name for o in TABLE})
    if unknown:
        raise TypeError(f"distill_cmd() got unexpected options: {', '.join(unknown)}")
    return {o.name: opts.get(o.name, o.default) for o in TABLE}


# Typer reads the parameters from the signature: the table's, in its order.
distill_cmd.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [table_parameter(o, o.distill_help, o.default) for o in TABLE], return_annotation=None
)


def _run_demo(out: Path | None, data_dir: str | None, opts: dict[str, Any]) -> None:
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


def _print_plan(res: Resolved, run_dir: Path) -> None:
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


def _other_teacher_lines(res: Resolved) -> list[str]:
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


def _weights_cell(role: str, spec: ModelSpec) -> str:
    if spec.weights:
        return str(spec.weights)
    return "none declared: pass --teacher-weights FILE" if role.startswith("teacher") else "(random init)"


def _recipe_lines(res: Resolved) -> list[str]:
    from dukd_cli.distill.recipes import describe, method_summary

    lines = describe(res.cfg, getattr(res.method_cls, "options", {}))
    summary = method_summary(res.cfg)
    return lines + ([summary] if summary else [])


def _fit(trainer: Trainer) -> None:
    from dukd_cli.distill import ddp

    try:
        result = trainer.fit()
    finally:
        ddp.shutdown()
    _report(result)


def _report(result: FitResult) -> None:
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
