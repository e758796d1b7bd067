"""Studies: a grid of distillation methods x seeds (x students) on one teacher and data, resumable,
summarised in a Table-2-shaped table with mean ± std over seeds and the paired DUKD - KD
difference per seed (``dukd study``)."""

from __future__ import annotations

from dukd_cli.study.grid import (
    PLAN_FILE,
    PRESETS,
    Cell,
    StudyPlan,
    build_plan,
    describe_plan,
    is_study_dir,
    load_plan,
    parse_method,
    parse_seeds,
    parse_student,
    preset_plan,
)
from dukd_cli.study.runner import TABLE_JSON, TABLE_MD, StudyResult, run_study, write_tables
from dukd_cli.study.table import markdown, summarise

__all__ = [
    "PLAN_FILE",
    "PRESETS",
    "TABLE_JSON",
    "TABLE_MD",
    "Cell",
    "StudyPlan",
    "StudyResult",
    "build_plan",
    "describe_plan",
    "is_study_dir",
    "load_plan",
    "markdown",
    "parse_method",
    "parse_seeds",
    "parse_student",
    "preset_plan",
    "run_study",
    "summarise",
    "write_tables",
]
