"""The run directory of `dukd distill`: its file names, reading its config.toml, recognising one. The one module that knows the layout."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]


EXPORT_CONFIG = "config.json"
EXPORT_WEIGHTS = "model.safetensors"
RUN_CONFIG = "config.toml"  # a `dukd distill` run directory (see dukd_cli.distill.trainer)
RUN_WEIGHTS = "student.safetensors"


def is_run_dir(name: str | os.PathLike) -> bool:
    """A ``dukd distill`` run directory: it holds ``config.toml`` (and, once it has checkpointed,
    ``student.safetensors``, the EMA student) and is not an export directory."""
    p = Path(name)
    return p.is_dir() and (p / RUN_CONFIG).is_file() and not (p / EXPORT_CONFIG).is_file()


RUN_STATE = "state.pt"
RUN_BEST = "student_best.safetensors"
RUN_METRICS = "metrics.jsonl"
RUN_INFO = "run.json"
RUN_LOCK = ".dukd-run.lock"
RUN_FILES = (RUN_STATE, RUN_WEIGHTS, RUN_BEST, RUN_CONFIG, RUN_METRICS)  # what makes a folder a run


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / RUN_CONFIG

    @property
    def state(self) -> Path:
        return self.root / RUN_STATE

    @property
    def student(self) -> Path:
        return self.root / RUN_WEIGHTS

    @property
    def best(self) -> Path:
        return self.root / RUN_BEST

    @property
    def metrics(self) -> Path:
        return self.root / RUN_METRICS

    @property
    def info(self) -> Path:
        return self.root / RUN_INFO

    @property
    def lock(self) -> Path:
        return self.root / RUN_LOCK


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise DukdError(f"configuration file not found: {p}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DukdError(f"cannot read {p}: {exc}") from None
