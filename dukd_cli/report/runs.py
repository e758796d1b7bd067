"""Reading run directories: what ``dukd distill`` wrote (config, metrics, run info), nothing computed.

A :class:`RunData` holds one run's facts as plain data (JSON-ready): the loss and validation curves
from ``metrics.jsonl``, the logged teacher agreement, the configuration and where it trained. What a
run does not hold (an old run made before a metric was logged) is listed in ``missing``, in words.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dukd_cli.errors import DukdError
from dukd_cli.rundir import RunPaths, load_toml

AGREE_KEYS = ("agree_train_psnr", "agree_val_psnr")
RESERVED = {"bicubic", "teacher", "hr"}


@dataclass
class RunData:
    root: Path
    label: str
    config: dict[str, Any]
    records: list[dict[str, Any]]
    info: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)
    skipped_lines: int = 0  # malformed lines of metrics.jsonl left out

    # -- configuration --------------------------------------------------------------------------

    def section(self, name: str) -> dict[str, Any]:
        v = self.config.get(name)
        return v if isinstance(v, dict) else {}

    @property
    def method(self) -> str:
        return str(self.section("method").get("name", "?"))

    @property
    def scale(self) -> int | None:
        s = self.section("student").get("scale")
        return int(s) if s is not None else None

    @property
    def recipe(self) -> str | None:
        """A named recipe, wherever a configuration records one (``recipe = "..."`` in any table)."""
        for table in self.config.values():
            if isinstance(table, dict) and table.get("recipe"):
                return str(table["recipe"])
        return None

    # -- metrics -------------------------------------------------------------------------------

    def loss_series(self) -> dict[str, list[tuple[int, float]]]:
        """``{"loss": [(it, v), ...], "rec": [...], ...}``: the total and every logged loss term."""
        out: dict[str, list[tuple[int, float]]] = {}
        for r in self.records:
            if "loss" not in r:
                continue
            it = int(r["iteration"])
            out.setdefault("loss", []).append((it, float(r["loss"])))
            for k, v in (r.get("losses") or {}).items():
                out.setdefault(str(k), []).append((it, float(v)))
        return out

    def series(self, key: str) -> list[tuple[int, float]]:
        return [
            (int(r["iteration"]), float(r[key])) for r in self.records if isinstance(r.get(key), (int, float))
        ]

    @property
    def iterations_done(self) -> int:
        return max((int(r.get("iteration", 0)) for r in self.records), default=0)

    @property
    def iterations_target(self) -> int | None:
        t = self.section("train").get("iters")
        return int(t) if t is not None else None

    def last_val(self) -> dict[str, Any] | None:
        vals = [r for r in self.records if "val_psnr" in r]
        return vals[-1] if vals else None

    def train_speed(self) -> float | None:
        """Median training speed (it/s) over the log steps (the first is left out: it holds the warm-up)."""
        speeds = [float(r["it_s"]) for r in self.records if isinstance(r.get("it_s"), (int, float))]
        speeds = speeds[1:] if len(speeds) > 2 else speeds
        speeds = [s for s in speeds if math.isfinite(s) and s > 0]
        return statistics.median(speeds) if speeds else None

    def wall_seconds(self) -> tuple[float | None, str]:
        """Wall time and how it was found: from the first session's start (run.json) to the last write
        of the run directory, else from config.toml's to student.safetensors' modification time."""
        last = max(
            (
                p.stat().st_mtime
                for p in (RunPaths(self.root).metrics, RunPaths(self.root).student)
                if p.is_file()
            ),
            default=None,
        )
        sessions = (self.info or {}).get("sessions") or []
        if sessions and last is not None:
            try:
                start = datetime.fromisoformat(str(sessions[0]["started"])).timestamp()
            except (KeyError, ValueError, TypeError):
                start = None
            if start is not None:
                how = "first start to last write" + (
                    f", {len(sessions)} sessions" if len(sessions) > 1 else ""
                )
                return max(0.0, last - start), how
        cfg = RunPaths(self.root).config
        if cfg.is_file() and last is not None:
            return max(0.0, last - cfg.stat().st_mtime), "estimated from file times (no run.json)"
        return None, "unknown"

    def hardware(self) -> str | None:
        sessions = (self.info or {}).get("sessions") or []
        if not sessions:
            return None
        s = sessions[-1]
        parts = [f"{s.get('cores', '?')}-core {s.get('cpu', 'CPU')} ({s.get('machine', '?')})"]
        dev = str(s.get("device", "?"))
        parts.append(f"device {dev}" + (f" ({s['accelerator']})" if s.get("accelerator") else ""))
        parts.append(
            f"torch {s.get('torch', '?')}, {s.get('threads', '?')} threads, dukd {s.get('dukd', '?')}"
        )
        return "; ".join(parts)

    def used(self) -> dict[str, str]:
        """What the last session ran with: its device and precision (``--precision auto`` and
        ``--device auto`` resolved), where run.json recorded them."""
        sessions = (self.info or {}).get("sessions") or []
        s = sessions[-1] if sessions and isinstance(sessions[-1], dict) else {}
        return {k: str(s[k]) for k in ("device", "precision") if s.get(k)}

    def to_json(self) -> dict[str, Any]:
        wall, how = self.wall_seconds()
        return {
            "label": self.label,
            "dir": str(self.root),
            "method": self.method,
            "recipe": self.recipe,
            "config": self.config,
            "iterations_done": self.iterations_done,
            "iterations_target": self.iterations_target,
            "train_it_s": self.train_speed(),
            "wall_s": wall,
            "wall_how": how,
            "hardware": self.hardware(),
            "used": self.used(),
            "losses": {k: [list(p) for p in v] for k, v in self.loss_series().items()},
            "val_psnr": [list(p) for p in self.series("val_psnr")],
            "val_ssim": [list(p) for p in self.series("val_ssim")],
            "val_bench": (self.last_val() or {}).get("val_bench"),
            "agree_train_psnr": [list(p) for p in self.series("agree_train_psnr")],
            "agree_val_psnr": [list(p) for p in self.series("agree_val_psnr")],
            "missing": list(self.missing),
        }


_NUMBER_KEYS = ("loss", "lr", "it_s", "val_psnr", "val_ssim", *AGREE_KEYS)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _well_formed(r: Any) -> bool:
    """A metrics record as the trainer writes it: an integer iteration, numbers where numbers go, loss
    terms with plain names (a name like ``$\\frac{$`` would be read as markup by the figures)."""
    if not isinstance(r, dict):
        return False
    it = r.get("iteration")
    if not (isinstance(it, int) and not isinstance(it, bool) and it >= 0):
        return False
    if any(k in r and not _is_number(r[k]) for k in _NUMBER_KEYS):
        return False
    losses = r.get("losses", {})
    if not isinstance(losses, dict):
        return False
    return all(_plain_name(k) and _is_number(v) for k, v in losses.items())


def _plain_name(k: Any) -> bool:
    """A loss term's name: printable, at most 64 characters, no ``$`` or ``\\`` (matplotlib markup)."""
    return isinstance(k, str) and 0 < len(k) <= 64 and k.isprintable() and "$" not in k and "\\" not in k


def _read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The well-formed records of ``metrics.jsonl`` and how many non-empty lines were skipped (a torn
    last line of a run killed mid-write, an edited or damaged file: bad JSON, bytes that are not
    UTF-8, values of the wrong type)."""
    out: list[dict[str, Any]] = []
    skipped = 0
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            r = json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            skipped += 1
            continue
        if _well_formed(r):
            out.append(r)
        else:
            skipped += 1
    return out, skipped


def check_student(path: Path) -> None:
    """A one-line :class:`DukdError` unless ``path`` is a readable safetensors file (header and size)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DukdError(f"{path} is damaged or not a safetensors file ({why})") from None
    if not keys:
        raise DukdError(f"{path} holds no weights")


def load_run(root: str | os.PathLike, label: str | None = None) -> RunData:
    """Read one run directory; a clear error when it is not one."""
    from dukd_cli.distill.runinfo import read as read_info

    p = Path(root)
    if not p.is_dir():
        raise DukdError(f"run directory not found: {p}")
    cfg_path, met_path = RunPaths(p).config, RunPaths(p).metrics
    if not cfg_path.is_file():
        raise DukdError(f"{p} is not a dukd distill run directory (no config.toml)")
    config = load_toml(cfg_path)
    records, skipped = _read_records(met_path) if met_path.is_file() else ([], 0)
    run = RunData(p, label or p.name, config, records, read_info(p))
    run.skipped_lines = skipped
    if RunPaths(p).student.is_file():
        check_student(RunPaths(p).student)  # one line now, not a traceback at the evaluation
    if not met_path.is_file():
        run.missing.append("training curves (no metrics.jsonl)")
    elif not run.loss_series():
        run.missing.append("training curves (metrics.jsonl holds no loss records)")
    if not run.series("val_psnr"):
        run.missing.append(
            "validation PSNR over training (no validation records: --val-every 0, or none reached)"
        )
    if run.series("val_psnr") and not any(run.series(k) for k in AGREE_KEYS):
        run.missing.append(
            "teacher agreement over training (metrics.jsonl has no agree_* fields: a run made before dukd logged "
            "them, or one without a teacher)"
        )
    if run.info is None:
        run.missing.append("hardware (no run.json: a run made before dukd recorded it)")
    if not RunPaths(p).student.is_file():
        run.missing.append("student weights (no student.safetensors: nothing to evaluate)")
    return run


def load_runs(roots: list[str | os.PathLike]) -> list[RunData]:
    """Read the runs; labels are the methods when those are distinct, else the folder names."""
    if not roots:
        raise DukdError("no run directory given: dukd report RUN_DIR [RUN_DIR ...]")
    runs = [load_run(r) for r in roots]
    resolved = [r.root.resolve() for r in runs]
    if len(set(resolved)) != len(resolved):
        raise DukdError("the same run directory is given twice")
    methods = [r.method for r in runs]
    if len(set(methods)) == len(methods):
        for r in runs:
            r.label = r.method
    else:
        names = [r.root.name for r in runs]
        if len(set(names)) != len(names):
            names = [str(r.root) for r in runs]
        for r, n in zip(runs, names, strict=True):
            r.label = n
    for r in runs:  # the report's own rows are called so
        if r.label.lower() in RESERVED:
            r.label = f"{r.label} (run)"
    scales = {r.scale for r in runs}
    if len(scales) > 1:
        raise DukdError(
            f"the runs are at different scales ({', '.join(f'x{s}' for s in sorted(scales))}); "
            "report runs of one scale together"
        )
    return runs
