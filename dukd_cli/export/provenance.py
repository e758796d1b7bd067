"""What an export records in ``config.json``'s ``provenance``: the weights' source (and SHA-256),
and what a ``dukd distill`` run directory says about its student (``config.toml``'s tables and the
last validation record of ``metrics.jsonl``)."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError
from dukd_cli.models.spec import ModelSpec
from dukd_cli.rundir import RUN_CONFIG, RUN_METRICS, RUN_WEIGHTS, load_toml


def _table(cfg: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = cfg.get(key)
    return dict(v) if isinstance(v, Mapping) else {}


def _is_metric_key(k: str) -> bool:
    k = k.lower()
    return any(t in k for t in ("psnr", "ssim", "lpips")) or k.startswith("val")


def read_metrics(path: Path) -> dict[str, Any]:
    """The last validation record of a ``metrics.jsonl`` (lines with a PSNR/SSIM-like key), or ``{}``.

    Read defensively: bad lines are skipped, non-numeric values dropped.
    """
    if not path.is_file():
        return {}
    last: dict[str, Any] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, Mapping):
            continue
        metrics = {
            k: v
            for k, v in rec.items()
            if _is_metric_key(str(k)) and isinstance(v, (int, float, str, Mapping))
        }
        if not any(isinstance(v, (int, float)) for v in metrics.values()):
            continue
        if metrics:
            step = next(
                (rec[k] for k in ("iter", "iteration", "step", "it") if isinstance(rec.get(k), int)), None
            )
            last = (
                {"iteration": step, **{str(k): v for k, v in metrics.items()}}
                if step is not None
                else metrics
            )
    return jsonable(last)


@dataclass
class RunInfo:
    """What a distill run directory says about its student."""

    directory: Path
    student_name: str | None
    scale: int | None
    args: dict[str, Any]
    weights: Path
    provenance: dict[str, Any] = field(default_factory=dict)
    quantize: str | None = None  # "int8": the student trained through simulated int8 (QAT)


def read_run_dir(path: str | os.PathLike) -> RunInfo:
    """Read ``config.toml`` (tables [student], [teacher], [method], [data], [train]) and ``metrics.jsonl``."""
    d = Path(path)
    if not (d / RUN_CONFIG).is_file():
        raise DukdError(f"{d} is not a distill run directory (no {RUN_CONFIG})")
    cfg = load_toml(d / RUN_CONFIG)
    student, teacher = _table(cfg, "student"), _table(cfg, "teacher")
    method, data, train = _table(cfg, "method"), _table(cfg, "data"), _table(cfg, "train")
    scale = student.get("scale", cfg.get("scale"))
    iters = next((train[k] for k in ("iters", "iterations", "total_iters", "steps") if k in train), None)
    prov: dict[str, Any] = {
        "run_dir": str(d.resolve()),
        "teacher": {k: teacher[k] for k in ("name", "weights", "args", "scale") if k in teacher} or None,
        "method": method.get("name") if method else None,
        "method_config": method or None,
        "data": data or None,
        "iterations": iters,
        "validation": read_metrics(d / RUN_METRICS) or None,
    }
    return RunInfo(
        directory=d,
        student_name=student.get("name"),
        scale=int(scale) if isinstance(scale, (int, str)) and str(scale).isdigit() else None,
        args=dict(student.get("args", {}) or {}),
        weights=d / RUN_WEIGHTS,
        provenance=jsonable({k: v for k, v in prov.items() if v is not None}),
        quantize=str(train["quantize"]) if train.get("quantize") else None,
    )


def jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (_dt.date, _dt.datetime)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def weights_provenance(spec: ModelSpec) -> dict[str, Any]:
    from dukd_cli.sources.hashing import sha256_file

    out: dict[str, Any] = {"weights": spec.weights}
    if spec.weights and not str(spec.weights).startswith("hf://"):
        p = Path(spec.weights)
        if p.is_file():
            out["weights"] = str(p.resolve())
            out["weights_sha256"] = sha256_file(p)
    if spec.weights is None:
        out["weights"] = None
        out["note"] = "no weights were given: the parameters are the architecture's random initialisation"
    return out
