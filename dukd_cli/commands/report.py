"""``dukd report``: one HTML page for one or several distillation runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from dukd_cli.commands._common import console


def report_cmd(
    runs: list[Path] = typer.Argument(
        ...,
        metavar="RUN_DIR",
        help="Run directories of dukd distill (e.g. scratch, kd and dukd students of one teacher), or one "
        "dukd study folder (its table, and its finished cells as the runs).",
    ),
    out: Path = typer.Option(
        Path("report.html"), "--out", "-o", help="The HTML page; its JSON and PNGs go beside it."
    ),
    bench: str = typer.Option(
        None,
        "--bench",
        "-b",
        help="Comma-separated sets (or folders) to evaluate the runs on: results table, crops, agreement. "
        "Default: the runs' validation set.",
    ),
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        "-d",
        help="Folder holding <set>/HR/ (default: the runs' --data-dir, $DUKD_DATA, the cache).",
    ),
    crop: list[str] = typer.Option(
        None,
        "--crop",
        help="A crop to show side by side, IMAGE:x,y,w,h or SET/IMAGE:x,y,w,h in HR pixels (repeatable). "
        "Default: two crops where the runs differ most.",
    ),
    title: str = typer.Option(None, "--title", help="The page's title (default: the runs' labels)."),
    note: str = typer.Option(None, "--note", help="A line shown under the title (e.g. what these runs are)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N, for the evaluation."),
    export: list[Path] = typer.Option(
        None,
        "--export",
        metavar="DIR",
        help="A directory written by dukd export (repeatable): its ONNX files (fp32, int8, fp16) are "
        "evaluated through ONNX Runtime and shown beside the run they came from.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing page (and its JSON and figures)."
    ),
) -> None:
    """A self-contained HTML report: training curves, teacher agreement (paper Fig. 5), side-by-side
    crops (Fig. 6), results (with the paper's Table 2 where the pair is the paper's) and configuration.

    Example: dukd report runs/scratch runs/kd runs/dukd --bench set5,set14 --data-dir ../shared/data/benchmarks
    """
    from dukd_cli.report.build import make_report

    benches = [b.strip() for b in bench.split(",") if b.strip()] if bench else None
    res = make_report(
        runs,
        out,
        bench=benches,
        data_dir=data_dir,
        crops=crop or None,
        device=device,
        exports=list(export) if export else None,
        title=title,
        note=note,
        overwrite=overwrite,
        progress=lambda m: console.print(f"[dim]{escape(m)}[/]"),
    )
    for line in res.report["notes"]:
        console.print(f"[yellow]note:[/] {escape(line)}", highlight=False)
    console.print(
        f"[green]wrote[/] {res.html} ({len(res.figures)} figures beside it, numbers in {res.json.name})"
    )
