"""``dukd study``: a grid of distillation methods x seeds (x students), resumable, as one table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dukd_cli.commands._common import console
from dukd_cli.commands._options import distill_options
from dukd_cli.errors import DukdError

#: What a study adds to the help of a training option it shares with ``dukd distill``.
PER_CELL = "Per cell; --preset may set another default."


# The options a study shares with dukd distill are dukd distill's (dukd_cli.distill.options.TABLE: flags
# and help, then what a study adds); the command declares their types and defaults, and its own options.
@distill_options(
    teacher="One teacher for every cell (default: the preset's).",
    teacher_weights="",
    scale="Default: the preset's.",
    data="Default: the preset's, else 'builtin'.",
    iters=PER_CELL,
    batch_size=PER_CELL,
    patch_size=PER_CELL,
    lr=PER_CELL,
    data_dir="For --bench; --preset may set another default.",
    csd_width="",
    csd_vgg_weights="",
    device="",
    cache_dir="",
)
def study_cmd(
    out: Annotated[
        Path, typer.Argument(metavar="STUDY_DIR", help="The study folder (created, or continued).")
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="paper-table2 (the paper's EDSR x4 setting: EDSR-L teacher, EDSR-S student, DIV2K, 250k "
            "iterations, 3 seeds) or cpu-short (IMDN x4 teacher, EDSR 32x4 student, the 291 images, short runs).",
        ),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help="A method of the grid (repeatable): a registry name (scratch, kd, dukd, fakd, csd, ...) or "
            "NAME+FEATURE for --method NAME --feature-loss FEATURE (e.g. dukd+at). Default: the preset's.",
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Comma-separated seeds (default: the preset's).")
    ] = None,
    student: Annotated[
        list[str] | None,
        typer.Option(
            "--student",
            "-s",
            help="A student of the grid (repeatable): NAME or NAME:key=value,... (e.g. edsr:n_feats=32,n_resblocks=4).",
        ),
    ] = None,
    teacher: str | None = None,
    teacher_weights: str | None = None,
    scale: int | None = None,
    data: list[str] | None = None,
    iters: int | None = None,
    batch_size: int | None = None,
    patch_size: int | None = None,
    lr: float | None = None,
    bench: Annotated[
        str | None, typer.Option("--bench", "-b", help="Comma-separated sets each cell is evaluated on.")
    ] = None,
    data_dir: str | None = None,
    csd_width: float | None = None,
    csd_vgg_weights: str | None = None,
    device: str | None = None,
    cache_dir: str | None = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads (default: the cores this process may use).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and check every cell; train nothing.")
    ] = False,
) -> None:
    """Run a grid of methods x seeds (x students) on one teacher and data; write STUDY_DIR/study.md and
    study-table.json (Table 2's shape: mean ± std over seeds, the paired DUKD - KD difference per seed).

    Every cell is a dukd distill run directory under STUDY_DIR/runs/; finished cells are skipped, so
    running the same command again (or 'dukd study STUDY_DIR' alone) continues a stopped study.

    Example: dukd study runs/study --preset cpu-short --csd-vgg-weights vgg19-dcbb9e9d.pth
    """
    from dukd_cli.runtime import threads as threads_mod
    from dukd_cli.study.grid import build_plan, describe_plan, load_plan
    from dukd_cli.study.runner import run_study

    device = device or "auto"
    budget = threads_mod.apply(threads_mod.plan(threads, workers=0))
    if budget.note:
        console.print(f"[yellow]note:[/] {budget.note}")
    given = build_plan(
        preset=preset,
        methods=method,
        seeds=seeds,
        students=student,
        teacher=teacher,
        teacher_weights=teacher_weights,
        scale=scale,
        data=data,
        iters=iters,
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        bench=bench,
        data_dir=data_dir,
        csd_width=csd_width,
        csd_vgg_weights=csd_vgg_weights,
    )
    if dry_run:
        plan = given or load_plan(out)
        if plan is None:
            raise DukdError(f"{out} holds no study; give --preset NAME or --method ... to plan one")
        for line in describe_plan(plan, out, device=device):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    res = run_study(
        out,
        given,
        device=device,
        cache_dir=cache_dir,
        on_event=lambda m: console.print(f"[bold]study:[/] {escape(m)}"),
    )
    console.print(res.table and _markdown(res.table), markup=False, highlight=False, soft_wrap=True)
    if res.interrupted:
        console.print(f"[yellow]stopped; continue with:[/] dukd study {escape(str(out))}")
        raise typer.Exit(res.exit_code)
    console.print(f"[green]wrote[/] {out / 'study.md'} and {out / 'study-table.json'}")


def _markdown(table: Mapping[str, Any]) -> str:
    from dukd_cli.study.table import markdown

    return markdown(table)
