"""``dukd report``: gather (runs), measure, draw (figures), write (html) one page for one or more runs.

Files written (each atomically, after everything is computed; nothing half-written on an error):
``OUT.html`` (self-contained), ``OUT.json`` (every number on the page), ``OUT-curves.png``,
``OUT-agreement.png``, ``OUT-crop1.png``, ... beside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError
from dukd_cli.report import figures, html
from dukd_cli.report.measure import Measured, measure
from dukd_cli.report.paper import paper_pair
from dukd_cli.report.runs import RunData, load_runs
from dukd_cli.rundir import RunPaths


@dataclass
class ReportResult:
    html: Path
    json: Path
    figures: list[Path] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def _clean(x: Any) -> Any:
    """JSON without NaN/inf (strict JSON readers choke on them): non-finite floats become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def default_benches(runs: list[RunData]) -> tuple[list[str], str | None]:
    """The first run's validation set and data folder (what it was validated on)."""
    val = runs[0].section("val")
    return ([str(val["bench"])] if val.get("bench") else []), val.get("data_dir")


def make_report(
    run_dirs: list[str | os.PathLike],
    out: str | os.PathLike = "report.html",
    *,
    bench: list[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    crops: list[str] | None = None,
    device: str = "auto",
    title: str | None = None,
    note: str | None = None,
    speed: bool = True,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    exports: list[str | os.PathLike] | None = None,
) -> ReportResult:
    """Build the report of ``run_dirs`` into ``out`` (an .html path). ``exports``: directories of
    ``dukd export`` whose ONNX files (fp32, int8, fp16) get rows beside their runs."""
    from dukd_cli import __version__

    figures.require_matplotlib()  # before any work: one clear line without the extra
    out = _check_out(Path(out), overwrite)
    say = progress or (lambda _m: None)
    from dukd_cli.report import study as studymod

    run_dirs, labels, study = studymod.expand(list(run_dirs))  # a study folder: its finished cells
    runs = load_runs(list(run_dirs))
    for r in runs:
        r.label = labels.get(r.root, r.label)
    notes: list[str] = [
        f"{r.label}: skipped {r.skipped_lines} malformed line(s) of {r.root / 'metrics.jsonl'}"
        for r in runs
        if r.skipped_lines
    ]
    measured = _measure(runs, bench, data_dir, crops, study, device, speed, say, notes, exports)
    first = runs[0]
    paper = paper_pair(first.section("teacher"), first.section("student"), first.scale)
    import torch

    rep: dict[str, Any] = {
        "format": "dukd-report",
        "version": 1,
        "title": title,
        "note": note,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "dukd_version": __version__,
        "scale": first.scale,
        "device": str(device) if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        "json_file": out.with_suffix(".json").name,
        "runs": _runs_json(runs),
        "measured": measured.to_json() if measured is not None else None,
        "paper": paper,
        "notes": notes,
    }
    if study is not None:
        rep["study"] = study
    rep = _clean(rep)

    say("drawing the figures")
    figs = _figures(rep, runs, measured, out.stem)
    rep["figures"] = {k: v["file"] for k, v in figs.items()}
    return _write(out, rep, figs)


def _check_out(out: Path, overwrite: bool) -> Path:
    """``out`` names a page that may be written (checked before minutes of evaluation)."""
    from dukd_cli.runtime.fsutil import check_writable_dir

    if out.suffix.lower() not in (".html", ".htm"):
        raise DukdError(f"-o {out}: the report is an HTML page; give a name ending in .html")
    if out.is_dir():
        raise DukdError(f"-o {out} is a folder; give the page's file name (e.g. {out / 'report.html'})")
    if out.exists() and not overwrite:
        raise DukdError(f"-o {out} already exists; pass --overwrite to replace it")
    check_writable_dir(out.parent)
    return out


def _measure(
    runs: list[RunData],
    bench: list[str] | None,
    data_dir: str | os.PathLike | None,
    crops: list[str] | None,
    study: dict[str, Any] | None,
    device: str,
    speed: bool,
    say: Callable[[str], None],
    notes: list[str],
    exports: list[str | os.PathLike] | None = None,
) -> Measured | None:
    """Evaluate the runs on the benchmark sets (given, or the runs' validation set); where nothing
    is evaluated, ``notes`` says why."""
    given = bool(bench)
    benches, dd = (list(bench or []), data_dir) if given else default_benches(runs)
    if study is not None and not given:
        benches = []  # dukd study evaluated every cell already: its table is on the page
    if not given and data_dir is not None:
        dd = data_dir
    if crops and not benches:
        raise DukdError("--crop needs a benchmark set: pass --bench NAME (and --data-dir DIR)")
    if exports and not benches:
        raise DukdError("--export needs a benchmark set: pass --bench NAME (and --data-dir DIR)")

    measured = None
    if benches and any(RunPaths(r.root).student.is_file() for r in runs):
        try:
            measured = measure(
                runs,
                benches,
                data_dir=dd,
                device=device,
                crops=crops,
                speed=speed,
                progress=say,
                exports=exports,
            )
        except DukdError as exc:
            if given or crops or exports:
                raise
            notes.append(
                f"no benchmark evaluated: the runs' validation set ({', '.join(benches)}) was not found "
                f"({exc}); pass --bench NAME --data-dir DIR"
            )
    elif study is not None and not benches:
        notes.append(
            "no benchmark evaluated here: the study's table holds its own evaluation of every cell "
            "(pass --bench NAME to measure the cells again, with crops)"
        )
    elif not benches:
        notes.append(
            "no benchmark evaluated: the runs record no validation set; pass --bench NAME --data-dir DIR"
        )
    else:
        notes.append("no benchmark evaluated: no run holds student.safetensors")
    if measured is not None:
        notes.extend(measured.notes)
    else:
        notes.append(
            "no results table per set, no crops and no final teacher agreement (they need an evaluation)"
        )
    return measured


def _runs_json(runs: list[RunData]) -> list[dict[str, Any]]:
    """Each run as the page shows it: its record, parameters, wall time and last validation."""
    from dukd_cli.report.measure import student_params

    run_json = []
    for r in runs:
        d = r.to_json()
        d["params"] = student_params(r)
        d["wall_min"] = d["wall_s"] / 60.0 if d["wall_s"] is not None else None
        lv = r.last_val()
        d["last_val"] = (
            {k: lv.get(k) for k in ("iteration", "val_bench", "val_psnr", "val_ssim")} if lv else None
        )
        run_json.append(d)
    return run_json


def _figures(
    rep: dict[str, Any], runs: list[RunData], measured: Measured | None, stem: str
) -> dict[str, dict[str, Any]]:
    """The page's figures by name: PNG bytes, the file beside the page, the alt text."""
    figs: dict[str, dict[str, Any]] = {}

    def add(name: str, png: bytes | None, alt: str) -> None:
        if png:
            figs[name] = {"png": png, "file": f"{stem}-{name}.png", "alt": alt}

    add(
        "curves",
        figures.curves(rep["runs"]),
        "training curves: loss terms and validation PSNR against iterations",
    )
    add(
        "agreement",
        figures.agreement(
            rep["runs"], (rep["measured"] or {}).get("rows", []), (rep["measured"] or {}).get("benches", [])
        ),
        "student-vs-teacher PSNR per run",
    )
    if measured is not None:
        order = ["HR", "bicubic", *[r.label for r in runs], "teacher"]
        for i, (c, px) in enumerate(zip(rep["measured"]["crops"], measured.crop_pixels, strict=True)):
            add(f"crop{i + 1}", figures.crops(c, px, order, {}), f"crops of {c['bench']}/{c['image']}")
    return figs


def _write(out: Path, rep: dict[str, Any], figs: dict[str, dict[str, Any]]) -> ReportResult:
    """The figures, ``OUT.json`` and the page, each atomically, once everything is computed."""
    import json

    from dukd_cli.runtime.fsutil import atomic_write_bytes, atomic_write_text

    page = html.render(rep, figs)
    paths = []
    for f in figs.values():
        p = out.parent / f["file"]
        atomic_write_bytes(p, f["png"])
        paths.append(p)
    json_path = out.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(rep, indent=1, allow_nan=False) + "\n")
    atomic_write_text(out, page)
    return ReportResult(out, json_path, paths, rep)
