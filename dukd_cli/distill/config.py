"""The distillation run's configuration: explicit data, a TOML file, and CLI overrides.

Precedence: built-in defaults < ``--config FILE.toml`` < command-line options. The resolved
configuration (every value the run used, method options included) is written to
``RUN_DIR/config.toml``; ``--resume`` reads it back and checks that options given again agree.

The TOML is written by hand (``tomllib`` reads it; no extra dependency): tables ``[student]``,
``[teacher]``, ``[method]``, ``[data]``, ``[train]``, ``[val]``. ``None`` values are left out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dukd_cli.distill.validate import check_config, option_for
from dukd_cli.errors import DukdError
from dukd_cli.rundir import load_toml

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass  # type: ignore[no-redef]


@dataclass
class StudentConfig:
    name: str | None = None
    scale: int | None = None
    weights: str | None = None  # initialisation
    args: dict[str, Any] = field(default_factory=dict)
    strict: bool = True


@dataclass
class TeacherConfig:
    name: str | None = None
    weights: str | None = None  # None: the preset's declared source
    args: dict[str, Any] = field(default_factory=dict)
    # More teachers (--teacher repeated): each {name, weights, args}; combined with the first by
    # ``mix`` (mean | best; dukd_cli.distill.teachers). None: one teacher, or "mean".
    extra: list[dict[str, Any]] = field(default_factory=list)
    mix: str | None = None


@dataclass
class MethodConfig:
    name: str = "dukd"
    update: str = "two-step"
    recipe: str = "dukd"  # dukd | authors (dukd_cli.distill.recipes)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=lambda: ["builtin"])
    workers: int | None = None  # None: 0 on the CPU, min(8, cores / 2) on CUDA
    cache_dir: str | None = None
    # Where named data (e.g. "div2k") comes from, recorded by dukd_cli.distill.provenance
    dataset: str | None = None
    source: str | None = None
    revision: str | None = None


@dataclass
class TrainConfig:
    iters: int = 250_000
    batch_size: int = 16
    patch_size: int = 48
    lr: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [100_000, 200_000])
    gamma: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8
    ema_decay: float = 0.999
    # None: decided by the recipe (dukd: true; authors: false). Decay min(ema_decay, (1 + t) / (10 + t)).
    ema_warmup: bool | None = None
    eval_teacher: bool | None = None  # None: decided by the recipe (dukd: eval mode; authors: train mode)
    seed: int = 0
    grad_clip: float = 0.0  # 0: off
    precision: str | None = (
        None  # auto: bf16 on CUDA, fp32 elsewhere; None: the recipe's (dukd auto, authors fp32)
    )
    channels_last: bool = (
        False  # NHWC tensors and weights: faster convolutions on CPU (oneDNN) and tensor cores
    )
    compile: bool = False  # torch.compile the student and the teacher (same numbers up to rounding)
    device: str = "auto"
    log_every: int = 100
    save_every: int = 1000
    save_every_min: float = 0.0  # also checkpoint when this many minutes passed since the last one (0: off)
    tensorboard: bool = False  # also log scalars to RUN_DIR/tensorboard (needs the tensorboard extra)
    quantize: str | None = None  # "int8": quantization-aware training (dukd_cli.distill.qat)
    qat_observe: int | None = None  # iterations the activation ranges are tracked, then frozen (None: auto)


@dataclass
class ValConfig:
    every: int = 5000  # 0: no validation
    bench: str = "set5"
    data_dir: str | None = None
    max_images: int | None = None


@dataclass
class DistillConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)

    # -- dotted access -----------------------------------------------------------------------

    def get(self, dotted: str) -> Any:
        section, key = _split(dotted)
        if section == "method" and key not in _METHOD_KEYS:
            return self.method.options.get(key)
        return getattr(getattr(self, section), key)

    def set(self, dotted: str, value: Any) -> None:
        section, key = _split(dotted)
        if section == "method" and key not in _METHOD_KEYS:
            self.method.options[key] = value
            return
        sec = getattr(self, section)
        if not hasattr(sec, key):
            raise DukdError(f"unknown configuration key [{section}] {key}")
        setattr(sec, key, value)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        m = d.pop("method")
        d["method"] = {"name": m["name"], "update": m["update"], "recipe": m["recipe"], **m["options"]}
        return d

    def copy(self) -> DistillConfig:
        return from_dict(json.loads(json.dumps(self.to_dict())))


_METHOD_KEYS = ("name", "update", "recipe")
SECTIONS = ("student", "teacher", "method", "data", "train", "val")
# Keys that may differ on --resume: they change how a run is watched, not what it computes.
# (iters may only grow: checked separately.)
OPERATIONAL = {
    "train.iters",
    "data.workers",
    "train.compile",
    "train.log_every",
    "train.save_every",
    "train.save_every_min",
    "train.tensorboard",
    "val.every",
    "val.max_images",
}


def _split(dotted: str) -> tuple[str, str]:
    if "." not in dotted:
        raise DukdError(f"configuration key '{dotted}' must look like section.key")
    section, key = dotted.split(".", 1)
    if section not in SECTIONS:
        raise DukdError(f"unknown configuration section [{section}] (known: {', '.join(SECTIONS)})")
    return section, key


def from_dict(data: Mapping[str, Any], base: DistillConfig | None = None) -> DistillConfig:
    """Build a config from nested tables (a parsed TOML file) over ``base`` (or the defaults)."""
    cfg = base.copy() if base is not None else DistillConfig()
    for section, table in data.items():
        if section not in SECTIONS:
            raise DukdError(f"unknown configuration section [{section}] (known: {', '.join(SECTIONS)})")
        if not isinstance(table, Mapping):
            raise DukdError(f"[{section}] must be a table")
        for key, value in table.items():
            if section == "method" and key == "options" and isinstance(value, Mapping):
                cfg.method.options.update(value)
                continue
            if section != "method" and not hasattr(getattr(cfg, section), key):
                raise DukdError(f"unknown configuration key [{section}] {key}")
            check_config(f"{section}.{key}", value)  # type and range, naming the key
            cfg.set(f"{section}.{key}", _from_toml(value))
    return cfg


def _from_toml(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_toml(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _from_toml(v) for k, v in value.items()}
    return value


def load(path: str | os.PathLike, base: DistillConfig | None = None) -> DistillConfig:
    return from_dict(load_toml(path), base)


# --------------------------------------------------------------------------------------------
# Writing TOML
# --------------------------------------------------------------------------------------------


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """One TOML value (strings, numbers, booleans, arrays, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        r = repr(value)
        return r if any(c in r for c in ".eE") else r + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        items = [f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}" if items else "{}"
    if isinstance(value, os.PathLike):
        return toml_value(os.fspath(value))
    raise DukdError(f"cannot write {type(value).__name__} value {value!r} to TOML")


def to_toml(cfg: DistillConfig, header: str = "") -> str:
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    for section, table in cfg.to_dict().items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key, value in table.items():
            if value is None:
                continue
            lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Resume checks
# --------------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# Configuration keys whose command-line option is not named after the key.
FLAGS = {
    "teacher.name": "--teacher",
    "teacher.extra": "--teacher",
    "teacher.mix": "--teacher-mix",
    "method.w_feat": "--feature-weight",
}


def _teachers_agree(saved: Any, given: Any) -> bool:
    """The teachers given again (name, and weights/args where given) match the saved ones, in order."""
    if not isinstance(saved, list) or not isinstance(given, list) or len(saved) != len(given):
        return False
    for old, new in zip(saved, given, strict=True):
        for k, v in new.items():
            if v not in (None, {}) and not _same(old.get(k), v):
                return False
    return True


def check_resume(saved: DistillConfig, overrides: Mapping[str, Any], done: int) -> DistillConfig:
    """Apply ``overrides`` to the saved config of a run being resumed.

    Options that decide what the run computes must agree with the saved values; ``--iters`` may
    raise the target (not below the iterations already done); logging, saving, validation
    frequency and the worker count may change.
    """
    cfg = saved.copy()
    for key, value in overrides.items():
        old = saved.get(key)
        if key == "train.iters":
            if int(value) < done:
                raise DukdError(f"--iters {value} is below the {done} iterations this run has already done")
            cfg.set(key, int(value))
        elif key in OPERATIONAL:
            cfg.set(key, value)
        elif key == "teacher.extra" and _teachers_agree(old, value):
            continue  # the saved entries hold the resolved weights; those given again must agree
        elif not _same(old, value):
            flag = option_for(key)
            raise DukdError(
                f"{flag} {value!r} disagrees with the run being resumed ([{key.split('.')[0]}] "
                f"{key.split('.', 1)[1]} = {old!r}); drop the option, or start a new run with another --out"
            )
    return cfg
