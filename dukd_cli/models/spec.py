"""What names a model: the ModelSpec value, factory arguments, and which folders are models (exports, run directories)."""

from __future__ import annotations

import ast
import inspect
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError
from dukd_cli.rundir import EXPORT_CONFIG, is_run_dir


@dataclass
class ModelSpec:
    """A fully resolved model: which architecture, with which arguments, at which scale, from which weights."""

    name: str  # what the user asked for (preset, architecture or directory)
    arch: str
    scale: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # the weight source that will be loaded, if any
    preset: str | None = None
    provider: str = "?"
    directory: str | None = None  # for exported model directories
    detected: dict[str, Any] | None = None  # for a checkpoint given as the model: what it was found to be

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "scale": self.scale,
            "kwargs": dict(self.kwargs),
            "weights": self.weights,
            "preset": self.preset,
        }


def parse_model_args(items: Iterable[str] | None) -> dict[str, Any]:
    """Parse ``key=value`` strings (CLI constructor arguments); values are Python literals or strings."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise DukdError(f"constructor argument '{item}' must look like key=value (e.g. n_feats=64)")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key.isidentifier():
            raise DukdError(f"constructor argument name '{key}' is not a valid identifier")
        raw = raw.strip()
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            lowered = raw.lower()
            value = {"true": True, "false": False, "none": None, "null": None}.get(lowered, raw)
        if isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def factory_arguments(factory: Any) -> tuple[dict[str, Any], bool]:
    """A factory's keyword arguments with their defaults, and whether it accepts ``**kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}, True
    defaults: dict[str, Any] = {}
    var_kw = False
    params = list(sig.parameters.values())
    for i, p in enumerate(params):
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.VAR_POSITIONAL or (i == 0 and p.name == "scale"):
            continue
        elif p.name == "scale":
            continue
        else:
            defaults[p.name] = None if p.default is p.empty else p.default
    return defaults, var_kw


def _check_kwargs(arch: str, factory: Any, kwargs: Mapping[str, Any]) -> None:
    accepted, var_kw = factory_arguments(factory)
    if var_kw:
        return
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise DukdError(
            f"architecture '{arch}' takes no argument {', '.join(repr(k) for k in unknown)}; "
            f"it accepts: {', '.join(accepted) or '(none)'}"
        )


def is_export_dir(name: str | os.PathLike) -> bool:
    p = Path(name)
    return p.is_dir() and (p / EXPORT_CONFIG).is_file()


def is_model_dir(name: str | os.PathLike) -> bool:
    """An exported model directory or a distill run directory: a model that knows its own scale."""
    return is_export_dir(name) or is_run_dir(name)
