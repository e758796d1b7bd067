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


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def state(self) -> Path:
        return self.root / "state.pt"

    @property
    def student(self) -> Path:
        return self.root / "student.safetensors"

    @property
    def best(self) -> Path:
        return self.root / "student_best.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise DukdError(f"configuration file not found: {p}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DukdError(f"cannot read {p}: {exc}") from None
