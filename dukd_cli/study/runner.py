"""Running a study: every cell a ``dukd distill`` run directory, resumable.

``STUDY/study.json`` is the plan; ``STUDY/runs/<student>/<method>/seed<k>/`` the cells. A cell is
finished when its ``eval.json`` records the plan's iterations and sets; finished cells are never
run again. A cell with a checkpoint short of the plan's iterations resumes from it (``state.pt``,
exactly as ``dukd distill --resume``); a cell without one starts afresh (whatever a kill before its
first checkpoint left there is removed). Ctrl-C / SIGTERM stop the running cell at its next
iteration with a checkpoint, write the table of the finished cells and return 130 / 143; running
the same command again continues. After every cell ``STUDY/study.md`` and ``STUDY/study-table.json``
are rewritten (atomically).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dukd_cli.errors import DukdError
from dukd_cli.rundir import RunPaths
from dukd_cli.study import table as tablemod
from dukd_cli.study.grid import (
    EVAL_FILE,
    Cell,
    StudyPlan,
    cell_config,
    check_cell,
    is_finished,
    load_plan,
    plan_differences,
    plan_iters,
    read_eval,
    save_plan,
)

if TYPE_CHECKING:
    from dukd_cli.distill.config import DistillConfig

TABLE_MD = "study.md"
TABLE_JSON = "study-table.json"


@dataclass
class StudyResult:
    root: Path
    ran: list[str] = field(default_factory=list)  # cells trained or evaluated in this call
    skipped: list[str] = field(default_factory=list)  # cells already finished
    interrupted: bool = False
    exit_code: int = 0
    table: dict[str, Any] = field(default_factory=dict)


def resolve_plan(root: Path, given: StudyPlan | None) -> StudyPlan:
    """The plan to run: the saved one (a resumed study; options given again must agree) or ``given``."""
    saved = load_plan(root)
    if saved is None:
        if given is None:
            raise DukdError(
                f"{root} holds no study (no study.json); start one with --preset NAME or --method ..."
            )
        return given
    if given is not None:
        diff = plan_differences(saved, given)
        if diff:
            raise DukdError(
                f"{root} holds a study planned with other {', '.join(diff)}; run 'dukd study {root}' alone to "
                "continue it, or pick another folder"
            )
    return saved


def write_tables(root: Path, plan: StudyPlan) -> dict[str, Any]:
    from dukd_cli.runtime.fsutil import atomic_write_text

    results = {}
    for cell in plan.cells():
        if is_finished(plan, cell, root):
            results[cell.key] = read_eval(cell.run_dir(root))
    table = tablemod.summarise(plan.to_json(), results)
    atomic_write_text(root / TABLE_JSON, json.dumps(table, indent=1, allow_nan=False) + "\n")
    atomic_write_text(root / TABLE_MD, tablemod.markdown(table))
    return table


def _evaluate_cell(plan: StudyPlan, cell: Cell, run_dir: Path, device: str) -> None:
    from dukd_cli.distill.checkpoint import student_iteration
    from dukd_cli.evaluate.protocol import evaluate
    from dukd_cli.models.factory import build, resolve_spec
    from dukd_cli.runtime.fsutil import atomic_write_text

    model = build(resolve_spec(str(run_dir), None), device=None)
    res = evaluate(
        model, int(plan.scale), list(plan.benches), data_dir=plan.data_dir, device=device, progress=False
    )
    rec = {
        "student": cell.student,
        "method": cell.method,
        "seed": cell.seed,
        "iteration": student_iteration(RunPaths(run_dir).student),
        "sets": list(plan.benches),
        "results": {r.bench: {"psnr": float(r.psnr), "ssim": float(r.ssim)} for r in res},
    }
    atomic_write_text(run_dir / EVAL_FILE, json.dumps(rec, indent=1) + "\n")


def _train_cell(cfg: DistillConfig, run_dir: Path, callbacks: Sequence[Callable]) -> Any:
    from dukd_cli.distill import ddp
    from dukd_cli.distill.config import DistillConfig
    from dukd_cli.distill.trainer import Trainer

    if RunPaths(run_dir).state.is_file():
        trainer = Trainer(DistillConfig(), run_dir, resume=True, callbacks=callbacks)
    else:
        if run_dir.exists():  # a kill before the first checkpoint: nothing there is worth keeping
            shutil.rmtree(run_dir)
        trainer = Trainer(cfg, run_dir, callbacks=callbacks)
    try:
        return trainer.fit()
    finally:
        ddp.shutdown()


def run_study(
    root: str | Path,
    plan: StudyPlan | None = None,
    *,
    device: str = "auto",
    cache_dir: str | None = None,
    workers: int | None = None,
    on_event: Callable[[str], None] = lambda _m: None,
    callbacks: Sequence[Callable] = (),
) -> StudyResult:
    """Run (or continue) the study in ``root``; ``plan`` is needed only the first time."""
    from dukd_cli.distill.checkpoint import student_iteration

    root = Path(root)
    plan = resolve_plan(root, plan)
    cells = plan.cells()
    configs = {}
    for cell in cells:  # every cell is checked before anything is trained: one line per problem
        cfg = cell_config(plan, cell, device=device, cache_dir=cache_dir, workers=workers)
        check_cell(plan, cell, cfg)
        configs[cell] = cfg
    save_plan(root, plan)
    result = StudyResult(root)
    todo = [c for c in cells if not is_finished(plan, c, root)]
    result.skipped = [c.key for c in cells if c not in todo]
    on_event(f"{len(cells)} cells: {len(result.skipped)} finished, {len(todo)} to run")
    iters = plan_iters(plan)
    for i, cell in enumerate(todo, 1):
        run_dir = cell.run_dir(root)
        done = student_iteration(RunPaths(run_dir).student) if RunPaths(run_dir).state.is_file() else None
        if done != iters:
            on_event(f"[{i}/{len(todo)}] {cell.key}: training" + (f" (resuming at {done})" if done else ""))
            fit = _train_cell(configs[cell], run_dir, callbacks)
            if fit.interrupted:
                result.interrupted, result.exit_code = True, fit.exit_code
                result.ran.append(cell.key)
                break
        on_event(f"[{i}/{len(todo)}] {cell.key}: evaluating on {', '.join(plan.benches)}")
        _evaluate_cell(plan, cell, run_dir, device)
        result.ran.append(cell.key)
        write_tables(root, plan)
    result.table = write_tables(root, plan)
    return result
